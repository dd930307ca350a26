"""What a Ray search leaves behind: one row per trial, the best trial, PBT's lineage.

Run:  nothing to run; every Ray driver does

    record = recorder.TrialRecorder(args)                  # keeps <job dir>/trials.jsonl current
    tuner = tune.Tuner(..., run_config=recorder.run_config(args, record))
    results = tuner.fit()
    return recorder.finish(results, record)                # final statuses, the best trial

* `TrialRecorder` (a Tune callback) rewrites trials.jsonl after every result, so a job killed
  by scancel or its walltime still leaves every trial's row (running ones: incomplete); the
  launcher turns it into logs/<method>/<job>-<id>.csv (scripts/parse_logs.py --records).
* `run_config` puts Tune's results in <job dir>/<method> (a fixed name on the shared filesystem)
  and turns SIGTERM (scancel, walltime) into Tune's graceful stop.
* `write_pbt_lineage` turns the exploits the trials recorded into a table.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path

from ray.tune import Callback

from hpo.report import best_row, describe_best
from hpo.schema import make_row, read_records, write_records
from hpo.search.options import print_resume_command

# What the recorder keeps of each result (the CSV's metrics + what the PBT lineage needs).
_KEEP = ("epoch", "eval_loss", "exact_match", "f1", "trial_wall_s", "tokens_per_s", "training_iteration",
         "global_batch_size", "epochs_planned", "setup_s", "train_s", "eval_s", "checkpoint_s", "data_fingerprint")
# A row of an earlier job, back into what the recorder keeps (a resumed trial starts from it).
_FROM_ROW = {k: k for k in _KEEP if k not in ("epoch", "trial_wall_s", "training_iteration")}
_FROM_ROW.update(epoch="epochs", trial_wall_s="wall_s")


class TrialRecorder(Callback):
    """One row per trial in the results schema, rewritten (atomically) after every result.

    Rows are in creation order (the order trials start); status: completed (reached --epochs),
    stopped_early (a scheduler stopped it before), error, incomplete (still running when the
    job ended: `interrupted` is set by the SIGTERM handler of `run_config`).
    """

    def __init__(self, args, to_hparams=None):
        self.args, self.decode = args, to_hparams or (lambda c: c)
        self.path = Path(args.job_dir) / "trials.jsonl"
        self.trials: dict[str, dict] = {}
        self.interrupted = False
        # A resumed search: the earlier job's rows stand until their trial reports again here.
        self.previous: dict[str, dict] = {}
        if getattr(args, "resume_dir", None):
            self.previous = {r["trial_id"]: r for r in read_records(Path(args.resume_dir) / "trials.jsonl")} \
                if (Path(args.resume_dir) / "trials.jsonl").is_file() else {}
            self.write()

    def _entry(self, trial) -> dict:
        if trial.trial_id not in self.trials:
            prev = self.previous.get(trial.trial_id, {})       # resumed: what the earlier job reported
            self.trials[trial.trial_id] = {
                "config": dict(trial.config), "status": "incomplete", "history": [],
                "metrics": {k: prev.get(c) for k, c in _FROM_ROW.items() if prev.get(c) is not None},
                "started": time.time(), "ended": None, "retries": prev.get("retries") or 0, "reason": None}
        return self.trials[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._entry(trial)
        self.write()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        e = self._entry(trial)
        e["config"] = dict(trial.config)          # PBT changes a member's config at an exploit
        e["metrics"] = {k: result.get(k) for k in _KEEP}
        e["history"].append({k: result.get(k) for k in ("epoch", "eval_loss", "loaded_weights_fingerprint")})
        self.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        e = self._entry(trial)
        if self.interrupted:
            return                                # stays incomplete
        done = (e["metrics"].get("epoch") or 0) >= self.args.epochs - 1e-6
        e["status"] = "completed" if done else "stopped_early"
        self.write()

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed and Tune restarts it from its last checkpoint (--max-failures)."""
        e = self._entry(trial)
        e["retries"] += 1
        e["reason"] = failure_reason(trial)
        print(f"[tune] trial {trial.trial_id} failed ({e['reason']}); retry {e['retries']} of "
              f"{self.args.max_failures}, from its last checkpoint", flush=True)
        self.write()

    def on_trial_error(self, iteration, trials, trial, **info):
        e = self._entry(trial)
        e["ended"] = time.time()         # a trial that fails before its first report still cost time
        e["reason"] = failure_reason(trial)
        if not (self.interrupted and e["status"] == "incomplete"):
            e["status"] = "error"
        self.write()

    def rows(self) -> list[dict]:
        out = [r for tid, r in self.previous.items() if tid not in self.trials]
        for tid, e in self.trials.items():
            m, hp = e["metrics"], self.decode(e["config"])
            out.append(make_row(
                method=self.args.method, job_id=os.environ.get("HPO_JOB_ID", "local"), trial_id=tid,
                status=e["status"], learning_rate=hp.get("learning_rate"), batch_size=hp.get("batch_size"),
                weight_decay=hp.get("weight_decay"), seed=self.args.seed, epochs=m.get("epoch"),
                eval_loss=m.get("eval_loss"), exact_match=m.get("exact_match"), f1=m.get("f1"),
                wall_s=self._wall(e), gpus=self.args.gpus_per_trial, cpus=self.args.cpus_per_trial,
                tokens_per_s=m.get("tokens_per_s"), global_batch_size=m.get("global_batch_size"),
                epochs_planned=m.get("epochs_planned") or self.args.epochs, setup_s=m.get("setup_s"),
                train_s=m.get("train_s"), eval_s=m.get("eval_s"), checkpoint_s=m.get("checkpoint_s"),
                data_fingerprint=m.get("data_fingerprint"), retries=e["retries"]))
        return out

    @staticmethod
    def _wall(e) -> float | None:
        """The trial's own wall time (it reports it); an error before the first report: start to error."""
        if e["metrics"].get("trial_wall_s") is not None:
            return e["metrics"]["trial_wall_s"]
        return e["ended"] - e["started"] if e["ended"] else None

    def write(self) -> None:
        write_records(self.rows(), self.path)


