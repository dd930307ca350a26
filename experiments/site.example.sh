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
#
# A class sharing one read-only cache that the instructor filled once (docs/instructor.md,
# "A shared model and data cache"); `sbatch experiments/check/run.slurm` checks it works:
#   export HF_HOME=/shared/hpo-workshop/hf          # hub/ (bloom-560m) and datasets/ (squad)
#   export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # read it, never download
#
# Not here: the account, partition and reservation. This file runs INSIDE the job, after sbatch
# has already chosen them; set SBATCH_ACCOUNT / SBATCH_PARTITION / SBATCH_RESERVATION in the shell
# you submit from instead (docs/instructor.md, "Account, partition, reservation").
