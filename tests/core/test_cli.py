"""The ``saferinstruct`` command's own surface: ``--version`` and ``stats`` as a funnel table that fits a terminal."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version

import yaml
from click.testing import CliRunner

from conftest import REPO
from saferinstruct.cli import main
from saferinstruct.funnel_table import reasons_cell, summarise_stage
from saferinstruct.versions import data_flow_order

WIDTH = 100


def _stats(path) -> str:
    result = CliRunner().invoke(main, ["stats", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


def _assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"{len(wide)} line(s) over {WIDTH} columns, e.g. {wide[0]!r}"


def _table_row(text: str, stage: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(stage + " ")).split()


def test_version_prints_the_installed_distribution_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"saferinstruct, version {version('saferinstruct')}"


def test_stats_of_the_committed_funnel_fits_100_columns(tmp_path):
    shutil.copytree(REPO / "stats", tmp_path / "stats")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    out = _stats(tmp_path)
    _assert_fits(out)
    stages = [p.stem for p in (REPO / "stats").glob("*.json")]
    rows = [line.split()[0] for line in out.splitlines() if line.split()[:1] and line.split()[0] in stages]
    assert sorted(rows) == sorted(stages), "one table row per stats file"
    kept = json.loads((REPO / "stats/quality_filter.json").read_text())["kept"]
    assert f"{kept:,}" in _table_row(out, "quality_filter")
    # data-flow order: the reversed model is trained before it induces, pairs are built before training on them
    assert rows.index("train_reverse") < rows.index("induce") < rows.index("quality_filter")
    assert rows.index("build_preferences") < rows.index("onpolicy_pairs") < rows.index("train_sft")


def _write_synthetic(root, reasons: int) -> None:
    stats = root / "stats"
    stats.mkdir(parents=True)
    long_name = "a_stage_with_a_really_quite_unreasonably_long_name_for_a_terminal"
    (stats / "filter.json").write_text(json.dumps({
        "rows_in": 12_345_678, "kept": 1_234, "seconds": 98_765.4,
        "rejected": {f"reason_{i:02d}_" + "x" * 60: 1000 - i for i in range(reasons)},
        "gateway": {"calls": 40, "cache_hits": 60, "cost_usd": 1.234}}))
    (stats / f"{long_name}.json").write_text(json.dumps({"in": 5, "kept": 3, "dropped": {"too_short": 2}}))
    (stats / "source.json").write_text(json.dumps({"read": 20, "kept": 10, "dropped_empty": 10}))
    # dvc.yaml lists the consumer first: the table follows the data, not the file
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "filter": {"cmd": "x", "deps": ["data/source.jsonl"], "outs": ["data/filtered.jsonl"]},
        "source": {"cmd": "x", "outs": [{"data/source.jsonl": {"cache": False}}]}}}))


def test_stats_with_long_reason_dicts_fits_and_summarises(tmp_path):
    _write_synthetic(tmp_path, reasons=40)
    out = _stats(tmp_path)
    _assert_fits(out)
    filter_row = _table_row(out, "filter")
    assert filter_row[:4] == ["filter", "12,345,678", "1,234", "39,220"]  # dropped: the sum of the reasons
    assert "+39" in filter_row and filter_row[-4:] == ["40", "60", "$1.23", "98,765"]
    assert _table_row(out, "source")[:5] == ["source", "20", "10", "10", "empty"]
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("source "))) < lines.index(
        next(x for x in lines if x.startswith("filter ")))
    assert "total: 40 model calls, 60 cache hits, $1.23" in out


def test_stats_json_keeps_every_count(tmp_path):
    _write_synthetic(tmp_path, reasons=3)
    result = CliRunner().invoke(main, ["stats", str(tmp_path), "--json"])
    s = json.loads(result.output)
    row = next(r for r in s["funnel_table"] if r["stage"] == "filter")
    assert len(row["reasons"]) == 3 and row["calls"] == 40 and row["kept"] == 1234
    assert s["funnel"]["filter"]["gateway.cost_usd"] == 1.234


def test_summarise_stage_reads_each_stats_shape():
    evaluate = {"sets": {"read": {"a": 10, "b": 5}, "kept": {"a": 4, "b": 5}},
                "models": {m: {"calls": 9, "cache_hits": 1, "cost_usd": 0.0} for m in ("base", "dpo")}, "seconds": 3}
    row = summarise_stage("evaluate", evaluate)
    assert (row.rows_in, row.kept, row.dropped, row.calls, row.cache_hits) == (15, 9, 6, 18, 2)
    pairs = summarise_stage("build", {"train": 8, "test": 2, "rejected": {"helpful": {"malformed": 3}, "safety": {}}})
    assert (pairs.kept, pairs.dropped, pairs.reasons, pairs.rows_in) == (10, 3, {"helpful.malformed": 3}, None)
    quality = summarise_stage("q", {"rows_in": 10, "kept": 7, "rejected": 3, "by_reason": {"a": 2, "b": 1, "c": 0}})
    assert (quality.dropped, list(quality.reasons)) == (3, ["a", "b"])


def test_reasons_cell_keeps_the_largest_within_width():
    reasons = {"over_cap": 1847, "multi_turn": 749, "too_short": 482}
    assert reasons_cell(reasons, 80) == "over_cap 1,847, multi_turn 749, too_short 482"
    assert reasons_cell(reasons, 30) == "over_cap 1,847, +2 more"
    tight = reasons_cell({"a_very_long_reason_name": 1234, "b": 1}, 16)
    assert len(tight) <= 16 and tight.endswith(" 1,234 +1")


def test_data_flow_order_follows_deps_and_outs():
    stages = {"train": {"deps": ["data/pairs"], "outs": ["models/x"]},
              "pairs": {"deps": ["data/raw"], "outs": ["data/pairs/train.jsonl"]},
              "report": {"deps": ["models/x/config.json"]}, "lonely": {}}
    assert data_flow_order(stages) == ["pairs", "train", "report", "lonely"]
