"""The shared trial end to end on the tiny model (hpo.trial, scripts/train.py)."""
import json
import sys
import math

import pytest
import torch

from conftest import run_cli
from hpo.trial import ConfigError, TrialConfig, run_trial

FAST = dict(profile="tiny", train_samples=400, eval_samples=40, batch_size=16, num_threads=2)


def test_eval_loss_falls_and_metrics_json_is_complete(tmp_path):
    reports = []
    rec = run_trial(TrialConfig(**FAST, epochs=2, learning_rate=5e-3, output_dir=str(tmp_path), trial_id="t"),
                    report=lambda m, save: reports.append(m))
    hist = rec["history"]
    assert [h["epoch"] for h in hist] == [1.0, 2.0]
    assert hist[1]["eval_loss"] < hist[0]["eval_loss"]
    # loss over answer tokens only: far below a uniform guess over the vocabulary
    assert hist[1]["eval_loss"] < math.log(512) - 2
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("learning_rate", "batch_size", "weight_decay", "seed", "epochs", "eval_loss", "exact_match",
                "f1", "train_runtime_s", "tokens_per_s", "device", "num_devices"):
        assert on_disk[key] is not None, key
    assert on_disk["device"] == "cpu" and on_disk["num_devices"] == 1
    assert on_disk["tokens_per_s"] > 0 and on_disk["train_runtime_s"] > 0
    # every report carries EM/F1, so a trial stopped early still has them
    assert len(reports) == 2 and all({"eval_loss", "exact_match", "f1", "epoch"} <= set(r) for r in reports)
    # the optimizer holds the lr asked for; weight decay 0 in both groups
    assert {g["lr"] for g in on_disk["optimizer_param_groups"]} == {5e-3}


def test_checkpoint_resume_continues_from_saved_weights(tmp_path):
    """save(dir) in the report hook -> resume_from=dir continues with those weights and epoch count."""
    ck = tmp_path / "ck"

    def hook(metrics, save):
        save(str(ck))
    first = run_trial(TrialConfig(**FAST, epochs=1, learning_rate=5e-3, output_dir=str(tmp_path / "a"),
                                  trial_id="donor"), report=hook)
    state = json.loads((ck / "trial_state.json").read_text())
    assert state["epochs_done"] == 1.0 and state["trial_id"] == "donor"
    resumed = run_trial(TrialConfig(**FAST, epochs=2, learning_rate=5e-3, output_dir=str(tmp_path / "b"),
                                    trial_id="r", resume_from=str(ck)))
    assert [h["epoch"] for h in resumed["history"]] == [2.0]
    # starting from the donor's weights: the loss continues below where the donor ended, which a
    # fresh model after one epoch does not reach
    assert resumed["history"][0]["eval_loss"] < first["history"][0]["eval_loss"]


def test_lr_matters_on_the_tiny_model(tmp_path):
    """The premise of the workshop: HPO on the tiny model is meaningful."""
    good = run_trial(TrialConfig(**FAST, epochs=2, learning_rate=5e-3, output_dir=str(tmp_path / "g")))
    bad = run_trial(TrialConfig(**FAST, epochs=2, learning_rate=1e-4, output_dir=str(tmp_path / "b")))
    assert bad["eval_loss"] > good["eval_loss"] + 0.5


