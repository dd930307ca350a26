"""PBT: train a population together; every few epochs the worst copy the best — weights AND
hyperparameters — and then perturb their learning rate and weight decay.

Run:  sbatch experiments/pbt/run.slurm [--num-samples 8 --epochs 5 ...]   (cluster tier)
      bash experiments/pbt/run.slurm                                    (laptop tier)
      python experiments/pbt/driver.py --smoke                          (tests: tiny budget)
`--help` lists every option. Sections: 1 options, 2 search space, 3 scheduler,
4 Tuner(...).fit(), 5 results — the same in every method's driver.
"""
import sys

from ray import tune

from hpo.cluster import connect_ray
from hpo.search import options, recorder, trainable


# ----------------------------------------------------------------------------- 1. options
def method_args(ap):
    g = ap.add_argument_group("PBT")
    g.add_argument("--perturbation-interval", type=int, default=1, help="epochs between exploit/explore steps")
    g.add_argument("--quantile-fraction", type=float, default=0.25,
                   help="bottom fraction copies the top fraction")
    g.add_argument("--asynchronous", action="store_true",
                   help="perturb each member on its own clock (Ray's default) instead of all together; "
                        "with few members an exploit is then often skipped (donor not checkpointed yet)")
    g.add_argument("--keep-checkpoints", type=int,
                   help="checkpoints kept per trial (default: all on the tiny profile, 2 on workshop: each "
                        "holds weights + optimizer state, ~6.7 GB for BLOOM-560M); too few and a donor's "
                        "checkpoint is gone when the exploit happens")


def main(argv=None) -> int:
    args = options.parse_args("pbt", argv, method_args)
    if not (1 <= args.perturbation_interval < args.epochs) or not 0 < args.quantile_fraction <= 0.5:
        print("driver.py: error: need 1 <= --perturbation-interval < --epochs and 0 < --quantile-fraction <= 0.5",
              file=sys.stderr)
        return 2
    options.seed_search(args.seed)

    # ------------------------------------------------------------------------- 2. search space
    param_space = {
        "learning_rate": tune.loguniform(args.learning_rate_min, args.learning_rate_max),  # starting points
        "batch_size": tune.choice(args.batch_sizes),             # not mutated (an exploit copies the donor's)
        "weight_decay": tune.choice(args.weight_decays),
    }

    # ------------------------------------------------------------------------- 3. scheduler
    from ray.tune.schedulers import PopulationBasedTraining
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",                    # one iteration = one evaluation = one epoch
        perturbation_interval=args.perturbation_interval,  # every trial checkpoints at every report
        quantile_fraction=args.quantile_fraction,
        synch=not args.asynchronous,                       # all members step together: the top ones are
                                                           # checkpointed first, then the bottom ones copy them
        hyperparam_mutations={                             # explore: resample, or multiply by 0.8 / 1.2
            "learning_rate": tune.loguniform(args.learning_rate_min, args.learning_rate_max),
            "weight_decay": args.weight_decays,
        },
        custom_explore_fn=lambda config: {                 # x1.2 may leave the range: clip it back
            **config, "learning_rate": min(max(config["learning_rate"], args.learning_rate_min),
                                           args.learning_rate_max)},
    )
    if args.num_samples > args.max_concurrent:
        print(f"[tune] WARNING: population {args.num_samples} > {args.max_concurrent} concurrent slots: PBT ranks "
              "only running members, and paused members restart at every perturbation", flush=True)
    options.banner(args, f"; PBT every {args.perturbation_interval} epoch(s), bottom/top {args.quantile_fraction:g}")
    keep = args.keep_checkpoints or (None if args.profile == "tiny" else 2)

    # ------------------------------------------------------------------------- 4. Tuner(...).fit()
    connect_ray()
    record = recorder.TrialRecorder(args)
    tuner = tune.Tuner(
        trainable.make(args),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="eval_loss", mode="min", num_samples=args.num_samples,
                                    scheduler=scheduler, max_concurrent_trials=args.max_concurrent,
                                    reuse_actors=True),      # a trial reuses a finished one's process: no re-import
        run_config=recorder.run_config(args, record, num_to_keep=keep, stop={"training_iteration": args.epochs}),
    )
    if args.resume:                        # continue an interrupted search where it stopped (--resume)
        tuner = recorder.restore(args, record, trainable.make(args), param_space)
    results = tuner.fit()

    # ------------------------------------------------------------------------- 5. results
    recorder.write_pbt_lineage(args, record)
    return recorder.finish(results, record)


if __name__ == "__main__":
    sys.exit(main())
