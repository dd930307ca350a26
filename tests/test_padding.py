"""Less padding: batches of similar length (--group-by-length, hpo.data.LengthGroupedSampler).

Run:  .venv/bin/python -m pytest -q tests/test_padding.py          (~15 s: one short tiny trial)

The sampler must cut padding on real SQuAD questions (the committed v2 sample, encoded as the workshop
profile does) and still be a fair training order: every example exactly once per epoch, the same order
for the same seed, a new order each epoch. That a paused trial resumes with the same order is proved by
tests/test_trial.py::test_a_paused_trial_resumes_losslessly, which runs with the option on (its default).
"""
import json
import random
import statistics

import pytest

from hpo.config import PROFILES, TrialConfig, trial_config_from, trial_parser
from hpo.data import LengthGroupedSampler, encode_split, load_squad, megabatch_batches, real_token_share

FIXTURE = "tests/fixtures/squad/squad-v2-sample.json"


@pytest.fixture(scope="module")
def fixture_lengths(root, tiny_tokenizer):
    """Token lengths of the fixture's training questions, encoded as the workshop profile does."""
    prof = PROFILES["workshop"].trial
    splits = load_squad(str(root / FIXTURE), prof["train_samples"], prof["eval_samples"], data_seed=0)
    lengths = [len(f["input_ids"]) for f in encode_split(tiny_tokenizer, splits.train, prof["max_length"]).features]
    assert len(lengths) >= 16 and max(lengths) - min(lengths) > 100      # real questions differ in length
    return lengths


def _random_share(lengths, b, seed, epoch):
    order = list(range(len(lengths)))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return real_token_share(lengths, order, b)


@pytest.mark.parametrize("batch_size", [2, 4, 8])
def test_grouping_raises_the_real_token_share_on_real_squad(fixture_lengths, batch_size):
    shares = {"random": [], "grouped": []}
    for seed in range(3):
        sampler = LengthGroupedSampler(fixture_lengths, batch_size, seed)
        for epoch in range(5):
            shares["random"].append(_random_share(fixture_lengths, batch_size, seed, epoch))
            shares["grouped"].append(real_token_share(fixture_lengths, sampler.order(epoch), batch_size))
    assert statistics.mean(shares["grouped"]) > statistics.mean(shares["random"]) + 0.01, shares


def test_real_token_share_counts_padding_to_the_longest_of_each_batch():
    # batches [10, 4] and [6]: 20 real tokens in 2x10 + 1x6 = 26 positions
    assert real_token_share([10, 4, 6], [0, 1, 2], 2) == pytest.approx(20 / 26)
    assert real_token_share([10, 4, 6], [0, 2, 1], 2) == pytest.approx(20 / 24)
    assert real_token_share([10, 4, 6], [1, 2, 0], 1) == 1.0


@pytest.mark.parametrize("n, b", [(37, 4), (40, 8), (5, 8), (1000, 2)])
def test_every_example_exactly_once_per_epoch(n, b):
    lengths = [random.Random(n).randint(20, 500) for _ in range(n)]
    sampler = LengthGroupedSampler(lengths, b, seed=0)
    for epoch in range(3):
        order = sampler.order(epoch)
        assert sorted(order) == list(range(n)) and len(sampler) == n


def test_the_order_depends_only_on_seed_and_epoch(fixture_lengths):
    a, b = LengthGroupedSampler(fixture_lengths, 4, seed=7), LengthGroupedSampler(fixture_lengths, 4, seed=7)
    random.seed(123)                          # the global random state plays no part
    first = a.order(1)
    random.seed(456)
    assert b.order(1) == first
    assert a.order(2) != first                                     # a new order every epoch
    assert LengthGroupedSampler(fixture_lengths, 4, seed=8).order(1) != first
    # iterating follows set_epoch (the Trainer calls it before each epoch), then moves on by itself
    a.set_epoch(1)
    assert list(a) == first and list(a) == a.order(2)


