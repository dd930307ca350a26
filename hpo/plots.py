"""The workshop's plots: what each job did, and the methods side by side (matplotlib, PNG).

Run (the plots are made for you; nothing is drawn at import time):
    python scripts/parse_logs.py logs/asha/hpo-asha-<id>.out         # the CSV, then the job's plots beside it
    python scripts/plot.py logs/asha/hpo-asha-<id>.out [--out-dir D]  # the job's plots again (log or CSV)
    python scripts/compare.py logs/*/*.csv --out-dir logs/compare/<id> # best_of_each + the comparison plots
From Python:
    from hpo.plots import job_plots, compare_plots
    made, warnings = job_plots("logs/pbt/hpo-pbt-1.out", "logs/pbt/hpo-pbt-1.csv")
    for plot in made:
        print(plot["path"], plot["axes"])     # what was drawn, counted on the figure itself

One job's plots, beside its CSV and named after it (<stem> = the CSV's name without .csv):
  <stem>.curves.png        every method: eval loss and F1 of each trial after each epoch, one line
                           per trial; a trial stopped early ends with an x where it was stopped;
                           ASHA: its rungs as dotted vertical lines
  <stem>.schedule.png      PBT: each member's learning rate and weight decay over the epochs, with an
                           arrow at every exploit from the donor (whose weights it copied) to the
                           member's new, perturbed value (<stem>.pbt_lineage.csv)
  <stem>.suggestions.png   Bayesian optimisation: the learning rate of each trial in the order the
                           search suggested them (the CSV's row order), coloured by the eval loss it got
The comparison, in compare.py's --out-dir:
  best_so_far.png          best F1 so far and lowest eval loss so far vs the device-hours spent,
                           all methods on one axis (hpo.report.cumulative_best: trials in CSV row order)
  pareto.png               every trial's F1 vs its own device-hours, all methods, the Pareto front drawn
Hours are GPU-hours when any trial held a GPU, else CPU-hours (the laptop tier); the axis says which.

Where the numbers come from:
  * the per-epoch history: the `[eval] trial=.. epoch=.. step=.. eval_loss=.. f1=.. learning_rate=..`
    lines of the job's .out log (written by hpo.logfmt.eval_line; read here with hpo.logfmt's own
    prefix and key=value reader). Every method prints them, inside or outside RUN blocks; Ray puts
    "(hpo_trial pid=..) " in front, several ranks may print the same line: one point per
    (trial, epoch, step), the last one printed wins (a trial restarted from a checkpoint repeats an epoch);
  * the trials (order, status, hyperparameters, final metrics, hours): the results CSV rows;
  * ASHA's rungs: the driver's `ASHA rungs at epochs [..]` line in the log (experiments/asha/driver.py),
    or, if the log does not have it, the epochs at which trials were stopped early.
  * BayesOpt's random start-up trials: the driver's `searcher .., N random start-up trials` line.

Every function returns a description of what it drew — {"path", "title", "axes": [{"title", "xlabel",
"ylabel", <kind>: count}]} — counted on the figure's artists (a line per trial is kind "trial", an
x marker "stopped", a rung "rung", an exploit arrow "exploit", ...; a scatter counts its points), so
the tests check what a learner sees, not what the code meant to draw. A plot that cannot be made
raises PlotError (no data) or any other exception; job_plots turns each into a warning and goes on.
"""
from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hpo import logfmt
from hpo.report import NEAR_BEST, best_row, cost_basis, cumulative_best, hours_to_near_best
from hpo.schema import read_csv, to_number

__all__ = ["PlotError", "JobLog", "read_job_log", "job_plots", "plot_curves", "plot_pbt_schedule",
           "plot_suggestions", "compare_plots", "plot_best_so_far", "plot_f1_vs_cost"]

METHOD_LABEL = {"manual": "Manual grid", "asha": "ASHA", "pbt": "PBT", "bayesopt": "Bayesian optimisation"}
_METHOD_SHORT = {"manual": "grid", "asha": "ASHA", "pbt": "PBT", "bayesopt": "BayesOpt"}   # labels on points
# One colour per method in the comparison plots (the workshop's order, then any other method).
_METHOD_COLOUR = {"manual": "tab:blue", "asha": "tab:orange", "pbt": "tab:green", "bayesopt": "tab:red"}
_METHOD_MARKER = {"manual": "s", "asha": "o", "pbt": "^", "bayesopt": "D"}

# Large type for a projector. Applied with matplotlib.rc_context around each figure, so
# nothing global changes for a program that imports this module.
_RC = {"font.size": 14, "axes.titlesize": 16, "axes.labelsize": 15, "xtick.labelsize": 13,
       "ytick.labelsize": 13, "legend.fontsize": 12, "legend.title_fontsize": 12, "figure.titlesize": 18,
       "lines.linewidth": 2.2, "lines.markersize": 7, "axes.grid": True, "grid.alpha": 0.3,
       "savefig.dpi": 100, "savefig.facecolor": "white"}

