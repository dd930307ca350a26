"""The setup check: is this allocation (or this laptop) ready for the workshop? One line per check.

Run:  sbatch experiments/check/run.slurm             # cluster tier: the first job of the day
      bash   experiments/check/run.slurm [--smoke]   # laptop tier (and the tests)
      python experiments/check/driver.py --help      # every option (the job runs that driver; this is its code)

The job boots Ray exactly like the four methods (experiments/common.sh + cluster/ray_cluster.sh),
then this prints, for each check, one line

    [check] PASS <name>: <what was found>
    [check] FAIL <name>: <what is wrong> -> <what to do>

and at the end one `[check] VERDICT: PASS|FAIL ...` line; the exit code is 1 when anything FAILed.
The checks, in the order they run:

  ray        the job's Ray cluster holds every node of the allocation (SLURM_JOB_NUM_NODES; 1 on the
             laptop tier), each with its CPUs and GPUs. (If Ray does not boot at all, run.slurm prints
             the FAIL line itself: the boot ends the job before this driver starts.)
  gpus@NODE  on every node, in a Ray task holding all of that node's GPUs: the GPUs SLURM allocated
             (SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES) against what torch sees. The practice cluster
             (practice/local_slurm.sh) schedules *emulated* GPUs: SLURM hands them out, but there is
             no nvidia-smi and torch sees none. The project tells that case apart by nvidia-smi
             (experiments/common.sh's HPO_CUDA, hpo.search.options.cuda_on_nodes): it is a PASS with a
             note (trials then train on the CPU), while a node WITH nvidia-smi whose torch sees fewer
             GPUs than SLURM allocated is a FAIL (a CPU-only torch build, a missing --nv, ...).
  model      the tier's model is found OFFLINE (HF_HUB_OFFLINE=1 is forced here, as on a compute node
             without internet): its config, its tokenizer, and that its weights file is there — the
             weights are not loaded (the trial does that) and never downloaded. Laptop tier: the tiny
             BLOOM built offline by hpo.tiny; cluster tier: hpo/config.py PROFILES["workshop"]
             (bigscience/bloom-560m) in the HF cache, or whatever --model names.
  data       the tier's data set loads offline (HF_DATASETS_OFFLINE=1) through hpo.data.load_squad, with
             the sample the methods use (the profile's train/eval samples, data_seed): it prints the same
             data fingerprint the methods' CSVs will carry.
  trial      one trial of the real trial code (hpo.trial.run_trial), 1 epoch on the SMOKE sample of
             hpo/config.py, in a Ray task on the LAST node of the allocation (so a worker node, not
             the batch node, proves it can load the model, train and write to the shared filesystem),
             with the resources a trial of the methods gets there (1 GPU when the GPUs are real).
             PASS shows its eval loss, EM/F1 and the seconds it took.

`--smoke` (the tests, and a quick look at a new cluster): the tiny profile whatever the tier — the
tiny model and data are built offline, so it checks SLURM, GPUs, Ray and the trial code without
needing the HF cache. Everything ends within --max-seconds (default 240) after the driver starts;
with Ray's boot (HPO_RAY_BOOT_TIMEOUT_S, 60 s) the job stays under 5 minutes. Nothing runs at import time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hpo.config import PROFILES, SMOKE, ConfigError, TrialConfig, absolute_paths, add_trial_options, \
    trial_config_from

# Forced for the whole check, driver and Ray tasks alike: a compute node has no internet, so the
# cache must hold everything. TRANSFORMERS_OFFLINE is the older name huggingface_hub still reads.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
GPU_PROBE_MAX_S = 90.0       # one node's probe: import torch and ask CUDA (seconds, capped by --max-seconds)
CACHE_DOC = "docs/instructor.md, 'A shared model and data cache'"


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    name: str
    ok: bool
    found: str             # PASS: what was found; FAIL: what is wrong
    fix: str = ""          # FAIL only: what to do

    def line(self) -> str:
        if self.ok:
            return f"[check] PASS {self.name}: {self.found}"
        return f"[check] FAIL {self.name}: {self.found} -> {self.fix}"


class Report:
    """Prints each result as it comes (the log shows progress), then the verdict."""

    def __init__(self, t0: float):
        self.t0, self.results = t0, []

    def add(self, result: Result) -> Result:
        self.results.append(result)
        print(result.line(), flush=True)
        return result

    def verdict(self) -> int:
        failed = [r.name for r in self.results if not r.ok]
        took = time.time() - self.t0
        if failed:
            print(f"[check] VERDICT: FAIL - {len(failed)} of {len(self.results)} checks failed ({', '.join(failed)}) "
                  f"in {took:.0f} s: do what each FAIL line says after '->', then run the check again", flush=True)
            return 1
        print(f"[check] VERDICT: PASS - all {len(self.results)} checks passed in {took:.0f} s: this setup is ready "
              f"for the workshop (next: sbatch experiments/manual/run.slurm, or asha/pbt/bayesopt)", flush=True)
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


# ----------------------------------------------------------------------------- ray
def judge_ray(nodes: list[dict], want_nodes: int, gpus_per_node: int, tier: str) -> Result:
    """nodes: [{"host", "ip", "cpus", "gpus"}] of the alive Ray nodes."""
    desc = ", ".join(f"{n['host']} ({n['ip']}: {n['cpus']:g} CPU, {n['gpus']:g} GPU)" for n in nodes) or "none"
    where = ("the [ray] lines at the top of this log and the per-node logs under "
             f"{os.environ.get('HPO_JOB_DIR', 'logs/check/<job>')}/ray-nodes/")
    if len(nodes) != want_nodes:
        return Result("ray", False, f"{len(nodes)} Ray node(s) for {want_nodes} SLURM node(s): {desc}",
                      f"read {where}; a node that never joins usually has a firewall between the nodes or "
                      "no free ports (cluster/ray_cluster.sh, 'Ports')")
    short = [n for n in nodes if tier == "cluster" and n["gpus"] != gpus_per_node]
    if short:
        return Result("ray", False, f"node(s) {', '.join(n['host'] for n in short)} registered GPUs other than the "
                      f"{gpus_per_node} per node SLURM allocated: {desc}", f"read {where}")
    what = "local Ray runtime (laptop tier)" if tier != "cluster" else "Ray cluster over the allocation"
    return Result("ray", True, f"{len(nodes)} node(s) of {want_nodes} in the {what}: {desc}")


# ----------------------------------------------------------------------------- gpus
def probe_node() -> dict:
    """Runs on a node, in a Ray task holding all of that node's GPUs: what SLURM gave, what torch sees."""
    info = {"node": os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0],
            "slurm_gpus": os.environ.get("SLURM_GPUS_ON_NODE"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nvidia_smi": shutil.which("nvidia-smi")}
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_count=0, names=[], capability=None)
    try:
        info["cuda_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        info["names"] = [torch.cuda.get_device_name(i) for i in range(info["cuda_count"])]
        if info["cuda_count"]:
            info["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    except Exception as e:  # noqa: BLE001 - a broken driver raises many kinds; all mean "torch sees none"
        info["cuda_error"] = _first_line(e)
    return info


def judge_gpus(info: dict, tier: str, ray_gpus: float) -> Result:
    """One node's GPU verdict from probe_node()'s answer (a pure function: the tests call it directly).

    ray_gpus: the GPUs Ray registered for the node (= what the job asked SLURM for per node)."""
    name = f"gpus@{info['node']}"
    seen = int(info.get("cuda_count") or 0)
    build = f"CUDA {info['torch_cuda']}" if info.get("torch_cuda") else "CPU-only build"
    torch_desc = f"torch {info.get('torch')} ({build})"
    names = f": {seen} x {info['names'][0]}" if seen and info.get("names") else ""
    if tier != "cluster":
        return Result(name, True, f"laptop tier, no SLURM allocation: {torch_desc} sees {seen} CUDA GPU(s){names}; "
                                  "the tiny profile trains on the CPU")
    allocated = int(info["slurm_gpus"]) if str(info.get("slurm_gpus") or "").isdigit() else int(ray_gpus)
    visible = f"CUDA_VISIBLE_DEVICES={info.get('cuda_visible_devices') or '(unset)'}"
    if allocated == 0:
        return Result(name, False, f"SLURM allocated no GPU on {info['node']} ({torch_desc} sees {seen})",
                      "submit with GPUs: keep run.slurm's '#SBATCH --gres=gpu:N' (or your site's --gpus-per-node) "
                      "and use a GPU partition (SBATCH_PARTITION=<gpu partition> sbatch ...)")
    if seen >= allocated:
        cap = info.get("capability")
        # (the precision this gives is the trial line's: hpo.trial.choose_precision decides it, once)
        return Result(name, True, f"SLURM allocated {allocated} GPU(s) ({visible}), {torch_desc} sees {seen}"
                                  f"{names}" + (f", compute capability {cap}" if cap else ""))
    if not info.get("nvidia_smi") and seen == 0:
        return Result(name, True, f"SLURM allocated {allocated} GPU(s) ({visible}), {torch_desc} sees none and "
                                  "there is no nvidia-smi: emulated GPUs (the practice cluster) - note: trials train "
                                  "on the CPU there; on a real GPU cluster nvidia-smi must be on PATH "
                                  "(module load cuda?)")
    if not info.get("torch_cuda"):
        fix = ("this torch is a CPU-only build: install the CUDA build in the environment experiments/site.sh "
               "activates (conda env create -f environment.yml, or pip install torch from the PyTorch CUDA index)")
    else:
        fix = ("nvidia-smi is there but CUDA is not usable from torch: check the driver (nvidia-smi on the node), "
               "that nothing resets CUDA_VISIBLE_DEVICES in site.sh, and APPTAINER_NV=1 when running in a container")
    err = f"; {info['cuda_error']}" if info.get("cuda_error") else ""
    return Result(name, False, f"SLURM allocated {allocated} GPU(s) ({visible}) and nvidia-smi is at "
                               f"{info.get('nvidia_smi') or '(none)'}, but {torch_desc} sees {seen}{err}", fix)


# ----------------------------------------------------------------------------- model, data
def _weights_file(model: str) -> Path | None:
    """The weights file of a local model directory or of a hub id in the HF cache (None: not there)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return next((p / f for f in WEIGHT_FILES if (p / f).is_file()), None)
    from huggingface_hub import try_to_load_from_cache
    for f in WEIGHT_FILES:
        hit = try_to_load_from_cache(model, f)
        if isinstance(hit, str):
            return Path(hit)
    return None


def check_model(model: str) -> Result:
    """Config + tokenizer + the weights file of `model` ('tiny', a directory or a hub id), offline."""
    from hpo.data import looks_like_path
    t0 = time.time()
    is_hub = model != "tiny" and not looks_like_path(model) and not Path(model).expanduser().exists()
    if is_hub:
        from huggingface_hub import constants
        where = f"the HF cache {constants.HF_HUB_CACHE}"
        fix = (f"fill the cache once, on a login node with internet and the same HF_HOME: "
               f"hf download {model} --include '*.json' --include model.safetensors ({CACHE_DOC}); "
               "or pass --model DIR (a save_pretrained directory)")
    else:
        where = "a local directory"
        fix = ("give --model a directory written by save_pretrained (config.json, the tokenizer files, "
               "model.safetensors), or a hub id in the HF cache such as bigscience/bloom-560m")
    shown = model
    try:
        if model == "tiny":
            from hpo.tiny import ensure_tiny_model
            fix = "run `python -m hpo.tiny` to see why the tiny model cannot be built (it needs no network)"
            model = str(ensure_tiny_model())
            shown, where = f"tiny BLOOM {model} (built offline by hpo.tiny)", "its directory"
        if not is_hub and not Path(model).expanduser().is_dir():
            return Result("model", False, f"model directory not found: {model}", fix)
        from transformers import AutoConfig, AutoTokenizer
        conf = AutoConfig.from_pretrained(model)
        tok = AutoTokenizer.from_pretrained(model)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, EnvironmentError ...: all mean "not there"
        return Result("model", False, f"{shown}: not found offline in {where} ({_first_line(e)})", fix)
    weights = _weights_file(model)
    if weights is None:
        return Result("model", False, f"{shown}: config and tokenizer found in {where}, but no weights file "
                                      f"({', '.join(WEIGHT_FILES)})", fix)
    layers = getattr(conf, "num_hidden_layers", None) or getattr(conf, "n_layer", "?")
    return Result("model", True, f"{shown}: config ({conf.model_type}, {layers} layers, hidden "
                                 f"{getattr(conf, 'hidden_size', '?')}), tokenizer ({len(tok)} tokens), weights "
                                 f"{weights.name} ({_size(weights)}) - found offline in {where} in "
                                 f"{time.time() - t0:.1f} s")


def check_data(dataset: str, train_samples: int | None, eval_samples: int | None, data_seed: int) -> Result:
    """The methods' sample of `dataset` ('tiny', a path or a hub id) through hpo.data.load_squad, offline."""
    from hpo.data import load_squad, looks_like_path
    t0 = time.time()
    is_hub = dataset != "tiny" and not looks_like_path(dataset) and not Path(dataset).expanduser().exists()
    if is_hub:
        fix = (f"fill the cache once, on a login node with internet and the same HF_HOME: "
               f"python -c \"import datasets; datasets.load_dataset('{dataset}')\" ({CACHE_DOC}); or pass "
               "--dataset DIR (train-v1.1.json + dev-v1.1.json, or a save_to_disk directory)")
    else:
        fix = ("give --dataset a SQuAD JSON file, a directory with train.json + validation.json "
               "(or train-v1.1.json + dev-v1.1.json), or a save_to_disk directory")
    try:
        if dataset == "tiny":
            from hpo.tiny import ensure_tiny_data
            fix = "run `python -m hpo.tiny` to see why the tiny data cannot be built (it needs no network)"
            dataset = str(ensure_tiny_data())
        splits = load_squad(dataset, train_samples, eval_samples, data_seed)
    except Exception as e:  # noqa: BLE001 - DataError, OSError, PermissionError ...
        if "PermissionError" in _first_line(e) or "Permission denied" in str(e):
            fix = ("the datasets cache is read-only, and datasets opens lock files there even to read a cached "
                   "set: the instructor makes them writable once with "
                   "find \"$HF_HOME/datasets\" -name '*.lock' -exec chmod a+rw {} + " f"({CACHE_DOC})")
        return Result("data", False, f"{dataset}: could not be loaded offline ({_first_line(e)})", fix)
    where = ""
    if is_hub:
        import datasets
        where = f" from the cache {datasets.config.HF_DATASETS_CACHE}"
    return Result("data", True, f"{splits.source}{where}: {len(splits.train)} train / {len(splits.validation)} "
                                f"validation questions (data_seed {data_seed}, fingerprint {splits.fingerprint}) - "
                                f"read offline in {time.time() - t0:.1f} s")


# ----------------------------------------------------------------------------- trial
def run_check_trial(config: dict) -> dict:
    """Runs on the last node, in a Ray task: the real trial code, offline; returns its metrics + where/how long."""
    os.environ.update(OFFLINE)               # before transformers/datasets are imported in this worker
    t0 = time.time()
    from hpo.trial import run_trial
    record = run_trial(TrialConfig(**config), started_at=t0)
    return {**record, "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0],
            "seconds": time.time() - t0}


def judge_trial(rec: dict, metrics_file: Path) -> Result:
    if not metrics_file.is_file():
        return Result("trial", False, f"the trial on {rec['node']} finished, but the batch node cannot see its "
                                      f"{metrics_file}", "the repository (logs/) must be on a filesystem every "
                                                         "node of the job shares: submit from there")
    loss = rec.get("eval_loss")
    if not isinstance(loss, (int, float)) or loss != loss or loss in (float("inf"), float("-inf")):
        return Result("trial", False, f"the trial on {rec['node']} ended with eval_loss={loss}",
                      "read its [trial] lines above (precision=, weights_dtype=); a non-finite loss on the first "
                      "epoch means the numbers are wrong, not the hyperparameters")
    peak_gib = rec.get("peak_memory_gib")        # what one trial needs on that node (hpo.trial records it)
    peak = f", peak memory {peak_gib:.2f} GiB" if isinstance(peak_gib, (int, float)) else ""
    return Result("trial", True, f"eval_loss={loss:.4f} exact_match={rec.get('exact_match', 0):.1f} "
                                 f"f1={rec.get('f1', 0):.1f} after {rec.get('epochs', 0):g} epoch on "
                                 f"{rec['node']} ({rec['train_examples']} train / {rec['eval_examples']} eval "
                                 f"questions, {rec['device']} x{rec['num_devices']}, {rec['precision']}) in "
                                 f"{rec['seconds']:.1f} s (setup {rec['setup_s']:.1f}, train {rec['train_s']:.1f}, "
                                 f"eval {rec['eval_s']:.1f}){peak}; metrics.json on the shared filesystem")


# ----------------------------------------------------------------------------- options
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="experiments/check/driver.py",
        description="Setup check: GPUs per node, model and data offline, Ray on every node, one 1-epoch trial. "
                    "One [check] PASS/FAIL line each, then a VERDICT; exit 1 on any FAIL.")
    ap.add_argument("--smoke", action="store_true",
                    help="the tiny profile whatever the tier (model and data built offline): checks SLURM, GPUs, "
                         "Ray and the trial code without the HF cache (the tests use it)")
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="every check ends within this many seconds of the driver's start [default: 240]")
    add_trial_options(ap, run_fields=False, defaults_from_config=False,
                      title=f"the trial (scripts/train.py's options; default: the profile's, 1 epoch on "
                            f"{SMOKE['train_samples']}/{SMOKE['eval_samples']} questions)")
    a = ap.parse_args(argv)
    env_profile = os.environ.get("HPO_PROFILE") or "tiny"
    if a.smoke and a.profile not in (None, "tiny"):
        ap.error(f"--smoke checks the tiny profile; drop --profile {a.profile} (or --smoke)")
    a.profile = "tiny" if a.smoke else (a.profile or env_profile)
    if a.profile not in PROFILES:
        ap.error(f"--profile must be one of {', '.join(PROFILES)}, not '{a.profile}' (HPO_PROFILE?)")
    if not a.max_seconds > 0:
        ap.error(f"--max-seconds must be > 0, got {a.max_seconds:g}")
    absolute_paths(a)
    job_dir = Path(os.environ.get("HPO_JOB_DIR") or Path(__file__).resolve().parents[1] / "logs" / "check" / "local")
    a.output_dir = str(job_dir.resolve() / "trial")
    # The methods' sample for the data check; the SMOKE sample and 1 epoch for the trial, unless given.
    profile = PROFILES[a.profile].trial
    a.data_train_samples = a.train_samples or profile["train_samples"]
    a.data_eval_samples = a.eval_samples or profile["eval_samples"]
    a.trial = trial_config_from(a, profile=a.profile, epochs=a.epochs or 1, trial_id="check",
                                train_samples=a.train_samples or SMOKE["train_samples"],
                                eval_samples=a.eval_samples or SMOKE["eval_samples"], output_dir=a.output_dir)
    try:
        a.resolved = a.trial.resolved()       # one clear message for a bad value, before Ray starts
    except ConfigError as e:
        ap.error(str(e))
    return a


