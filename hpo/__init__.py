"""hpo — the shared, correctness-critical code of the HPO workshop.

Every method (manual grid, ASHA, PBT, Bayesian optimisation) runs the same trial
(`hpo.trial.run_trial`) and ends in the same CSV schema (`hpo.results`). The
lessons — search space, scheduler, `Tuner(...).fit()` — live in the short drivers
under `experiments/<method>/`, not here.

Nothing in this package does work at import time.
"""
