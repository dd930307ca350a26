"""Bayesian optimisation: fit a model of "hyperparameters -> eval_loss" to the trials so far and
let it suggest the next trial (BayesOptSearch's Gaussian process, or Optuna's TPE).

Run:  sbatch experiments/bayesopt/run.slurm [--searcher tpe --num-samples 12 ...]   (cluster tier)
      bash experiments/bayesopt/run.slurm                                         (laptop tier)
      python experiments/bayesopt/driver.py --smoke                               (tests: tiny budget)
`--help` lists every knob. Sections: 1 options, 2 search space, 3 search algorithm,
4 Tuner(...).fit(), 5 results — the same in every method's driver.
"""
import math
import sys

from ray import tune

from hpo.cluster import connect_ray
from hpo.search import options, recorder, trainable


# ----------------------------------------------------------------------------- 1. options

def method_args(ap):
    g = ap.add_argument_group("Bayesian optimisation")
    g.add_argument("--searcher", default="bayesopt", choices=["bayesopt", "tpe"],
                   help="bayesopt: Gaussian process (continuous parameters only); tpe: Optuna's TPE")
    g.add_argument("--random-steps", type=int, default=None,
                   help="random trials before the model suggests (default: max(2, num_samples // 4))")


def main(argv=None) -> int:
    args = options.parse_args("bayesopt", argv, method_args)
    args.random_steps = args.random_steps if args.random_steps is not None else max(2, args.num_samples // 4)
    if args.random_steps < 1:
        print("driver.py: error: --random-steps must be >= 1", file=sys.stderr)
        return 2
    options.seed_search(args.seed)
    bs, wds = args.batch_sizes, args.weight_decays

    # ------------------------------------------------------------------------- 2. search space
    if args.searcher == "bayesopt":
        # A Gaussian process models continuous numbers only: search log10(learning_rate) as a float, and
        # map a float in [0, len) to a batch size explicitly (floor), so every choice gets an equal share.
        param_space = {
            "log10_learning_rate": tune.uniform(math.log10(args.learning_rate_min),
                                                math.log10(args.learning_rate_max)),
            "batch_size_index": tune.uniform(0, len(bs)),
            "weight_decay": tune.uniform(min(wds), max(wds)) if len(wds) > 1 else wds[0],
        }

        def to_hparams(c):
            return {"learning_rate": 10 ** c["log10_learning_rate"],
                    "batch_size": bs[min(int(c["batch_size_index"]), len(bs) - 1)],
                    "weight_decay": c["weight_decay"]}
    else:
        # TPE handles log scales and categories itself.
        param_space = {
            "learning_rate": tune.loguniform(args.learning_rate_min, args.learning_rate_max),
            "batch_size": tune.choice(bs),
            "weight_decay": tune.choice(wds),
        }
        to_hparams = None

    # ------------------------------------------------------------------------- 3. search algorithm
    from ray.tune.search import ConcurrencyLimiter
    if args.searcher == "bayesopt":
        from ray.tune.search.bayesopt import BayesOptSearch      # needs bayesian-optimization<2
        searcher = BayesOptSearch(random_search_steps=args.random_steps, random_state=args.seed)
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=args.seed,
                                                                   n_startup_trials=args.random_steps))
    # Every running trial is a suggestion made without its result: more concurrency, less model.
    searcher = ConcurrencyLimiter(searcher, max_concurrent=args.max_concurrent)
    options.banner(args, f"; searcher {args.searcher}, {args.random_steps} random start-up trials")

    # ------------------------------------------------------------------------- 4. Tuner(...).fit()
    connect_ray()
    record = recorder.TrialRecorder(args, to_hparams)
    tuner = tune.Tuner(
        trainable.make(args, to_hparams),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="eval_loss", mode="min", num_samples=args.num_samples,
                                    search_alg=searcher,
                                    reuse_actors=True),      # a trial reuses a finished one's process: no re-import
        run_config=recorder.run_config(args, record),
    )
    if args.resume:                        # continue an interrupted search where it stopped (--resume)
        tuner = recorder.restore(args, record, trainable.make(args, to_hparams), param_space)
    results = tuner.fit()

    # ------------------------------------------------------------------------- 5. results
    return recorder.finish(results, record)


if __name__ == "__main__":
    sys.exit(main())