class NodeWatcher(Callback):
    """Notices a Ray node that died mid-job (a lost SLURM node, a killed raylet): names it within
    `every_s` seconds. Tune retries the trials that ran there on the remaining nodes (--max-failures);
    if no remaining node can hold a trial, the search stops gracefully, resumable with --resume."""

    def __init__(self, args, every_s: float = 5.0):
        self.args, self.every_s = args, every_s
        self.known: dict[str, str] = {}          # node id -> "hostname (ip)"
        self.lost: set[str] = set()
        self.last = 0.0

    def on_step_begin(self, iteration, trials, **info):
        if time.time() - self.last < self.every_s:
            return
        self.last = time.time()
        import ray
        try:
            nodes = ray.nodes()
        except Exception:                       # noqa: BLE001 - the GCS itself is gone: Tune will fail loudly
            return
        alive_cpu = alive_gpu = 0.0
        for n in nodes:
            nid, name = n["NodeID"], f"{n.get('NodeManagerHostname', '?')} ({n.get('NodeManagerAddress', '?')})"
            if n.get("Alive"):
                self.known[nid] = name
                alive_cpu += n.get("Resources", {}).get("CPU", 0.0)
                alive_gpu += n.get("Resources", {}).get("GPU", 0.0)
            elif nid in self.known and nid not in self.lost:
                self.lost.add(nid)
                print(f"[ray] NODE LOST: {self.known[nid]} left the Ray cluster at {time.strftime('%H:%M:%S')}; "
                      f"trials that ran there are retried on the remaining nodes (--max-failures "
                      f"{self.args.max_failures})", flush=True)
                if alive_gpu < self.args.gpus_per_trial or alive_cpu < min(self.args.cpus_per_trial, 1.0):
                    print("[ray] no remaining node can hold a trial: stopping the search (resumable with "
                          "--resume)", flush=True)
                    os.kill(os.getpid(), signal.SIGINT)