LOSS_LABEL = "eval loss (nats per answer token)"
F1_LABEL = "F1 (%)"

# What the drivers print in their first [tune] line (experiments/asha/driver.py, experiments/bayesopt/driver.py).
_RUNGS = re.compile(r"ASHA rungs at epochs \[([^\]]*)\]")
_RANDOM_STEPS = re.compile(r"searcher (\w+), (\d+) random start-up trials")
# An [eval] line anywhere in a log line: after Ray's "(hpo_trial pid=..) ", a rank prefix or a progress bar.
_EVAL_AT = logfmt.EVAL + "trial="


class PlotError(Exception):
    """A plot that cannot be drawn from these inputs (no [eval] lines, no trials, ...)."""


# --------------------------------------------------------------------------- reading a job

@dataclass
class JobLog:
    """What the plots read from a job's .out log.

    history: trial_id -> [{"epoch", "step", "eval_loss", "exact_match", "f1", "learning_rate",
    "batch_size", "weight_decay"}], sorted by epoch, one point per epoch (values missing from a
    line are None); rungs: ASHA's rung epochs as the driver printed them (None: not printed);
    searcher / random_steps: BayesOpt's searcher and its number of random start-up trials."""
    path: str | None = None
    history: dict[str, list[dict]] = field(default_factory=dict)
    rungs: list[float] | None = None
    searcher: str | None = None
    random_steps: int | None = None
    warnings: list[str] = field(default_factory=list)


_POINT_KEYS = ("eval_loss", "exact_match", "f1", "learning_rate", "batch_size", "weight_decay")


def read_job_log(path) -> JobLog:
    """The [eval] history and the drivers' banner facts of one job log (see JobLog).

    A line that does not parse is a warning, never an error. Raises OSError if the file cannot be read."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    out = JobLog(path=str(path))
    points: dict[tuple, tuple[int, dict]] = {}      # (trial, epoch text, step text) -> (line number, point)
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        at = line.find(_EVAL_AT)
        if at >= 0:
            kv = logfmt.parse_kv(line[at + len(logfmt.EVAL):])
            if "epoch" not in kv or "eval_loss" not in kv:
                out.warnings.append(f"{path}:{lineno}: [eval] line without epoch= or eval_loss=: skipped")
                continue
            try:
                point = {"epoch": to_number(kv["epoch"], "epoch"), "step": to_number(kv.get("step"), "step"),
                         **{k: to_number(kv.get(k), k) for k in _POINT_KEYS}}
            except ValueError as e:
                out.warnings.append(f"{path}:{lineno}: [eval] line: {e}: skipped")
                continue
            # the same evaluation printed by several ranks counts once; a repeat after a restart
            # from a checkpoint replaces the earlier one (the run continued from the repeat)
            points[(kv["trial"], kv["epoch"], kv.get("step"))] = (lineno, point)
            continue
        if "[tune] " not in line:
            continue
        m = _RUNGS.search(line)
        if m and out.rungs is None:
            try:
                out.rungs = [float(x) for x in m.group(1).split(",") if x.strip()]
            except ValueError:
                out.warnings.append(f"{path}:{lineno}: ASHA rungs {m.group(1)!r} are not numbers: ignored")
        m = _RANDOM_STEPS.search(line)
        if m and out.random_steps is None:
            out.searcher, out.random_steps = m.group(1), int(m.group(2))
    by_trial: dict[str, dict] = {}
    for (trial, _, _), (lineno, point) in sorted(points.items(), key=lambda kv: kv[1][0]):
        by_trial.setdefault(trial, {})[point["epoch"]] = point     # one point per epoch: the last printed
    out.history = {t: [pts[e] for e in sorted(pts)] for t, pts in by_trial.items()}
    return out


def read_lineage(path) -> list[dict]:
    """PBT's exploits from <stem>.pbt_lineage.csv (hpo.search.recorder.write_pbt_lineage):
    [{"epoch", "trial_id", "donor_id", "old_/new_learning_rate", "old_/new_weight_decay", ...}]."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        e = dict(r)
        for k in ("epoch", "old_learning_rate", "new_learning_rate", "old_weight_decay", "new_weight_decay"):
            e[k] = to_number(r.get(k), k)
        out.append(e)
    return out


# --------------------------------------------------------------------------- drawing helpers

def _mpl():
    """matplotlib, imported only when a plot is drawn (importing hpo.plots stays cheap, and a
    broken matplotlib costs the plots, never the CSV). Figure() + savefig need no pyplot and
    no GUI: the PNG is drawn by the Agg renderer, also on a compute node without a display."""
    import matplotlib
    from matplotlib.figure import Figure
    return matplotlib, Figure


