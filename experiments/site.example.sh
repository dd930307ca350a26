# experiments/site.example.sh — copy to experiments/site.sh (git-ignored) or point
# HPO_SITE_SETUP at your own file. It is sourced once at the start of every job
# (batch step); srun steps inherit the environment it sets up.
#
# Examples (pick what your centre uses):
#   module purge
#   module load cuda/12.4 gcc/12
#   source "$(conda info --base)/etc/profile.d/conda.sh" && conda activate hpo-workshop
#   export HF_HOME=/scratch/$USER/hf-cache          # models/datasets cache on fast storage
#   export HF_HUB_OFFLINE=1                          # compute nodes without internet: use the cache only
#   export APPTAINER_IMAGE=/shared/images/hpo-workshop.sif   # run every step in a container