# ----------------------------------------------------------------------------- main
def _ray_nodes(ray) -> list[dict]:
    """Alive nodes, the driver's first, then by host name: the last one is a worker node when there are several."""
    here = ray.util.get_node_ip_address()
    nodes = [{"id": n["NodeID"], "host": n.get("NodeManagerHostname", "?").split(".")[0],
              "ip": n.get("NodeManagerAddress", "?"), "cpus": n["Resources"].get("CPU", 0.0),
              "gpus": n["Resources"].get("GPU", 0.0)} for n in ray.nodes() if n.get("Alive")]
    return sorted(nodes, key=lambda n: (n["ip"] != here, n["host"], n["ip"]))


def _on(ray, node: dict, fn, num_cpus: float, num_gpus: float):
    """fn as a Ray task pinned to `node`. max_calls=1: a fresh worker process each time, so the probe's
    CUDA state (all of the node's GPUs initialised) never leaks into the trial that runs after it (Ray
    only defaults to that for GPU tasks declared in ray.remote, and .options() cannot set it)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return ray.remote(
        num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0, max_calls=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["id"], soft=False))(fn)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.update(OFFLINE)               # before anything imports huggingface_hub / datasets
    t_driver = time.time()
    deadline = t_driver + args.max_seconds
    report = Report(float(os.environ.get("HPO_CHECK_T0") or t_driver))
    tier = os.environ.get("HPO_TIER") or ("cluster" if os.environ.get("SLURM_JOB_ID") else "laptop")
    want_nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or 1) if tier == "cluster" else 1
    gpus_per_node = int(os.environ.get("HPO_GPUS_PER_NODE") or 0)
    cfg = args.resolved
    print(f"[check] tier={tier} profile={args.profile} model={cfg.model} dataset={cfg.dataset} "
          f"nodes={want_nodes} gpus_per_node={gpus_per_node} offline ({', '.join(f'{k}=1' for k in OFFLINE)})",
          flush=True)

    # -- ray: the cluster the job booted (or a local runtime on the laptop tier)
    from hpo.cluster import connect_ray
    ray, nodes = None, []
    try:
        ray = connect_ray()
        nodes = _ray_nodes(ray)
        ray_ok = report.add(judge_ray(nodes, want_nodes, gpus_per_node, tier)).ok
    except Exception as e:  # noqa: BLE001
        ray_ok = False
        report.add(Result("ray", False, f"could not join the job's Ray cluster ({_first_line(e)})",
                          "read the [ray] lines at the top of this log and $HPO_JOB_DIR/ray-nodes/"))
    try:
        # -- gpus@NODE: all probes at once, one per node, each holding all of its node's GPUs
        if nodes:
            probes = [(n, _on(ray, n, probe_node, min(1.0, n["cpus"]), n["gpus"]).remote()) for n in nodes]
            wait_s = max(1.0, min(GPU_PROBE_MAX_S, deadline - time.time()))
            ready, _ = ray.wait([ref for _, ref in probes], num_returns=len(probes), timeout=wait_s)
            for node, ref in probes:
                host = node["host"]
                if ref not in ready:
                    ray.cancel(ref, force=True)
                    report.add(Result(f"gpus@{host}", False, f"no answer from {host} within {wait_s:.0f} s",
                                      f"its Ray worker is stuck or the node is overloaded: read {host}'s logs under "
                                      "$HPO_JOB_DIR/ray-nodes/ and `scontrol show node`"))
                    continue
                try:
                    report.add(judge_gpus(ray.get(ref), tier, node["gpus"]))
                except Exception as e:  # noqa: BLE001
                    report.add(Result(f"gpus@{host}", False, f"the probe failed on {host} ({_first_line(e)})",
                                      "torch must import on every node: the environment site.sh sets up must "
                                      "be the same on all nodes"))

        # -- model and data, here on the batch node, offline
        model_ok = report.add(check_model(cfg.model)).ok
        data_ok = report.add(check_data(cfg.dataset, args.data_train_samples, args.data_eval_samples,
                                        cfg.data_seed)).ok

        # -- trial: on the last node, with what one trial of a method gets there
        if not (ray_ok and nodes and model_ok and data_ok):
            needs = [n for n, ok in (("ray", ray_ok and bool(nodes)), ("model", model_ok), ("data", data_ok)) if not ok]
            report.add(Result("trial", False, f"not run: it needs the {', '.join(needs)} check(s) above to pass",
                              "fix those first"))
        else:
            report.add(_trial(ray, nodes[-1], args, deadline))
    finally:
        if ray is not None:
            ray.shutdown()
    return report.verdict()


def _trial(ray, node: dict, args, deadline: float) -> Result:
    from hpo.search.options import cuda_on_nodes
    # the same rule as the methods: 1 GPU per trial when the GPUs compute, its share of the node's CPUs
    gpus = 1.0 if node["gpus"] >= 1 and cuda_on_nodes() else 0.0
    cpus = max(1.0, float(int(node["cpus"] // max(1.0, node["gpus"])))) if gpus else max(1.0, node["cpus"])
    cfg = asdict(args.trial)
    cfg["num_threads"] = cfg.get("num_threads") or int(cpus)
    metrics_file = Path(args.output_dir) / "metrics.json"
    metrics_file.unlink(missing_ok=True)      # a file left by an earlier check must not count
    budget = deadline - time.time()
    if budget < 10:
        return Result("trial", False, f"not run: only {budget:.0f} s left of --max-seconds {args.max_seconds:g}",
                      "raise --max-seconds; the checks above took unusually long (an overloaded node?)")
    print(f"[check] trial: 1 trial of hpo.trial.run_trial on {node['host']} ({cpus:g} CPU, {gpus:g} GPU), "
          f"{cfg['epochs']:g} epoch, {cfg['train_samples']}/{cfg['eval_samples']} questions, "
          f"at most {budget:.0f} s", flush=True)
    ref = _on(ray, node, run_check_trial, cpus, gpus).remote(cfg)
    ready, _ = ray.wait([ref], timeout=budget)
    if not ready:
        ray.cancel(ref, force=True)
        return Result("trial", False, f"the trial on {node['host']} did not finish within {budget:.0f} s",
                      "read its [trial] lines above (device=, precision=): a trial this slow cannot fit the "
                      "methods' time limits; check that the GPUs compute (gpus@ lines) and the node is not shared")
    # Ray forwards the workers' output to this log asynchronously: let the trial's last lines ([eval],
    # [result], or its traceback) arrive before the verdict on it, and before the runtime goes.
    time.sleep(2.0)
    try:
        rec = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - RayTaskError wraps the trial's own exception
        cause = getattr(e, "cause", None) or e
        return Result("trial", False, f"the trial on {node['host']} failed: {_first_line(cause)}",
                      "its traceback is above (lines prefixed with the node); run the same trial by hand to see it "
                      f"alone: python scripts/train.py --profile {args.profile} --epochs 1 "
                      f"--train-samples {cfg['train_samples']} --eval-samples {cfg['eval_samples']}")
    return judge_trial(rec, metrics_file)


if __name__ == "__main__":
    sys.exit(main())