def _figure(figsize):
    _, Figure = _mpl()
    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path) -> Path:
    """PNG via a temp file + rename: a crash never leaves half a picture under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp's 0600 would hide the plot from the class
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _describe(fig, path, title) -> dict:
    """What is on the figure, per axes: titles, labels and how many artists of each kind (gid).
    A Line2D counts 1, a scatter (PathCollection) counts its points, an arrow or label counts 1."""
    axes = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        counts = Counter()
        for a in ax.get_children():
            gid = a.get_gid()
            if not gid:
                continue
            n = len(a.get_offsets()) if hasattr(a, "get_offsets") and not hasattr(a, "get_xdata") else 1
            counts[gid] += n
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), **counts})
    return {"path": Path(path), "title": title, "axes": axes}


def _draw(path, figsize, draw) -> dict:
    """Make a figure under the workshop's style, let `draw(fig)` fill it (it returns the title),
    save it and describe it."""
    matplotlib, _ = _mpl()
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize)
        title = draw(fig)
        _save(fig, path)
        return _describe(fig, path, title)


def _colours(n):
    """n distinct colours: tab10 up to 10 trials, tab20 up to 20, then around again."""
    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _fmt(x, spec="g") -> str:
    return "-" if x is None else format(x, spec)


def _trial_label(row: dict | None, trial: str, method: str | None) -> str:
    """Legend text: the trial id, and its hyperparameters unless the id already says them (the
    manual grid's `run05_lr0.001_bs8_wd0`) or they change during the run (PBT)."""
    if row is None or method == "pbt" or all(t in trial for t in ("lr", "bs", "wd")):
        return trial
    return (f"{trial}: lr {_fmt(row.get('learning_rate'), '.2g')}, bs {_fmt(row.get('batch_size'))}, "
            f"wd {_fmt(row.get('weight_decay'), '.2g')}")


def _job_title(method, job_id) -> str:
    name = METHOD_LABEL.get(method, method) or "?"
    return f"{name}, job {job_id}" if job_id else name


def _integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------- one job

def plot_curves(history: dict[str, list[dict]], rows: list[dict], path, *, method: str | None = None,
                job_id: str | None = None, rungs: list[float] | None = None, rungs_source: str = "",
                exploits: list[dict] | None = None) -> dict:
    """Eval loss (left) and F1 (right) of each trial after each epoch, one line per trial (in CSV
    row order; the job's best trial by hpo.report.best_row drawn thicker). A trial stopped early
    ends with an x at its last evaluation; `rungs` (ASHA) are dotted vertical lines.

    `exploits` (PBT, read_lineage): a member that exploited at epoch e did not continue its own
    training but the donor's, so its line is broken there and a dashed line runs from the
    donor's point at e to the member's next point (kind "exploit"; the later pieces of the
    member's line are kind "trial_cont", so "trial" still counts one line per trial)."""
    by_id = {r["trial_id"]: r for r in rows}
    order = [r["trial_id"] for r in rows if r["trial_id"] in history]
    order += [t for t in history if t not in by_id]          # in the log but not in the CSV (cut off)
    if not order:
        raise PlotError("no [eval] lines for any trial: no learning curves to draw")
    best = best_row(rows)
    method = method or (rows[0]["method"] if rows else None)
    n_stopped = sum(1 for t in order if by_id.get(t, {}).get("status") == "stopped_early")

    def draw(fig):
        ax_loss, ax_f1 = fig.subplots(1, 2)
        colours = _colours(len(order))
        for i, trial in enumerate(order):
            pts, row = history[trial], by_id.get(trial)
            is_best = best is not None and row is best
            label = ("BEST " if is_best else "") + _trial_label(row, trial, method)
            status = (row or {}).get("status")
            if status == "stopped_early":
                label += " (stopped early)"
            elif status in ("error", "incomplete"):
                label += f" ({status})"
            style = dict(color=colours[i], lw=4.0 if is_best else 2.0, zorder=3 if is_best else 2, marker="o",
                         ms=5)
            breaks = sorted({e["epoch"] for e in exploits or [] if e.get("trial_id") == trial
                             and e.get("epoch") is not None})
            for ax, key in ((ax_loss, "eval_loss"), (ax_f1, "f1")):
                xy = [(p["epoch"], p[key]) for p in pts if p.get(key) is not None]
                if not xy:
                    continue
                xs, ys = zip(*xy)
                # pieces of continuous training: a new piece after each exploit epoch
                pieces, cur = [], []
                for x, y in xy:
                    if cur and any(cur[-1][0] <= b < x for b in breaks):
                        pieces.append(cur)
                        cur = []
                    cur.append((x, y))
                pieces.append(cur)
                for k, piece in enumerate(pieces):
                    ax.plot(*zip(*piece), label=label if ax is ax_loss and k == 0 else None,
                            gid="trial" if k == 0 else "trial_cont", **style)
                for b in breaks:
                    donor = next(e["donor_id"] for e in exploits if e.get("trial_id") == trial and e["epoch"] == b)
                    start = next((p[key] for p in history.get(donor, []) if p["epoch"] == b and
                                  p.get(key) is not None), None)
                    after = next(((x, y) for x, y in xy if x > b), None)
                    if start is not None and after is not None:
                        ax.plot([b, after[0]], [start, after[1]], ls=(0, (3, 2)), color=colours[i],
                                lw=style["lw"], zorder=style["zorder"], gid="exploit")
                if status == "stopped_early":
                    ax.plot([xs[-1]], [ys[-1]], ls="none", marker="x", ms=16, mew=3.5, color=colours[i],
                            zorder=4, gid="stopped")
        for r in rungs or []:
            for ax in (ax_loss, ax_f1):
                ax.axvline(r, color="0.3", ls=":", lw=2.2, zorder=1, gid="rung",
                           label=(f"ASHA rung{rungs_source}" if ax is ax_loss and r == rungs[0] else None))
        ax_loss.set(title="eval loss (lower is better)", xlabel="epoch", ylabel=LOSS_LABEL)
        ax_f1.set(title="F1 (higher is better)", xlabel="epoch", ylabel=F1_LABEL)
        for ax in (ax_loss, ax_f1):
            _integer_epochs(ax)
        handles, labels = ax_loss.get_legend_handles_labels()
        if n_stopped:
            from matplotlib.lines import Line2D
            handles.append(Line2D([], [], ls="none", marker="x", ms=12, mew=3, color="0.2"))
            labels.append("x = stopped early here")
        if any(e.get("epoch") is not None for e in exploits or []):
            from matplotlib.lines import Line2D
            handles.append(Line2D([], [], ls=(0, (3, 2)), lw=2.2, color="0.2"))
            labels.append("exploit: continued from\nthe donor's weights")
        fig.legend(handles, labels, loc="outside right center", title=f"{len(order)} trials",
                   ncols=2 if len(labels) > 18 else 1)
        title = f"{_job_title(method, job_id)}: every trial after every epoch"
        fig.suptitle(title)
        return title

    return _draw(path, (17, 7), draw)


def plot_pbt_schedule(history: dict[str, list[dict]], lineage: list[dict] | None, path, *,
                      job_id: str | None = None, rows: list[dict] | None = None) -> dict:
    """Each PBT member's learning rate (left, log scale) and weight decay (right) over the epochs:
    a step line at the value the member trained with during each epoch (read from its [eval] line
    at the end of that epoch). At each exploit (epoch e, lineage) an arrow goes from the donor's
    value at e — the member copied the donor's weights AND hyperparameters — to the member's
    new, perturbed value in the next epoch, labelled `member <- donor`."""
    order = [r["trial_id"] for r in rows or [] if r["trial_id"] in history]
    order += sorted(t for t in history if t not in order)
    order = [t for t in order if any(p.get("learning_rate") is not None for p in history[t])]
    if not order:
        raise PlotError("no [eval] lines with learning_rate= : no PBT schedule to draw")

    def value_at(trial, epoch, key):
        return next((p[key] for p in history.get(trial, []) if p["epoch"] == epoch and p.get(key) is not None),
                    None)

    def draw(fig):
        ax_lr, ax_wd = fig.subplots(1, 2)
        colours = dict(zip(order, _colours(len(order))))
        for trial in order:
            for ax, key in ((ax_lr, "learning_rate"), (ax_wd, "weight_decay")):
                xy = [(p["epoch"], p[key]) for p in history[trial] if p.get(key) is not None]
                if not xy:
                    continue
                xs, ys = zip(*xy)
                # the value used during epoch k is printed at its end: a step from k-1 to k
                start = max(0.0, xs[0] - 1)
                ax.step((start,) + xs, (ys[0],) + ys, where="pre", color=colours[trial], lw=2.5,
                        label=trial if ax is ax_lr else None, gid="member")
                ax.plot(xs, ys, ls="none", marker="o", ms=6, color=colours[trial])
        n_arrows = 0
        for e in lineage or []:
            epoch, member, donor = e.get("epoch"), e.get("trial_id"), e.get("donor_id")
            if epoch is None:
                continue
            colour = colours.get(member, "black")
            for ax, key in ((ax_lr, "learning_rate"), (ax_wd, "weight_decay")):
                new = e.get(f"new_{key}")
                src = value_at(donor, epoch, key)
                if src is None:                         # donor not in the log: start from the member's old value
                    src = e.get(f"old_{key}")
                if new is None or src is None:
                    continue
                ax.annotate("", xy=(epoch + 0.5, new), xytext=(epoch, src), gid="exploit",
                            arrowprops=dict(arrowstyle="-|>", color=colour, lw=2.5, mutation_scale=22,
                                            connectionstyle="arc3,rad=0.25", shrinkA=2, shrinkB=2))
                if ax is ax_lr:                         # one label per exploit is enough
                    ax.annotate(f"{_short(member)} \u2190 {_short(donor)}", xy=(epoch + 0.5, new),
                                xytext=(6, 6), textcoords="offset points", fontsize=12, color=colour,
                                gid="exploit_label")
            n_arrows += 1
        ax_lr.set_yscale("log")
        for ax in (ax_lr, ax_wd):
            ax.margins(y=0.12)                          # room for the exploit labels at the top
        ax_lr.set(title="learning rate", xlabel="epoch", ylabel="learning rate (log scale)")
        ax_wd.set(title="weight decay", xlabel="epoch", ylabel="weight decay")
        for ax in (ax_lr, ax_wd):
            _integer_epochs(ax)
        handles, labels = ax_lr.get_legend_handles_labels()
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], color="0.2", lw=2.5, marker=r"$\rightarrow$", ms=18))
        labels.append("exploit: donor \u2192 member's\nnew value" if lineage is not None
                      else "exploits unknown\n(no lineage file)")
        fig.legend(handles, labels, loc="outside right center", title="PBT members",
                   ncols=2 if len(labels) > 18 else 1)
        title = (f"{_job_title('pbt', job_id)}: hyperparameters of each member "
                 f"({n_arrows} exploit{'s' if n_arrows != 1 else ''})")
        fig.suptitle(title)
        return title

    return _draw(path, (17, 7), draw)


