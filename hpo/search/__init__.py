"""Ray Tune glue shared by the ASHA, PBT and Bayesian-optimisation drivers (being split; see modules)."""