def failure_reason(trial) -> str | None:
    """The last line of a failed trial's traceback (Tune's error.txt), e.g. 'RuntimeError: CUDA out of memory'."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1].strip()[:300] if lines else None


def run_config(args, record: TrialRecorder, **kw):
    """Tune's results in <job dir>/<method> (a resumed job finds them there); `record` keeps
    trials.jsonl current; SIGTERM stops the search gracefully."""
    from ray import tune

    def on_stop(signum, frame):
        # scancel sends SIGTERM, the walltime/preemption warning USR1 (#SBATCH --signal=B:USR1@300).
        # Tune stops *gracefully* on SIGINT (saves the experiment state and fit() returns), so the
        # driver still writes every trial's row, and --resume continues the search later.
        record.interrupted = True
        print(f"[tune] {signal.Signals(signum).name}: stopping the search gracefully (trials still running "
              "-> incomplete; their last checkpoints are kept for --resume)", flush=True)
        os.kill(os.getpid(), signal.SIGINT)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_stop)
    storage = Path(args.job_dir)
    storage.mkdir(parents=True, exist_ok=True)
    kw.setdefault("checkpoint_config", tune.CheckpointConfig(num_to_keep=kw.pop("num_to_keep", 2)))
    # a crashed trial (OOM, NCCL, a lost node) restarts from its last checkpoint up to --max-failures times
    kw.setdefault("failure_config", tune.FailureConfig(max_failures=args.max_failures))
    return tune.RunConfig(name=args.method, storage_path=str(storage), verbose=1,
                          callbacks=[record, NodeWatcher(args)] + kw.pop("callbacks", []), **kw)


def finish(results, record: TrialRecorder) -> int:
    """After fit(): final statuses from the ResultGrid into trials.jsonl; print the stops and the best."""
    for r in results:                             # the ResultGrid is authoritative for errors
        tid = (r.metrics or {}).get("trial_id")
        if r.error is not None and tid in record.trials and not record.interrupted:
            record.trials[tid]["status"] = "error"
    record.write()
    rows = record.rows()
    for tid, e in record.trials.items():
        if e["status"] == "error":
            print(f"[tune] ERROR trial {tid} after {e['retries']} retries: {e['reason'] or 'see its error.txt'}",
                  flush=True)
    for r in rows:
        if r["status"] == "stopped_early":
            print(f"[tune] {r['trial_id']} stopped early at epoch {r['epochs']:g} (a rung), "
                  f"eval_loss {r['eval_loss']:.4f}", flush=True)
    print(f"[tune] {len(rows)} trials -> {record.path}", flush=True)
    best = best_row(rows)
    # Stopped before every trial finished (SIGTERM, or USR1 which Tune itself turns into a graceful
    # stop): say how to continue.
    if record.interrupted or any(e["status"] == "incomplete" for e in record.trials.values()):
        print_resume_command(record.args)
    if best is None:
        print("[tune] ERROR: no trial produced an eval_loss; see the trial errors above", flush=True)
        return 1
    print(f"[tune] {describe_best(best)}", flush=True)
    return 0


def restore(args, record: TrialRecorder, trainable_fn, param_space: dict):
    """Tune's own resume (Tuner.restore) of the earlier job's search in args.resume_dir: finished
    trials stay finished, unfinished and errored ones continue from their last checkpoints."""
    from ray import tune
    prev = Path(args.resume_dir)
    new = Path(args.job_dir)
    if prev != new:      # what the trials wrote about themselves (own time, lr/wd before an exploit)
        if (prev / "trial_state").is_dir():
            shutil.copytree(prev / "trial_state", new / "trial_state", dirs_exist_ok=True)
        if (prev / "exploits.jsonl").is_file() and not (new / "exploits.jsonl").exists():
            shutil.copyfile(prev / "exploits.jsonl", new / "exploits.jsonl")
    done = sum(1 for r in record.previous.values() if r["status"] in ("completed", "stopped_early"))
    prev_job = next((r["job_id"] for r in record.previous.values() if r.get("job_id")), prev.name)
    print(f"[tune] RESUMED from job {prev_job} ({prev}): {len(record.previous)} trial(s) "
          f"there, {done} finished; the others continue from their last checkpoints", flush=True)
    tuner = tune.Tuner.restore(str(prev / args.method), trainable=trainable_fn, param_space=param_space,
                               resume_unfinished=True, resume_errored=True)
    # The restored run config holds the earlier job's recorder (pickled): this job's replaces it.
    tuner._local_tuner.get_run_config().callbacks = [record, NodeWatcher(args)]
    return tuner


def write_pbt_lineage(args, record: TrialRecorder) -> Path:
    """PBT's exploits as a table: epoch, trial, donor (and the training step of the state it copied:
    weights, optimizer moments, schedule), lr/wd before -> after, eval_loss before/after.

    Written to <job dir>/pbt_lineage.csv and beside the job's CSV (<log>.pbt_lineage.csv).
    The events come from the trials themselves (exploits.jsonl): a trial that restores a
    checkpoint written by another trial is an exploit, and it records whose weights it loaded.
    """
    job_dir = Path(args.job_dir)
    events_file = job_dir / "exploits.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()] \
        if events_file.exists() else []
    # every result each trial reported, as the driver received them
    history = {tid: e["history"] for tid, e in record.trials.items()}

    def at(tid, epoch, key):     # the LAST report at that epoch: the one after the exploit
        return next((h.get(key) for h in reversed(history.get(tid, [])) if h.get("epoch") == epoch), None)

    cols = ["epoch", "trial_id", "donor_id", "donor_global_step", "old_learning_rate", "new_learning_rate", "old_weight_decay",
            "new_weight_decay", "eval_loss_before", "donor_eval_loss", "eval_loss_after",
            "donor_weights_fingerprint", "loaded_weights_fingerprint"]
    out = job_dir / "pbt_lineage.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in sorted(events, key=lambda e: (e["epoch"] or 0, e["time"])):
            nxt = (e["epoch"] or 0) + 1       # the member's first evaluation after the exploit
            w.writerow([e["epoch"], e["trial_id"], e["donor_id"], e.get("donor_global_step"),
                        e["old_learning_rate"], e["new_learning_rate"],
                        e["old_weight_decay"], e["new_weight_decay"], e["old_eval_loss"], e["donor_eval_loss"],
                        at(e["trial_id"], nxt, "eval_loss"), e.get("donor_weights_fingerprint"),
                        at(e["trial_id"], nxt, "loaded_weights_fingerprint")])
    if os.environ.get("HPO_CSV"):
        beside = Path(os.environ["HPO_CSV"]).with_suffix(".pbt_lineage.csv")
        shutil.copyfile(out, beside)
        out = beside
    print(f"[tune] PBT lineage: {len(events)} exploit(s) -> {out}", flush=True)
    for e in events:
        print(f"[tune]   epoch {e['epoch']:g}: {e['trial_id']} <- {e['donor_id']} "
              f"learning_rate {e['old_learning_rate'] or float('nan'):.3g} -> {e['new_learning_rate']:.3g}, "
              f"weight_decay {e['old_weight_decay']} -> {e['new_weight_decay']}", flush=True)
    return out