def _short(trial) -> str:
    """A Ray trial id's distinguishing tail (`4efbb_00002` -> `00002`) for labels on a plot."""
    trial = str(trial)
    return trial.rsplit("_", 1)[-1] if "_" in trial else trial


def plot_suggestions(rows: list[dict], path, *, job_id: str | None = None, random_steps: int | None = None,
                     searcher: str | None = None) -> dict:
    """BayesOpt: the learning rate of each trial in the order the search suggested it (the CSV's
    row order: a Ray driver records a trial when it starts), coloured and labelled by the eval
    loss it reached; marker shape = batch size; the random start-up trials shaded; the best
    trial (best_row) a star. A diverged trial (NaN loss) is a grey x."""
    pts = [(i, r) for i, r in enumerate(rows, start=1) if r.get("learning_rate") is not None]
    if not pts:
        raise PlotError("no trial with a learning rate: no suggestions to draw")
    best = best_row(rows)

    def draw(fig):
        matplotlib, _ = _mpl()
        ax = fig.subplots()
        losses = sorted(r["eval_loss"] for _, r in pts if _finite(r.get("eval_loss")))
        norm = None
        if losses:
            # One diverged trial would squeeze all the others into one colour: the scale ends at
            # 3x the spread between the best and the median loss (higher losses: the top colour).
            lo, median = losses[0], losses[len(losses) // 2]
            hi = min(losses[-1], lo + 3 * (median - lo)) if median > lo else losses[-1]
            norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
        cmap = matplotlib.colormaps["viridis_r"]                 # yellow = low loss = good, dark = bad
        ax.plot([i for i, _ in pts], [r["learning_rate"] for _, r in pts], color="0.6", lw=1.2, zorder=1)
        if random_steps:
            ax.axvspan(0.5, min(random_steps, len(rows)) + 0.5, color="0.88", zorder=0, gid="random",
                       label=f"random start-up trials ({random_steps})")
        batch_sizes = sorted({r["batch_size"] for _, r in pts if r.get("batch_size") is not None})
        markers = dict(zip(batch_sizes, "osDv^<>p"))
        for bs in batch_sizes + [None]:
            mine = [(i, r) for i, r in pts if r.get("batch_size") == bs and _finite(r.get("eval_loss"))]
            if not mine:
                continue
            ax.scatter([i for i, _ in mine], [r["learning_rate"] for _, r in mine],
                       c=[r["eval_loss"] for _, r in mine], cmap=cmap, norm=norm, s=220,
                       marker=markers.get(bs, "o"), edgecolors="black", linewidths=1, zorder=3, gid="trial",
                       label=f"batch size {bs}" if bs is not None else "batch size ?")
        bad = [(i, r) for i, r in pts if not _finite(r.get("eval_loss"))]
        if bad:
            ax.scatter([i for i, _ in bad], [r["learning_rate"] for _, r in bad], marker="x", s=200,
                       color="0.5", linewidths=3, zorder=3, gid="trial", label="no finite eval loss")
        for i, r in pts:
            loss = r.get("eval_loss")
            ax.annotate(_fmt(loss, ".3f") if _finite(loss) else "nan", (i, r["learning_rate"]),
                        xytext=(0, 14), textcoords="offset points", ha="center", fontsize=12, gid="loss_label")
        if best is not None and best.get("learning_rate") is not None:
            i = next(i for i, r in pts if r is best)
            ax.scatter([i], [best["learning_rate"]], marker="*", s=900, facecolors="none", edgecolors="crimson",
                       linewidths=2.5, zorder=4, gid="best", label=f"best: {best['trial_id']}")
        if norm is not None:
            cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                                extend="max" if losses[-1] > norm.vmax else "neither")
            cbar.set_label("final eval loss (lower is better)")
        ax.set_yscale("log")
        ax.set_xticks([i for i, _ in pts])
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.set(title="suggested learning rate and the eval loss it reached",
               xlabel="trial, in the order the search suggested it", ylabel="learning rate (log scale)")
        # legend markers in neutral grey: the colour is the loss, the shape the batch size
        handles, labels = ax.get_legend_handles_labels()
        from matplotlib.lines import Line2D
        neutral = [Line2D([], [], ls="none", marker=markers.get(bs, "o"), ms=14, markerfacecolor="white",
                          markeredgecolor="black") for bs in batch_sizes]
        keep = [(h, t) for h, t in zip(handles, labels) if not t.startswith("batch size ")]
        ax.legend([h for h, _ in keep] + neutral,
                  [t for _, t in keep] + [f"batch size {bs}" for bs in batch_sizes], loc="best")
        label = METHOD_LABEL["bayesopt"] + (f" ({searcher})" if searcher else "")
        title = f"{label}, job {job_id}: what the search tried next" if job_id else label
        fig.suptitle(title)
        return title

    return _draw(path, (14, 7), draw)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def plot_paths(csv_path, out_dir=None) -> dict[str, Path]:
    """Where one job's plots go: beside the CSV (or in out_dir), named <csv stem>.<kind>.png."""
    csv_path = Path(csv_path)
    where = Path(out_dir) if out_dir else csv_path.parent
    return {k: where / f"{csv_path.stem}.{k}.png" for k in ("curves", "schedule", "suggestions")}


