"""ASHA: start many trials, stop the bad ones early at "rungs", give the epochs to the good ones.

Run:  sbatch experiments/asha/run.slurm [--num-samples 12 --epochs 5 ...]   (cluster tier)
      bash experiments/asha/run.slurm                                     (laptop tier)
      python experiments/asha/driver.py --smoke                           (tests: tiny budget)
`--help` lists every option. Sections: 1 options, 2 search space, 3 scheduler,
4 Tuner(...).fit(), 5 results — the same in every method's driver, so
`diff experiments/asha/driver.py experiments/pbt/driver.py` shows only the method.
"""
import sys

from ray import tune

from hpo.cluster import connect_ray
from hpo.search import options, recorder, trainable


# ----------------------------------------------------------------------------- 1. options
def method_args(ap):
    g = ap.add_argument_group("ASHA")
    g.add_argument("--grace-period", type=int, default=1, help="evaluations every trial gets before it can be stopped")
    g.add_argument("--reduction-factor", type=int, default=2, help="keep the best 1/rf of the trials at each rung")


def main(argv=None) -> int:
    args = options.parse_args("asha", argv, method_args)
    if args.grace_period < 1 or args.grace_period > args.epochs or args.reduction_factor < 2:
        print("driver.py: error: need 1 <= --grace-period <= --epochs and --reduction-factor >= 2", file=sys.stderr)
        return 2
    options.seed_search(args.seed)

    # ------------------------------------------------------------------------- 2. search space
    param_space = {
        "learning_rate": tune.loguniform(args.learning_rate_min, args.learning_rate_max),  # acts multiplicatively
        "batch_size": tune.choice(args.batch_sizes),                                       # per device
        "weight_decay": tune.choice(args.weight_decays),
    }

    # ------------------------------------------------------------------------- 3. scheduler
    from ray.tune.schedulers import ASHAScheduler
    scheduler = ASHAScheduler(
        time_attr="training_iteration",        # one iteration = one evaluation = one epoch
        max_t=args.epochs,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
    )
    rungs, r = [], args.grace_period
    while r < args.epochs:
        rungs.append(r)
        r *= args.reduction_factor
    options.banner(args, f"; ASHA rungs at epochs {rungs} (then max_t={args.epochs})")

    # ------------------------------------------------------------------------- 4. Tuner(...).fit()
    connect_ray()
    record = recorder.TrialRecorder(args)
    tuner = tune.Tuner(
        trainable.make(args),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="eval_loss", mode="min", num_samples=args.num_samples,
                                    scheduler=scheduler, max_concurrent_trials=args.max_concurrent,
                                    reuse_actors=True),      # a trial reuses a finished one's process: no re-import
        run_config=recorder.run_config(args, record),
    )
    if args.resume:                        # continue an interrupted search where it stopped (--resume)
        tuner = recorder.restore(args, record, trainable.make(args), param_space)
    results = tuner.fit()

    # ------------------------------------------------------------------------- 5. results
    return recorder.finish(results, record)


if __name__ == "__main__":
    sys.exit(main())
