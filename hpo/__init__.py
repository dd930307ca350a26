"""hpo — the shared, correctness-critical code of the HPO workshop.

Every method (manual grid, ASHA, PBT, Bayesian optimisation) runs the same trial
(`hpo.trial.run_trial`, configured by `hpo.config`) and ends in the same CSV schema
(`hpo.schema`). The
lessons — search space, scheduler, `Tuner(...).fit()` — live in the short drivers
under `experiments/<method>/`, not here.

Nothing in this package does work at import time. It is imported one way: installed
into the venv by `make venv` (`pip install -e .`); inside a container,
cluster/container_exec.sh puts the checkout on PYTHONPATH instead.
"""