def test_batches_hold_similar_lengths_and_the_longest_comes_first():
    rng = random.Random(0)
    lengths = [rng.randint(50, 500) for _ in range(403)]             # 403 = 50 batches of 8 + 3
    b = 8
    order = LengthGroupedSampler(lengths, b, seed=0).order(0)
    full, tail = order[:400], order[400:]
    assert len(tail) == 3                     # the smaller batch is the last one the DataLoader cuts
    batches = [full[i:i + b] for i in range(0, 400, b)]
    assert max(lengths[i] for i in batches[0]) == max(lengths[i] for i in full)
    # within a batch the spread is far below that of the data set (random batches of 8 span ~350 tokens)
    spread = statistics.mean(max(lengths[i] for i in x) - min(lengths[i] for i in x) for x in batches)
    assert spread < 60, spread
    # grouping is local (groups of megabatch_batches batches), not one global sort: consecutive
    # batches are not in length order, so the order of lengths changes through the epoch
    tops = [max(lengths[i] for i in x) for x in batches]
    assert tops != sorted(tops, reverse=True) and megabatch_batches(403, b) == 12


def test_the_option_is_on_by_default_and_can_be_turned_off(monkeypatch):
    assert TrialConfig().group_by_length is True
    assert trial_config_from(trial_parser().parse_args([])).group_by_length is True
    off = trial_config_from(trial_parser().parse_args(["--no-group-by-length"]))
    assert off.group_by_length is False
    # the manual grid passes a config on as a command line: "off" must survive the trip
    assert "--no-group-by-length" in off.to_argv()
    assert trial_config_from(trial_parser().parse_args(off.to_argv())) == off
    # a Ray driver's options: not given -> the field's default, given -> what was given
    from hpo.search import options
    monkeypatch.setenv("HPO_GPUS", "0")
    assert trial_config_from(options.parse_args("asha", [])).group_by_length is True
    assert trial_config_from(options.parse_args("asha", ["--no-group-by-length"])).group_by_length is False


def test_the_trial_trains_in_the_grouped_order_and_reports_padding_and_memory(root, tmp_path, capsys,
                                                                              tiny_tokenizer):
    """The Trainer really uses the sampler: the real-token share the trial's collator counted is the
    one the sampler's epoch-0 order predicts (and above a random order's)."""
    cfg = TrialConfig(profile="tiny", dataset=str(root / FIXTURE), max_length=512, train_samples=None,
                      eval_samples=4, batch_size=4, epochs=1, num_threads=2, max_new_tokens=2, seed=3,
                      output_dir=str(tmp_path), trial_id="pad")
    from hpo.trial import run_trial
    rec = run_trial(cfg)
    splits = load_squad(str(root / FIXTURE), None, 4, data_seed=0)
    lengths = [len(f["input_ids"]) for f in encode_split(tiny_tokenizer, splits.train, 512).features]
    predicted = real_token_share(lengths, LengthGroupedSampler(lengths, 4, seed=3).order(0), 4)
    assert rec["group_by_length"] is True and rec["train_examples"] == len(lengths)
    assert rec["real_token_share"] == pytest.approx(predicted, abs=1e-4)
    assert predicted > statistics.mean(_random_share(lengths, 4, 3, e) for e in range(5))
    # peak memory: in the record, in metrics.json, in the [eval] line and said at the end
    out = capsys.readouterr().out
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.05 < on_disk["peak_memory_gib"] < 64 and on_disk["peak_memory_what"] == "peak RSS of the process"
    assert f"peak_memory_gib={rec['history'][-1]['peak_memory_gib']:.2f}" in out
    assert "[trial] pad: peak memory" in out and "were real tokens" in out


def test_bench_padding_writes_its_table_and_never_shrinks_the_file(root, tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_padding", root / "bench" / "bench_padding.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "padding.json"
    assert bench.main(["--batch-sizes", "1,4,8", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["profile"] == "workshop" and doc["max_length"] == PROFILES["workshop"].trial["max_length"]
    assert "squad-v2-sample.json" in doc["dataset"] and doc["tokenizer"].startswith("tiny BPE")
    by_b = {e["batch_size"]: e for e in doc["entries"]}
    assert by_b[1]["random_real_token_share"] == by_b[1]["grouped_real_token_share"] == 1.0   # nothing to pad
    assert by_b[8]["grouped_real_token_share"] > by_b[8]["random_real_token_share"]
    assert "| 8 |" in capsys.readouterr().out
    # fewer batch sizes: the file with more entries stays, the new one goes beside it, exit 1
    assert bench.main(["--batch-sizes", "2", "--out", str(out)]) == 1
    assert len(json.loads(out.read_text())["entries"]) == 3
    assert len(json.loads((tmp_path / "padding.new.json").read_text())["entries"]) == 1
    assert "was NOT replaced" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main(["--batch-sizes", "0"])
    assert e.value.code == 2