def job_plots(log_path, csv_path, rows: list[dict] | None = None, out_dir=None,
              job_id: str | None = None, method: str | None = None) -> tuple[list[dict], list[str]]:
    """Every plot of one job that its inputs allow: curves (all methods, needs the log), the PBT
    schedule (method pbt), the BayesOpt suggestions (method bayesopt). Returns (descriptions of
    the plots made, warnings); a plot that fails is a warning, the others are still made.

    rows: the job's trial rows (default: read from csv_path); log_path may be None or missing
    (then only the plots that need no [eval] lines); out_dir: default beside the CSV; job_id and
    method: default from the rows (pass the log's when the rows may be empty)."""
    made, warnings = [], []
    if rows is None:
        rows = read_csv(csv_path)
    method = (rows[0]["method"] if rows else None) or method
    job_id = job_id or (rows[0]["job_id"] if rows else None)
    paths = plot_paths(csv_path, out_dir)
    log = JobLog()
    if log_path is not None and Path(log_path).is_file():
        log = read_job_log(log_path)
        warnings += log.warnings
    elif log_path is not None:
        warnings.append(f"no log {log_path}: plots that need its [eval] lines are not drawn")

    def attempt(name, fn):
        try:
            made.append(fn())
        except PlotError as e:
            warnings.append(f"plot {name} not drawn: {e}")
        except Exception as e:                   # a plot must never cost the CSV or the other plots
            warnings.append(f"plot {name} failed: {type(e).__name__}: {e}")

    rungs, source = None, ""
    if method == "asha":
        rungs = log.rungs
        if rungs is None:                        # older log: the epochs where trials were stopped
            rungs = sorted({r["epochs"] for r in rows if r["status"] == "stopped_early"
                            and r.get("epochs") is not None}) or None
            source = " (where trials stopped)"
    lineage = None
    if method == "pbt":
        for cand in _lineage_candidates(csv_path, log_path):
            if cand.is_file():
                try:
                    lineage = read_lineage(cand)
                except (OSError, ValueError) as e:
                    warnings.append(f"PBT lineage {cand} unreadable ({e}): exploits not drawn")
                break
        if lineage is None and log.history:
            warnings.append("no PBT lineage file (<job>.pbt_lineage.csv): exploits are not drawn")
    if log.history:
        attempt("curves", lambda: plot_curves(log.history, rows, paths["curves"], method=method,
                                              job_id=job_id, rungs=rungs, rungs_source=source,
                                              exploits=lineage))
    elif log_path is not None and Path(log_path).is_file():
        warnings.append(f"plot curves not drawn: no [eval] lines in {log_path}")
    if method == "pbt" and log.history:
        attempt("schedule", lambda: plot_pbt_schedule(log.history, lineage, paths["schedule"],
                                                          job_id=job_id, rows=rows))
    if method == "bayesopt":
        attempt("suggestions", lambda: plot_suggestions(rows, paths["suggestions"], job_id=job_id,
                                                        random_steps=log.random_steps, searcher=log.searcher))
    return made, warnings


