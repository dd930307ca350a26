"""The manual grid's runs as processes: started, supervised, stopped, their log blocks printed.

Run:  python -m hpo.runs --profile tiny --output-dir /tmp/run1     # one scripts/train.py run, forked
      (experiments/manual/driver.py uses GridRunner; nothing else needs this module)

Every run of the grid is its own process — one failing combination does not stop the grid,
and its exit code, memory and time are its own — framed in the job log by
`===== RUN k/n START/END =====` lines, which the parser (hpo/logparse.py) reads.

One or several runs at a time (GridRunner's `at_once`):
  * one (GPUs, the cluster tier): each run's output goes straight to the job log, between its
    START and END lines, as it happens;
  * several (the laptop tier: one run per CPU, each with one CPU thread, like a Ray trial there):
    each run writes to <run dir>/run.log; when it ends, its whole block (START, its output, END)
    is copied into the job log, in grid order, so blocks never interleave. Meanwhile the job log
    says which runs started (`tail -f` their run.log to watch one).

Forked runs (`fork=True`, plain `python scripts/train.py` runs only): a run of the laptop tier
trains for ~15 s, but a new Python process first spends ~4.5 s of CPU importing torch,
transformers, datasets and torchmetrics. The driver imports them once (`preload`), then starts
each run with os.fork(): the child is a new process like the one subprocess would start (its own
pid, process group, memory, exit code and /proc start time, so its setup_s counts from the fork;
`ps`/`top` name it train.py) that finds the modules loaded and runs train.py as __main__. The same
command line gives the same metrics.json (tests/test_runs.py). Safe because the parent imports
but never computes (no torch thread pool or CUDA context exists to be copied); `torchrun` (GPUs,
DeepSpeed), `srun` job steps (cluster tier) and every run on macOS (whose system libraries are
not fork-safe once loaded) are started as new processes, as before.

Stopping (scancel = SIGTERM, Ctrl-C, the walltime warning USR1): every running run's process
group is stopped, the time it spent is kept in its run.json for --resume, and the job exits. A
stopped run's block has no END line (one at a time: the log simply stops inside it) or an END
line with `stopped=1` (several at a time); either way the parser marks it incomplete.
Nothing runs at import time.
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hpo import logfmt

# what scripts/train.py imports while it sets a run up (hpo.trial imports them lazily)
STACK = ("torch", "transformers", "transformers.trainer", "transformers.models.bloom.modeling_bloom",
         "datasets", "torchmetrics.functional.text", "accelerate",
         "hpo.trial", "hpo.data", "hpo.metrics", "hpo.loss", "hpo.bloom_attention")


# ----------------------------------------------------------------------------- forked runs
def preload(modules=STACK) -> list[str]:
    """Import the training stack into this process, so forked runs find it loaded. Returns the
    modules that could not be imported (optional ones; the run then imports what it needs itself)."""
    import importlib
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


class Child:
    """A forked run, with the parts of subprocess.Popen's interface GridRunner uses."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)      # killed by a signal: -signum
        return self.returncode

    def wait(self, timeout: float | None = None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def fork_script(script: str, argv: list[str], log: Path | None = None) -> Child:
    """Fork a process that runs `script` as __main__ with sys.argv = [script, *argv], in its own
    session (process group), with the signal handlers a fresh Python has; its stdout and stderr
    go to `log` if given."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Child(pid)
    code = 1
    try:
        os.setsid()
        if log is not None:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:                                # ps/top show the run as train.py (environ left as it is)
            Path("/proc/self/comm").write_text(Path(script).name[:15])
        except OSError:
            pass
        sys.argv = [script, *argv]
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:                 # what `python script` would exit with
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:                   # noqa: BLE001 — report it as Python would, then exit 1
        traceback.print_exc()
    finally:
        try:
            import logging
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)                  # never return into the parent's code


# ----------------------------------------------------------------------------- run bookkeeping
def write_run_json(run_dir: Path, rc: int, wall_s: float) -> None:
    """<run dir>/run.json: exit code and the wall time spent so far (read back by --resume)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({"rc": rc, "wall_s": round(wall_s, 1),
                                                  "job_id": os.environ.get("HPO_JOB_ID")}) + "\n")


def earlier_run(prev: Path | None, trial: str) -> dict:
    """What an earlier job (--resume) left of this run: its metrics (finished), its latest
    checkpoint (interrupted), and the wall time it already spent."""
    if prev is None or not (prev / trial).is_dir():
        return {}
    d = prev / trial
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    out = {"wall_s": run.get("wall_s")}
    if (d / "metrics.json").is_file() and run.get("rc", 0) == 0:
        out["metrics"] = json.loads((d / "metrics.json").read_text())
    elif (d / "checkpoint" / "trial_state.json").is_file():
        out["checkpoint"] = str(d / "checkpoint")
    return out


@dataclass
class Run:
    k: int                      # 1..n, its place in the grid
    n: int
    trial: str
    run_dir: Path
    start_fields: dict          # the RUN START line's keys (CSV column names)
    cmd: list[str] = field(default_factory=list)
    earlier_wall_s: float = 0.0             # time it spent in an earlier job (--resume)
    start_date: str = ""
    t0: float = 0.0
    child: object = None

    def start_line(self) -> str:
        return logfmt.run_start_line(self.k, self.n, self.trial, self.start_fields, self.start_date)

    @property
    def log(self) -> Path:
        return self.run_dir / "run.log"


