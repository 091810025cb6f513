"""Plots that answer questions (`dvc plots show`): the dataset funnel and the refusal trade-off written by the
summarize stage, and training curves that are curves (x = step, never a single point)."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dvc_helpers import dvc, git, init_repo

from saferinstruct.eval.stats import wilson_interval
from saferinstruct.summary import funnel_plot_rows, tradeoff_rows

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())


def _summarize_stats_args() -> list[str]:
    """The --stats arguments of the real summarize stage, in its (data-flow) order, that the last committed run
    wrote (a stage added since has no stats file in git yet)."""
    cmd = DVC_YAML["stages"]["summarize"]["cmd"].split()
    paths = [REPO / cmd[i + 1] for i, a in enumerate(cmd) if a == "--stats"]
    return [str(p) for p in paths if p.is_file()]


def _eval_with_one_interval() -> dict:
    doc = copy.deepcopy(json.loads((REPO / "metrics/eval.json").read_text()))
    doc["models"]["dpo"]["harmful"]["overall"]["refusal_ci"] = [0.4, 0.7]
    return doc


def test_summarize_writes_funnel_and_tradeoff_plot_data(load_stage, tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps(_eval_with_one_interval()))
    args = [a for p in _summarize_stats_args() for a in ("--stats", p)]
    out = {name: tmp_path / f"{name}.json" for name in ("summary", "funnel", "funnel_plot", "tradeoff_plot")}
    result = CliRunner().invoke(load_stage("summarize").main, [
        *args, "--eval-metrics", str(tmp_path / "eval.json"), "--summary", str(out["summary"]),
        "--funnel", str(out["funnel"]), "--funnel-plot", str(out["funnel_plot"]),
        "--tradeoff-plot", str(out["tradeoff_plot"])])
    assert result.exit_code == 0, result.output
    funnel = json.loads(out["funnel_plot"].read_text())
    stages = list(dict.fromkeys(r["stage"] for r in funnel))
    assert stages.index("ingest") < stages.index("quality_filter") < stages.index("select_instructions")
    assert not [s for s in stages if s.startswith("train_") or s == "evaluate"]
    qf = {r["reason"]: r["rows"] for r in funnel if r["stage"] == "quality_filter"}
    # the committed stats change with every default run: derive the expectation from the file, not from a past run
    stats = json.loads((REPO / "stats" / "quality_filter.json").read_text())
    top = sorted(((n, r) for r, n in stats["by_reason"].items() if n), reverse=True)[:4]
    assert qf["kept"] == stats["kept"] and sum(qf.values()) == stats["rows_in"]
    assert all(qf[r] == n for n, r in top[:3])  # the largest reasons are drawn by name
    tradeoff = {r["model"]: r for r in json.loads(out["tradeoff_plot"].read_text())}
    assert set(tradeoff) == {"base", "sft", "dpo"}
    assert (tradeoff["dpo"]["harmful_low"], tradeoff["dpo"]["harmful_high"]) == (0.4, 0.7)


def test_funnel_plot_caps_reasons_and_accounts_for_every_dropped_row():
    stats = {"ingest": {"read": 100, "kept": 40, "rejected": {f"r{i}": 10 for i in range(6)}},
             "select": {"in": 40, "kept": 30},  # a total only: the rest is "other reasons"
             "train_sft": {"rows_in": 30, "rows_trained": 30}, "prepare_base": {"seconds": 1.0}}
    rows = funnel_plot_rows(stats, top_reasons=4)
    ingest = [r for r in rows if r["stage"] == "ingest"]
    assert [r["reason"] for r in ingest] == ["kept", "r0", "r1", "r2", "r3", "other reasons"]
    assert sum(r["rows"] for r in ingest) == 100 and {r["rows_in"] for r in ingest} == {100}
    assert [(r["reason"], r["rows"]) for r in rows if r["stage"] == "select"] == [("kept", 30), ("other reasons", 10)]
    assert {r["stage"] for r in rows} == {"ingest", "select"}


def test_tradeoff_interval_is_recomputed_for_files_without_one():
    doc = json.loads((REPO / "metrics/eval.json").read_text())
    entry = doc["models"]["base"]["safe"]["overall"]
    entry.pop("refusal_ci", None)
    row = next(r for r in tradeoff_rows(doc) if r["model"] == "base")
    low, high = wilson_interval(entry["refusal"], entry["judged"])
    assert row["safe_low"] == pytest.approx(low, abs=1e-6) and row["safe_high"] == pytest.approx(high, abs=1e-6)
    assert row["safe_low"] <= row["safe_refused"] <= row["safe_high"] and row["safe_n"] == entry["judged"]


def _tsv_points(path: Path) -> int:
    with path.open() as fh:
        return sum(1 for _ in csv.DictReader(fh, delimiter="\t"))


def test_no_single_point_training_plots():
    """Stages declare no whole DVCLive folder as plots (that drew ~48 plots, 18 of them one point each); each
    defined training plot has x = step and a series with more than one point in the committed run."""
    for name, stage in DVC_YAML["stages"].items():
        declared = [next(iter(e)) if isinstance(e, dict) else e for e in stage.get("plots") or []]
        assert not [p for p in declared if p.startswith("dvclive/")], f"stage {name} plots a whole dvclive folder"
    curves = {name: d for entry in DVC_YAML["plots"] for name, d in entry.items()
              if any(str(f).startswith("dvclive/") for f in d["y"])}
    assert {"train_dpo_loss", "train_dpo_reward_margin", "train_dpo_reward_accuracy", "learning_rate"} <= set(curves)
    for name, definition in curves.items():
        assert definition["x"] == "step", name
        points = [_tsv_points(REPO / f) for f in definition["y"]]
        assert max(points) > 1, f"plot {name} is a single point: {definition['y']}"


@pytest.fixture(scope="module")
def plots_json(tmp_path_factory) -> dict:
    """`dvc plots show --json` in a throw-away repo holding this dvc.yaml, its templates, the committed dvclive and
    eval plot data and the summarize plot data written from the committed stats."""
    repo = init_repo(tmp_path_factory.mktemp("plots") / "repo")
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(REPO / ".dvc/plots", repo / ".dvc/plots")
    for rel in ("dvclive", "plots/eval"):
        shutil.copytree(REPO / rel, repo / rel, ignore=shutil.ignore_patterns("*.json") if rel == "dvclive" else None)
    (repo / "docs").mkdir()
    shutil.copy(REPO / "docs/dev_tradeoff.json", repo / "docs/dev_tradeoff.json")  # the committed record
    stats = {Path(p).stem: json.loads(Path(p).read_text()) for p in _summarize_stats_args()}
    (repo / "plots/funnel.json").write_text(json.dumps(funnel_plot_rows(stats)))
    (repo / "plots/tradeoff.json").write_text(json.dumps(tradeoff_rows(_eval_with_one_interval())))
    git(repo, "add", "-A")
    return json.loads(dvc(repo, "plots", "show", "--json").stdout)


@pytest.mark.parametrize("name", ["funnel", "refusal_tradeoff", "train_dpo_reward_margin",
                                  "eval_refusal_by_category", "dev_tradeoff"])
def test_dvc_renders_the_plot(plots_json, name):
    assert not plots_json.get("errors"), plots_json.get("errors")
    rendered = plots_json["data"][name] if "data" in plots_json else plots_json[name]
    content = rendered[0]["content"]
    assert content["data"]["values"], f"{name}: no data points"
    text = json.dumps(content)
    assert "<DVC_METRIC" not in text, f"{name}: an unfilled template anchor"
