"""Test data shared by the results tests: a Ray trial's row as a driver records it.

Run: imported by tests/test_schema.py and tests/test_logparse.py.
"""


def ray_row(**kw):
    base = dict(method="asha", job_id="900", trial_id="trial_00001", status="stopped_early",
                learning_rate=3e-5, batch_size=8, weight_decay=0.0, seed=0, epochs=1,
                eval_loss=1.5, exact_match=30.0, f1=40.0, train_runtime_s=100.0, wall_s=120.0,
                gpus=1, cpus=4, tokens_per_s=1000.0)
    base.update(kw)
    return base
