"""The setup check: GPUs per node, model and data offline, Ray on every node, one 1-epoch trial.

Run:  sbatch experiments/check/run.slurm            (cluster tier: the job boots Ray, then runs this)
      bash   experiments/check/run.slurm [--smoke]  (laptop tier)
      python experiments/check/driver.py --help     (every option)
Prints one `[check] PASS <name>: ...` or `[check] FAIL <name>: ... -> <what to do>` line per
check, then `[check] VERDICT: ...`; exits 1 on any FAIL. The code (and what each check means)
is in hpo/check.py, so the Ray tasks on the other nodes can import it.
"""
import sys

from hpo.check import main

if __name__ == "__main__":
    sys.exit(main())
