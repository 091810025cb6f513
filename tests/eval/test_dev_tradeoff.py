"""The development-set trade-off record: pooled harmful / safe refusal with Wilson intervals per setting and model,
the human-chatbot area kept out of the harmful pool, re-measures replacing their point; and the committed record is
what the `dev_tradeoff` DVC plot reads."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import REPO

from saferinstruct.eval.dev_tradeoff import HARMFUL_POOL, SAFE_POOL, merge_rows, tradeoff_row

RATES = {"harm_si": {"rate": 0.9, "n": 60}, "harm_redteam": {"rate": 0.5, "n": 40},
         "dna:human_chatbox": {"rate": 1.0, "n": 50}, "dna:human_chatbox:care": {"rate": 0.1, "n": 50},
         "hh_helpful": {"rate": 0.25, "n": 40}, "lookalike": {"rate": 0.0, "n": 36}}


def test_point_pools_counts_not_rates_and_has_wilson_intervals():
    row = tradeoff_row("quick", "models/dpo", RATES)
    assert row["model"] == "quick: dpo" and row["harmful_n"] == 100 and row["safe_n"] == 76
    assert row["harmful_refused"] == 0.74  # (54 + 20) / 100; the chatbot area (all refused) is not in it
    assert row["safe_refused"] == round(10 / 76, 4)  # a mean of the two rates would be 0.125
    # Wilson 95% for 74/100 by hand: centre (0.74 + z^2/200) / (1 + z^2/100) = 0.7311, half-width
    # z * sqrt(0.74 * 0.26 / 100 + z^2 / 40000) / (1 + z^2/100) = 0.0848
    assert (row["harmful_low"], row["harmful_high"]) == (0.6463, 0.816)
    assert row["dev:dna:human_chatbox:care"] == 0.1
    assert "dna:human_chatbox" not in HARMFUL_POOL and set(SAFE_POOL) == {"hh_helpful", "lookalike"}


def test_a_re_measure_replaces_its_point_only():
    old = [tradeoff_row("a", "m/sft", RATES), tradeoff_row("a", "m/dpo", RATES), tradeoff_row("b", "m/dpo", RATES)]
    new = tradeoff_row("a", "m/dpo", {**RATES, "harm_si": {"rate": 0.0, "n": 60}})
    merged = merge_rows(old, [new])
    assert [r["model"] for r in merged] == ["a: sft", "b: dpo", "a: dpo"] and merged[-1]["harmful_refused"] == 0.2


def test_tool_appends_to_the_record(tmp_path):
    rates = tmp_path / "dev.json"
    rates.write_text(json.dumps({"models/sft": RATES, "models/dpo": RATES}))
    record = tmp_path / "tradeoff.json"
    for _ in range(2):  # the second run re-measures the same points
        out = subprocess.run([sys.executable, "tools/dev_tradeoff.py", "quick", str(rates), "--record", str(record)],
                             cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    rows = json.loads(record.read_text())
    assert [r["model"] for r in rows] == ["quick: sft", "quick: dpo"] and "harmful 74.0% (n=100)" in out.stdout


def test_committed_record_feeds_the_dvc_plot():
    plots = {name: spec for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
             for name, spec in entry.items()}
    spec = plots["dev_tradeoff"]
    assert spec["y"] == {"docs/dev_tradeoff.json": "harmful_refused"} and spec["x"] == "safe_refused"
    rows = json.loads((REPO / "docs/dev_tradeoff.json").read_text())
    assert rows and all(0 <= r["harmful_refused"] <= 1 and 0 <= r["safe_refused"] <= 1 for r in rows)
    assert all(r["harmful_low"] <= r["harmful_refused"] <= r["harmful_high"] for r in rows)