# ----------------------------------------------------------------------------- the grid runner
class GridRunner:
    """Runs the grid's runs, `at_once` at a time, and prints their RUN blocks (see the module's text).

    submit() waits for a free slot; finish() waits for the rest. `records` holds each finished
    run's metrics.json, `failed` counts the runs that did not end with one. SIGTERM/SIGINT and
    USR1 stop every running run's process group and end the job (on_stop prints how to resume)."""

    def __init__(self, at_once: int = 1, fork: bool = False, on_stop=None):
        self.at_once, self.fork, self.on_stop = max(1, int(at_once)), fork, on_stop
        self.stream = self.at_once == 1
        self.running: list[Run] = []
        self.blocks: dict[int, list[str]] = {}          # several at a time: finished blocks not yet printed
        self.next_block = 1
        self.records: list[dict] = []
        self.failed = 0
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._stop)

    # -- runs
    def done_earlier(self, run: Run, metrics: dict, wall_s: float) -> None:
        """A run that finished in the earlier job (--resume): its block again, its result and time, once."""
        run.start_date = logfmt.log_date()
        self._block(run.k, [run.start_line(), f"[job] {run.trial} finished in the earlier job: not run again",
                            logfmt.result_line(metrics),
                            logfmt.run_end_line(run.k, run.n, run.trial, 0, wall_s, logfmt.log_date())])
        self.records.append(metrics)

    def submit(self, run: Run, note: str | None = None) -> None:
        while len(self.running) >= self.at_once:
            self._reap(wait=True)
        run.start_date, run.t0 = logfmt.log_date(), time.time() - run.earlier_wall_s
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if self.stream:
            print(run.start_line(), flush=True)
            if note:
                print(note, flush=True)
            log = None
        else:
            log = run.log
            with open(log, "a") as f:
                if note:
                    print(note, file=f)
            print(f"[job] RUN {run.k}/{run.n} started: {run.trial} ({len(self.running) + 1} running; "
                  f"its output: {log}, copied here when it ends)", flush=True)
        if self.fork and run.cmd[0] == sys.executable:
            run.child = fork_script(run.cmd[1], run.cmd[2:], log)
        elif log is None:
            run.child = subprocess.Popen(run.cmd, start_new_session=True)
        else:
            with open(log, "ab") as out:
                run.child = subprocess.Popen(run.cmd, start_new_session=True, stdout=out,
                                             stderr=subprocess.STDOUT)
        self.running.append(run)

    def finish(self) -> None:
        while self.running:
            self._reap(wait=True)
        self._print_blocks(everything=True)

    # -- internals
    def _reap(self, wait: bool) -> None:
        while True:
            done = [r for r in self.running if r.child.poll() is not None]
            if done or not wait:
                break
            time.sleep(0.1)
        for run in done:
            self.running.remove(run)
            rc, wall = run.child.returncode, time.time() - run.t0
            write_run_json(run.run_dir, rc, wall)
            end = logfmt.run_end_line(run.k, run.n, run.trial, rc, wall, logfmt.log_date())
            if self.stream:
                print(end, flush=True)
            else:
                self._block(run.k, self._logged_block(run, end))
            metrics = run.run_dir / "metrics.json"
            if rc == 0 and metrics.exists():
                self.records.append(json.loads(metrics.read_text()))
            else:
                self.failed += 1

    @staticmethod
    def _logged_block(run: Run, end: str) -> list[str]:
        """Several at a time: a run's block is its START line, its run.log and `end`."""
        return [run.start_line(), *_read_lines(run.log), end]

    def _block(self, k: int, lines: list[str]) -> None:
        if self.stream:
            print("\n".join(lines), flush=True)
            return
        self.blocks[k] = lines
        self._print_blocks()

    def _print_blocks(self, everything: bool = False) -> None:
        """Blocks in grid order: run k's block waits for runs 1..k-1 (all of them, at the end)."""
        while self.blocks and (self.next_block in self.blocks or everything):
            k = self.next_block if self.next_block in self.blocks else min(self.blocks)
            print("\n".join(self.blocks.pop(k)), flush=True)
            self.next_block = k + 1

    def _stop(self, signum, frame):
        for run in self.running:
            if run.child.poll() is None:
                os.killpg(run.child.pid, signal.SIGTERM if signum == signal.SIGUSR1 else signum)
        for run in self.running:
            try:
                run.child.wait(timeout=float(os.environ.get("HPO_TERM_WAIT_S", "8")))
            except subprocess.TimeoutExpired:
                os.killpg(run.child.pid, signal.SIGKILL)
                run.child.wait()
            wall = time.time() - run.t0
            write_run_json(run.run_dir, -signum, wall)               # time spent, for --resume
            if not self.stream:          # its block so far, marked stopped (one at a time: left open)
                self.blocks[run.k] = self._logged_block(run, logfmt.run_end_line(
                    run.k, run.n, run.trial, -signum, wall, logfmt.log_date(), stopped=True))
        self.running = []
        self._print_blocks(everything=True)
        print(f"[job] {signal.Signals(signum).name}: grid stopped", flush=True)
        if self.on_stop is not None:
            self.on_stop()
        sys.exit(0 if signum == signal.SIGUSR1 else 128 + signum)


def _read_lines(path: Path) -> list[str]:
    """A run's log as its lines, byte for byte what one-at-a-time streaming would have put in the job
    log: split on \n only (a progress bar's \r stays inside its line, as hpo/logparse.py reads it)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def main(argv=None) -> int:
    preload()
    script = str(Path(__file__).resolve().parent.parent / "scripts" / "train.py")
    return fork_script(script, list(sys.argv[1:] if argv is None else argv)).wait()


if __name__ == "__main__":
    raise SystemExit(main())