def _lineage_candidates(csv_path, log_path) -> list[Path]:
    """<csv stem>.pbt_lineage.csv, <log stem>.pbt_lineage.csv, <job dir>/pbt_lineage.csv."""
    out = [Path(csv_path).with_suffix(".pbt_lineage.csv")]
    if log_path is not None:
        out += [Path(log_path).with_suffix(".pbt_lineage.csv"), Path(log_path).with_suffix("") / "pbt_lineage.csv"]
    return out


# --------------------------------------------------------------------------- methods side by side

def _hours_label(basis) -> str:
    return (f"{basis}-hours ({basis}-h)" if basis == "GPU"
            else "CPU-hours (CPU-h; no trial used a GPU)")


def plot_best_so_far(by_method: dict[str, list[dict]], path, allocated: dict[str, float | None] | None = None,
                     basis: str | None = None) -> dict:
    """Best F1 so far (left) and lowest eval loss so far (right) against the device-hours the
    method had spent, trial by trial in CSV row order (hpo.report.cumulative_best; the order the
    trials started), one step line per method on one axis. An x marks a trial stopped early, a
    star where the method first came within 1 % of its lowest eval loss; a dotted tail runs on to
    the job's allocated hours (`allocated`: method -> hours; what the job held, idle included)."""
    if not any(_finite(r.get(k)) for rows in by_method.values() for r in rows for k in ("f1", "eval_loss")):
        raise PlotError("no trial with a finite F1 or eval loss: nothing to compare")
    basis = basis or cost_basis([r for rows in by_method.values() for r in rows])

    def draw(fig):
        ax_f1, ax_loss = fig.subplots(1, 2)
        finals = []                                   # each method's lowest eval loss, for the y range
        highest = -math.inf
        for method, rows in by_method.items():
            curve = cumulative_best(rows, basis)
            colour = _METHOD_COLOUR.get(method, None)
            near = hours_to_near_best(rows, basis)
            for ax, key in ((ax_f1, "f1"), (ax_loss, "eval_loss")):
                pts = [(p["hours"], p[key], p["row"]) for p in curve if p[key] is not None]
                if not pts:
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                if key == "eval_loss":
                    finals.append(ys[-1])
                    highest = max(highest, ys[0])
                line = ax.step(xs, ys, where="post", color=colour, lw=2.8, marker=_METHOD_MARKER.get(method, "o"),
                               ms=7, label=f"{METHOD_LABEL.get(method, method)} ({len(rows)} trials)"
                               if ax is ax_f1 else None, gid="method")[0]
                colour = line.get_color()
                stopped = [(x, y) for x, y, r in pts if r["status"] == "stopped_early"]
                if stopped:
                    ax.plot(*zip(*stopped), ls="none", marker="x", ms=13, mew=3, color=colour, gid="stopped")
                alloc = (allocated or {}).get(method)
                if _finite(alloc) and alloc > xs[-1]:
                    ax.plot([xs[-1], alloc], [ys[-1], ys[-1]], ls=":", lw=2.2, color=colour, gid="allocated")
                    ax.plot([alloc], [ys[-1]], ls="none", marker="|", ms=18, mew=2.5, color=colour)
                if key == "eval_loss" and near is not None:
                    y = next(p["eval_loss"] for p in curve if p["hours"] >= near and p["eval_loss"] is not None)
                    ax.plot([near], [y], ls="none", marker="*", ms=22, color=colour, markeredgecolor="black",
                            zorder=5, gid="near_best")
        if finals and highest > 1.6 * max(finals) > 0:
            # one method's first, untrained-looking trials (a grid's lowest learning rate) would
            # squeeze the others into a line at the bottom: cut the axis, and say so on it
            top = 1.6 * max(finals)
            ax_loss.set_ylim(top=top)
            ax_loss.text(0.98, 0.97, f"axis cut at {top:.2f}:\nhigher losses are above it", transform=ax_loss.transAxes,
                         ha="right", va="top", fontsize=12, color="0.3", gid="axis_cut")
        ax_f1.set(title="best F1 so far (higher is better)", xlabel=f"cumulative {_hours_label(basis)}",
                  ylabel=F1_LABEL)
        ax_loss.set(title="lowest eval loss so far (lower is better)", xlabel=f"cumulative {_hours_label(basis)}",
                    ylabel=LOSS_LABEL)
        handles, labels = ax_f1.get_legend_handles_labels()
        from matplotlib.lines import Line2D
        extra = [(Line2D([], [], ls="none", marker="x", ms=11, mew=3, color="0.2"), "trial stopped early"),
                 (Line2D([], [], ls="none", marker="*", ms=18, color="0.6", markeredgecolor="black"),
                  f"within {NEAR_BEST:.0%} of the method's\nlowest eval loss"),
                 (Line2D([], [], ls=":", lw=2.2, color="0.2"), "rest of the job's allocation\n(idle, start-up)")]
        handles += [h for h, _ in extra]
        labels += [text for _, text in extra]
        fig.legend(handles, labels, loc="outside right center", title="trials in the order they started")
        title = f"What each method found for the {basis}-hours it spent"
        fig.suptitle(title)
        return title

    return _draw(path, (17, 7), draw)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, F1) points no other point beats on both (cheaper or equal AND better or equal F1),
    by increasing cost: the cheapest way to each level of F1."""
    front, best = [], -math.inf
    for cost, f1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if f1 > best:
            front.append((cost, f1))
            best = f1
    return front


def plot_f1_vs_cost(by_method: dict[str, list[dict]], path, basis: str | None = None) -> dict:
    """Every trial of every method: its F1 against the device-hours it held (its own row), one
    marker shape and colour per method, hollow if stopped early; the Pareto front over all trials
    (pareto_front) as a black dashed staircase, its trials labelled."""
    all_rows = [r for rows in by_method.values() for r in rows]
    basis = basis or cost_basis(all_rows)
    col = "gpu_hours" if basis == "GPU" else "cpu_hours"
    usable = {m: [r for r in rows if _finite(r.get(col)) and _finite(r.get("f1"))] for m, rows in by_method.items()}
    if not any(usable.values()):
        raise PlotError(f"no trial with both {col} and F1: nothing to plot")

    def draw(fig):
        ax = fig.subplots()
        for method, rows in usable.items():
            colour = _METHOD_COLOUR.get(method, "tab:purple")
            marker = _METHOD_MARKER.get(method, "o")
            done = [r for r in rows if r["status"] != "stopped_early"]
            stopped = [r for r in rows if r["status"] == "stopped_early"]
            name = METHOD_LABEL.get(method, method)
            if done:
                ax.scatter([r[col] for r in done], [r["f1"] for r in done], s=140, marker=marker, color=colour,
                           edgecolors="black", linewidths=0.8, zorder=3, gid="trial", label=name)
            if stopped:
                ax.scatter([r[col] for r in stopped], [r["f1"] for r in stopped], s=140, marker=marker,
                           facecolors="none", edgecolors=colour, linewidths=2.2, zorder=3, gid="stopped",
                           label=f"{name}, stopped early")
        owner = {}
        for method, rows in usable.items():
            for r in rows:
                owner.setdefault((r[col], r["f1"]), (method, r["trial_id"]))
        front = pareto_front(list(owner))
        if front:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="black", ls="--", lw=2, zorder=2, gid="pareto",
                    label="Pareto front (cheapest trial\nfor each level of F1)")
            for x, y in front:
                m, t = owner[(x, y)]
                ax.annotate(f"{_METHOD_SHORT.get(m, m)} {_short(t)}", (x, y),
                            xytext=(8, -16), textcoords="offset points", fontsize=11, gid="pareto_label")
        ax.set(title="each marker is one trial (hollow: stopped early, so it cost less)",
               xlabel=f"the trial's {_hours_label(basis)}",
               ylabel=F1_LABEL)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        title = f"F1 vs {basis}-hours per trial, all methods"
        fig.suptitle(title)
        return title

    return _draw(path, (15, 7.5), draw)


def compare_plots(by_method: dict[str, list[dict]], out_dir, allocated: dict[str, float | None] | None = None
                  ) -> tuple[list[dict], list[str]]:
    """compare.py's plots in out_dir: best_so_far.png and pareto.png. by_method: method -> its
    compared rows (hpo.report.method_rows); allocated: method -> the job's allocated hours in the
    comparison's unit. Returns (descriptions, warnings); one failing plot does not stop the other."""
    made, warnings = [], []
    basis = cost_basis([r for rows in by_method.values() for r in rows])
    out_dir = Path(out_dir)
    for name, fn in (("best_so_far", lambda: plot_best_so_far(by_method, out_dir / "best_so_far.png",
                                                               allocated, basis)),
                     ("pareto", lambda: plot_f1_vs_cost(by_method, out_dir / "pareto.png", basis))):
        try:
            made.append(fn())
        except PlotError as e:
            warnings.append(f"plot {name} not drawn: {e}")
        except Exception as e:
            warnings.append(f"plot {name} failed: {type(e).__name__}: {e}")
    return made, warnings
