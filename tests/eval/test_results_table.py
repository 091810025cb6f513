"""The README results table: every rate as `rate [95% Wilson CI] (n=judged)`, and a second table of paired exact
McNemar comparisons, rendered from a fixed metrics/eval.json fixture (written by compute_metrics on the fixture rows of
test_eval_metrics.py, keys sorted as the stage writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferinstruct.cli import main as cli
from saferinstruct.eval.table import p_cell, rate_cell, render_table
from saferinstruct.io import RowError

METRICS = Path(__file__).parent / "fixtures" / "metrics_eval.json"

EXPECTED = [
    "| prompts | set | base | sft | dpo |",
    "|---|---|---:|---:|---:|",
    "| harmful: refused (higher is safer) | advbench | 10.0% [1.8, 40.4] (n=10) | 77.8% [45.3, 93.7] (n=9) "
    "| 60.0% [31.3, 83.2] (n=10) |",
    "| harmful: refused (higher is safer) | **overall** | 10.0% [1.8, 40.4] (n=10) | 77.8% [45.3, 93.7] (n=9) "
    "| 60.0% [31.3, 83.2] (n=10) |",
    "| safe: refused (over-refusal, lower is better) | xstest_safe | 0.0% [0.0, 49.0] (n=4) | 50.0% [15.0, 85.0] (n=4) "
    "| 25.0% [4.6, 69.9] (n=4) |",
    "| safe: refused (over-refusal, lower is better) | **overall** | 0.0% [0.0, 49.0] (n=4) | 50.0% [15.0, 85.0] (n=4) "
    "| 25.0% [4.6, 69.9] (n=4) |",
    "| judge parse failures | all | 0 | 1 | 0 |",
]
EXPECTED_COMPARISONS = [
    "| prompts | A → B | n | refused: A → B | only A refused (b) | only B refused (c) | exact McNemar p |",
    "|---|---|---:|---:|---:|---:|---:|",
    "| harmful | base → sft | 9 | 11.1% → 77.8% | 0 | 6 | 0.0312 |",
    "| harmful | sft → dpo | 9 | 77.8% → 66.7% | 2 | 1 | 1.0 |",
    "| harmful | base → dpo | 10 | 10.0% → 60.0% | 0 | 5 | 0.0625 |",
    "| safe | base → sft | 4 | 0.0% → 50.0% | 0 | 2 | 0.5 |",
    "| safe | sft → dpo | 4 | 50.0% → 25.0% | 1 | 0 | 1.0 |",
    "| safe | base → dpo | 4 | 0.0% → 25.0% | 0 | 1 | 1.0 |",
]


def _metrics() -> dict:
    return json.loads(METRICS.read_text())


def test_render_rates_with_intervals_and_paired_comparisons():
    lines = render_table(_metrics()).splitlines()
    assert lines[:7] == EXPECTED
    start = lines.index(EXPECTED_COMPARISONS[0])
    assert lines[start:start + 8] == EXPECTED_COMPARISONS
    assert "exact McNemar" in lines[8] and "Wilson" in lines[8]
    assert lines[-1] == "_Generated from `metrics/eval.json` by `saferinstruct results-table`; do not edit by hand._"


def test_cli_prints_the_table_from_the_metrics_file():
    out = CliRunner().invoke(cli, ["results-table", "--print", "--metrics", str(METRICS)])
    assert out.exit_code == 0, out.output
    assert EXPECTED[2] in out.output and EXPECTED_COMPARISONS[4] in out.output


def test_one_model_has_no_comparison_table():
    metrics = _metrics()
    metrics["models"] = {"base": metrics["models"]["base"]}
    text = render_table(metrics)
    assert "McNemar" not in text and "| prompts | set | base |" in text


def test_metrics_without_intervals_or_comparisons_are_a_clean_error():
    metrics = _metrics()
    del metrics["models"]["sft"]["harmful"]["advbench"]["refusal_ci"]
    with pytest.raises(RowError, match=r"models\.sft\.harmful\.advbench\.refusal_ci.*re-run the evaluate stage"):
        render_table(metrics)
    metrics = _metrics()
    del metrics["comparisons"]
    with pytest.raises(RowError, match="no 'comparisons'.*re-run the evaluate stage"):
        render_table(metrics)


def test_cells():
    entry = {"n": 226, "judged": 226, "refusal_rate": 0.5442, "refusal_ci": [0.479117, 0.607899]}
    assert rate_cell(entry) == "54.4% [47.9, 60.8] (n=226)"
    assert rate_cell({"n": 2, "judged": 0, "refusal_rate": None, "refusal_ci": None}) == "n/a (n=0)"
    assert [p_cell(p) for p in (1.0, 0.0625, 0.09228515625, 0.0004)] == ["1.0", "0.0625", "0.0923", "<0.001"]
