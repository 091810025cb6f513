"""Judge calibration against human labels: exact agreement, kappa, per-class precision/recall on small fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferinstruct.cli import main
from saferinstruct.eval.calibration import calibrate, calibration_report, load_labelled, render_report
from saferinstruct.io import RowError
from saferinstruct.judging.refusal import RefusalKeywordJudge
from saferinstruct.judging.safe_response import SafeResponseJudge
from conftest import FIXTURES

FIX = FIXTURES / "eval"


def test_xstest_layout_is_read_and_mapped():
    rows = load_labelled(FIX / "labelled_xstest.csv")
    assert [r.label for r in rows] == ["compliance", "refusal", "compliance", "refusal", "partial", "compliance",
                                       "compliance", "partial"]
    assert rows[0].id == "1" and rows[0].response.startswith("Use the kill command")


def test_keyword_judge_on_xstest_fixture_exact():
    """Hand-computed: the judge disagrees on row 6 ('Sorry, I don't know.' is a compliance to humans) and row 8
    (a refusal in the body the keyword rules do not cover)."""
    report = calibrate(RefusalKeywordJudge(), load_labelled(FIX / "labelled_xstest.csv"))
    assert (report["n"], report["parse_failures"], report["agreement"], report["kappa"]) == (8, 0, 0.75, 0.6)
    assert report["per_class"]["compliance"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4,
                                                 "predicted": 4}
    assert report["per_class"]["refusal"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2,
                                              "predicted": 3}
    assert report["per_class"]["partial"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2,
                                              "predicted": 1}
    assert report["confusion"] == {"compliance": {"compliance": 3, "refusal": 1, "partial": 0},
                                   "refusal": {"compliance": 0, "refusal": 2, "partial": 0},
                                   "partial": {"compliance": 1, "refusal": 0, "partial": 1}}
    assert report["binary_refusal"] == {"agreement": 0.75, "precision": 0.75, "recall": 0.75, "f1": 0.75,
                                        "support": 4, "predicted": 4}
    text = render_report(report, "refusal_keywords", "labelled_xstest.csv")
    assert "agreement 0.750, kappa 0.600" in text and "partial" in text


def test_generic_layout_all_agree():
    report = calibrate(RefusalKeywordJudge(), load_labelled(FIX / "labelled_generic.jsonl"))
    assert (report["agreement"], report["kappa"]) == (1.0, 1.0)
    assert report["per_class"]["partial"] == {"precision": None, "recall": None, "f1": None, "support": 0,
                                              "predicted": 0}


def test_parse_failures_count_as_disagreement():
    report = calibration_report(["refusal", "compliance"], ["unknown", "compliance"], [False, True])
    assert (report["agreement"], report["parse_failures"]) == (0.5, 1)
    assert report["confusion"]["refusal"] == {"compliance": 0, "refusal": 0, "partial": 0, "unparsed": 1}
    assert report["per_class"]["refusal"]["recall"] == 0.0


def test_bad_inputs_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response,label\nq,a,refusal\nq,a,maybe\n")
    with pytest.raises(RowError, match=r"bad.csv:3: label 'maybe'"):
        load_labelled(bad)
    other = tmp_path / "other.csv"
    other.write_text("question,answer\nq,a\n")
    with pytest.raises(RowError, match="expected columns"):
        load_labelled(other)
    with pytest.raises(ValueError, match="needs a refusal judge"):
        calibrate(SafeResponseJudge(), load_labelled(FIX / "labelled_generic.jsonl"))


def test_calibrate_command_uses_the_configured_judge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("evaluate:\n  judge: {backend: refusal_keywords, task: refusal}\n")
    result = CliRunner().invoke(main, ["calibrate", str(FIX / "labelled_xstest.csv"), "--json", "--out", "c.json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["judge"], report["agreement"], report["kappa"]) == ("refusal_keywords", 0.75, 0.6)
    assert (tmp_path / "c.json").exists()
    text = CliRunner().invoke(main, ["calibrate", str(FIX / "labelled_xstest.csv")]).output
    assert text.startswith("judge refusal_keywords vs human labels") and "refusing*" in text
    missing = CliRunner().invoke(main, ["calibrate", "nope.csv"])
    assert missing.exit_code == 2 and missing.output.startswith("error: nope.csv: file not found")