@pytest.mark.parametrize("cfg, needle", [
    (dict(learning_rate=-1e-3), "--learning-rate"),
    (dict(learning_rate=float("nan")), "--learning-rate"),
    (dict(batch_size=0), "--batch-size"),
    (dict(epochs=0), "--epochs"),
    (dict(weight_decay=-0.1), "--weight-decay"),
    (dict(profile="huge"), "--profile"),
    (dict(deepspeed="nope.json"), "--deepspeed"),
])
def test_bad_config_values_are_rejected(cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        TrialConfig(**cfg).resolved()


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "/nonexistent/squad.json"], "dataset path not found"),
    (["--model", "/nonexistent/model-dir"], "model directory not found"),
    (["--learning-rate", "-0.001"], "--learning-rate: must be a positive number"),
    (["--dataset", "BAD_JSON"], "not valid JSON"),
    # hub ids with HF_HUB_OFFLINE=1 and an empty cache: the real loading path, one clear message
    (["--model", "bigscience/bloom-560m"], "could not load model 'bigscience/bloom-560m' (HF_HUB_OFFLINE=1"),
    (["--dataset", "squad"], "could not load dataset 'squad' from the Hugging Face hub (HF_HUB_OFFLINE=1"),
])
def test_cli_bad_inputs_exit_2_with_one_clear_message(tmp_path, root, args, needle):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [')
    args = [str(bad) if a == "BAD_JSON" else a for a in args]
    p = run_cli([sys.executable, str(root / "scripts/train.py"), "--output-dir", str(tmp_path / "o"), *args],
                env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_unknown_option_exits_2(root):
    p = run_cli([sys.executable, str(root / "scripts/train.py"), "--no-such-option"], timeout=60)
    assert p.returncode == 2 and "unrecognized arguments" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.gpu
def test_precision_auto_on_gpu():
    from hpo.trial import choose_precision
    assert choose_precision("auto") in ("bf16", "fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.gpu
def test_tiny_trial_on_gpu_in_mixed_precision(tmp_path):
    rec = run_trial(TrialConfig(**FAST, epochs=2, learning_rate=5e-3, output_dir=str(tmp_path)))
    assert rec["device"].startswith("cuda:") and rec["precision"] in ("bf16", "fp16")
    assert rec["history"][1]["eval_loss"] < rec["history"][0]["eval_loss"]
    assert math.isfinite(rec["f1"])


# ----------------------------------------------------------------------------- precision and fairness
SMALL = dict(profile="tiny", train_samples=160, eval_samples=16, batch_size=16, num_threads=2, learning_rate=5e-3)


def test_fp16_stored_checkpoint_trains_with_fp32_master_weights(tmp_path, tiny_model, tiny_tokenizer):
    """The hub's BLOOM-560M is stored in fp16; transformers 5 would keep that dtype (NaN on CPU)."""
    from transformers import AutoModelForCausalLM
    fp16_dir, fp32_dir = tmp_path / "fp16", tmp_path / "fp32"
    for d, dtype in ((fp16_dir, torch.float16), (fp32_dir, torch.float32)):
        m = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).to(dtype)
        m.save_pretrained(d)
        tiny_tokenizer.save_pretrained(d)
    # the premise: loaded the default way, the fp16 checkpoint gives fp16 parameters
    assert next(AutoModelForCausalLM.from_pretrained(fp16_dir).parameters()).dtype == torch.float16
    runs = {}
    for name, d in (("fp16", fp16_dir), ("fp32", fp32_dir)):
        runs[name] = run_trial(TrialConfig(**SMALL, model=str(d), epochs=2, output_dir=str(tmp_path / f"o{name}")))
    assert runs["fp16"]["weights_dtype"] == "float32" and runs["fp16"]["stored_dtype"] == "float16"
    a, b = runs["fp16"]["eval_loss"], runs["fp32"]["eval_loss"]
    assert math.isfinite(a) and abs(a - b) <= 0.02 * b, (a, b)


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_bf16_only_on_native_hardware(monkeypatch, capability, expected):
    from hpo.trial import choose_precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # True on a V100 too (emulated)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert choose_precision("auto") == expected


def test_eval_loss_is_the_mean_over_answer_tokens_whatever_the_batch_size(tiny_model, tiny_tokenizer, tiny_data):
    from transformers import AutoModelForCausalLM
    from hpo.data import PadCollator, encode_split, load_squad
    from hpo.trial import answer_token_loss
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    feats = encode_split(tiny_tokenizer, load_squad(tiny_data, 10, 23, data_seed=0).validation, 128).features
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    results = {bs: answer_token_loss(model, feats, collate, bs) for bs in (1, 4, 23)}
    losses = {bs: s / n for bs, (s, n) in results.items()}
    assert len({n for _, n in results.values()}) == 1
    assert max(losses.values()) - min(losses.values()) < 1e-5, losses
    # what the Trainer would report (mean of per-batch means) depends on the batch size: the test can fail
    with torch.no_grad():
        batch_means = [float(model(**collate(feats[i:i + 4])).loss) for i in range(0, len(feats), 4)]
    assert abs(sum(batch_means) / len(batch_means) - losses[4]) > 1e-4


def _pause_after_first_epoch(ck):
    class Paused(Exception):
        pass

    def hook(metrics, save):
        save(str(ck))
        raise Paused()
    return hook, Paused


def test_a_paused_trial_resumes_losslessly(tmp_path):
    """PBT pauses members: the resumed one must end exactly where the straight run ends."""
    straight = run_trial(TrialConfig(**SMALL, epochs=2, output_dir=str(tmp_path / "s"), trial_id="m"))
    ck = tmp_path / "ck"
    hook, paused = _pause_after_first_epoch(ck)
    with pytest.raises(paused):
        run_trial(TrialConfig(**SMALL, epochs=2, output_dir=str(tmp_path / "p"), trial_id="m"), report=hook)
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "trial_state.json"} <= \
        {p.name for p in ck.iterdir()}
    resumed = run_trial(TrialConfig(**SMALL, epochs=2, output_dir=str(tmp_path / "r"), trial_id="m",
                                    resume_from=str(ck)))
    assert [h["epoch"] for h in resumed["history"]] == [2.0]
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], abs=1e-4)
    # the schedule continued: linear decay is halfway after 1 of 2 epochs
    assert [g["lr"] for g in resumed["optimizer_param_groups"]] == pytest.approx([5e-3 / 2] * 2)


def test_an_exploit_continues_the_donor_state_with_its_own_lr_and_wd(tmp_path):
    ck = tmp_path / "ck"
    hook, paused = _pause_after_first_epoch(ck)
    with pytest.raises(paused):
        run_trial(TrialConfig(**SMALL, epochs=2, output_dir=str(tmp_path / "d"), trial_id="donor"), report=hook)
    rec = run_trial(TrialConfig(**{**SMALL, "learning_rate": 2e-3}, weight_decay=0.01, epochs=2,
                                output_dir=str(tmp_path / "x"), trial_id="recipient", resume_from=str(ck)))
    groups = rec["optimizer_param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]          # decayed group, then biases/LayerNorm
    assert [g["lr"] for g in groups] == pytest.approx([2e-3 / 2] * 2)  # new lr at the donor's schedule position
    assert rec["resumed_from_trial"] == "donor" and rec["loaded_weights_fingerprint"] == \
        rec["checkpoint_weights_fingerprint"]


def test_the_data_sample_does_not_follow_the_training_seed(tmp_path):
    a = run_trial(TrialConfig(**{**SMALL, "train_samples": 40}, epochs=1, seed=0, output_dir=str(tmp_path / "a")))
    b = run_trial(TrialConfig(**{**SMALL, "train_samples": 40}, epochs=1, seed=1, output_dir=str(tmp_path / "b")))
    c = run_trial(TrialConfig(**{**SMALL, "train_samples": 40}, epochs=1, data_seed=1, output_dir=str(tmp_path / "c")))
    assert a["data_fingerprint"] == b["data_fingerprint"] != c["data_fingerprint"]
    assert a["eval_loss"] != b["eval_loss"]            # the training seed still changes the run
