"""The workshop text: every numbered question has an answer, the key and the README's reference
tables are filled from the committed reference results (and follow them when they change), and
the break-it patches still apply to the code.

Run: .venv/bin/python -m pytest -q tests/test_workshop.py
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    import sys
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


ak = _load("scripts/answer_key.py")


def test_every_question_of_the_lessons_has_an_answer_in_the_key():
    qs = ak.questions()
    assert len(qs) >= 25 and len(qs) == len(set(qs)), qs          # numbered once each
    for lesson in ak.LESSONS:                                       # every lesson asks something
        n = lesson.split("/")[1][:2]
        assert any(q.startswith(f"{int(n)}.") for q in qs), f"{lesson} has no numbered question"
    assert ak.unanswered((ROOT / "docs" / "answer-key.md").read_text()) == []


def test_a_question_without_an_answer_is_found():
    key = (ROOT / "docs" / "answer-key.md").read_text()
    cut = key.replace("### Q2.3", "### removed", 1)
    assert ak.unanswered(cut) == ["2.3"]
    empty = key.replace("### Q2.3\n", "### Q2.3\n### Q2.3b\n", 1)   # a heading with no text under it
    assert "2.3" in ak.unanswered(empty)


def test_key_readme_and_lessons_are_up_to_date_with_the_reference():
    assert ak.main(["--check"]) == 0, "run: python scripts/answer_key.py"
    text = (ROOT / "docs" / "answer-key.md").read_text()
    assert "{{" not in text
    for lesson in ak.LESSONS:
        assert "{{" not in (ROOT / lesson).read_text(), lesson


def test_numbers_follow_the_reference_files(tmp_path):
    """Change the reference (ASHA's best trial and the manual grid's cost): the facts, the key and
    the README's table change with it — nothing is typed by hand."""
    ref = tmp_path / "laptop"
    shutil.copytree(ROOT / "logs" / "reference" / "laptop", ref)
    before = ak.facts(ref)
    csv = next((ref / "asha").glob("hpo-asha-*.csv"))
    from hpo.schema import read_csv, write_csv
    rows = read_csv(csv)
    rows[-1]["eval_loss"] = 0.5                                      # a new best
    rows[-1]["f1"] = 77.0
    write_csv(rows, csv)
    after = ak.facts(ref)
    assert after["asha.best.eval_loss"] == 0.5 and after["asha.best.trial"] == rows[-1]["trial_id"]
    assert after["winner"] == "ASHA" and before["asha.best.eval_loss"] != 0.5
    assert after["asha.gap_to_grid"] == pytest.approx(before["manual.best.eval_loss"] - 0.5)
    rendered = ak.render("ASHA {{asha.best.eval_loss:.3f}} F1 {{asha.best.f1:.1f}}", after, "t")
    assert rendered == "ASHA 0.500 F1 77.0"
    table = ak.readme_blocks(after)["best"]
    assert f"`{rows[-1]['trial_id']}`" in table and "| 0.500 |" in table


def test_unknown_placeholder_and_block_are_errors():
    with pytest.raises(ak.KeyError_, match=r"unknown placeholder \{\{asha.nope\}\}"):
        ak.render("x {{asha.nope}}", {"asha.best.f1": 1.0}, "t")
    with pytest.raises(ak.KeyError_, match="unknown block"):
        ak.replace_blocks("<!-- reference:nope -->\n<!-- /reference:nope -->", {}, "t")


def test_break_it_patches_apply_to_the_current_code():
    bi = _load("exercises/break_it.py")
    assert bi.check_all() == []
    for name, patch in bi.PATCHES.items():
        assert (ROOT / "docs" / "06-break-it.md").read_text().count(patch) >= 1, patch
    # the recorded symptoms exist for every run, and each patch changed what it should
    import json
    runs = {r["run"]: r for r in json.loads((ROOT / "exercises" / "results.json").read_text())["runs"]}
    assert set(runs) == {r[0] for r in bi.RUNS}
    assert runs["labels"]["eval_tokens"] > runs["baseline"]["eval_tokens"]          # the prompt is scored
    assert runs["weight_decay"]["eval_loss"] == runs["baseline"]["eval_loss"]        # wd 0.01 trained as wd 0
    assert runs["baseline_wd"]["eval_loss"] != runs["baseline"]["eval_loss"]         # ... unlike the healthy one
    assert runs["padding"]["eval_loss"] == runs["baseline"]["eval_loss"]             # loss: no generation
    assert runs["padding"]["f1"] < runs["baseline"]["f1"]                            # answers: damaged
