"""Metrics a person can compare: the headline summary and the funnel (stage summarize), DVC metrics that hold
results only (no timings), and `make exp-show` showing experiments side by side in under 200 columns."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dvc_helpers import dvc, git, init_repo

from saferinstruct.io import RowError
from saferinstruct.summary import flat_names, funnel, headline
from conftest import REPO

TIMING = re.compile(r"seconds|runtime|per_second|_per_s$|throughput", re.I)
RESULT_METRICS = {"metrics/eval.json", "metrics/summary.json", "metrics/funnel.json", "metrics/calibration.json"}


def _committed_stats() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "stats").glob("*.json"))}


def _eval() -> dict:
    return json.loads((REPO / "metrics/eval.json").read_text())


def test_headline_reads_the_committed_stats_and_eval():
    stats, evaluation = _committed_stats(), _eval()
    summary = headline(stats, evaluation)
    names = flat_names(summary)
    assert 10 <= len(names) <= 16 and not [n for n in names if TIMING.search(n)]
    assert summary["sources"] == stats["ingest"]["kept"]
    assert summary["unsafe"] == stats["judge_instructions"]["labels"]["unsafe"]
    prefs = stats["build_preferences"]
    assert summary["pairs"] == {"train": prefs["train"], "test": prefs["test"]}
    for model, kinds in evaluation["models"].items():
        assert summary["harmful"][model] == kinds["harmful"]["overall"]["refusal_rate"]
        assert summary["safe"][model] == kinds["safe"]["overall"]["refusal_rate"]


def test_funnel_keeps_counts_and_cost_not_timings():
    stats = {"judge": {"rows_in": 10, "kept": 7, "seconds": 3.2, "gateway": {"calls": 4, "cost_usd": 0.25},
                       "throughput": 9.1},
             "prepare_base": {"seconds": 1.0, "parameters": 5}}
    assert funnel(stats) == {"judge": {"in": 10, "kept": 7, "cost_usd": 0.25}}
    summary_cost = headline({**_committed_stats(), **stats}, _eval())["cost_usd"]
    assert summary_cost == pytest.approx(0.25 + sum(c.get("cost_usd", 0) for c in funnel(_committed_stats()).values()))


def test_a_renamed_stats_key_names_the_file_and_the_key():
    stats = _committed_stats()
    del stats["judge_instructions"]["labels"]
    with pytest.raises(RowError, match=r"stats/judge_instructions.json: no key 'labels.unsafe'"):
        headline(stats, _eval())
    with pytest.raises(RowError, match=r"metrics/eval.json: no 'models' section"):
        headline(_committed_stats(), {"schema_version": 1})


def test_stage_writes_both_files_deterministically(load_stage, tmp_path):
    args = [a for p in sorted((REPO / "stats").glob("*.json")) for a in ("--stats", str(p))]
    args += ["--eval-metrics", str(REPO / "metrics/eval.json")]
    outputs = []
    for run in ("a", "b"):
        out = [tmp_path / run / name for name in ("summary.json", "funnel.json", "funnel_plot.json", "tradeoff.json")]
        result = CliRunner().invoke(load_stage("summarize").main, [  # every output in tmp: never the repo's files
            *args, "--summary", str(out[0]), "--funnel", str(out[1]), "--funnel-plot", str(out[2]),
            "--tradeoff-plot", str(out[3])])
        assert result.exit_code == 0, result.output
        outputs.append([p.read_bytes() for p in out])
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0][1])["quality_filter"]["in"] == _committed_stats()["quality_filter"]["rows_in"]


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_only_results_are_metrics_and_summarize_reads_every_stats_file():
    declared = {next(iter(e)) if isinstance(e, dict) else e
                for block in _stages().values() for e in block.get("metrics") or []}
    assert declared == RESULT_METRICS, "stats/*.json and dvclive metrics are run details: declare them as outs"
    written = {m for name, block in _stages().items() for m in re.findall(r"--stats (\S+)", block["cmd"])
               if name != "summarize"}
    summarize = _stages()["summarize"]
    assert written == set(re.findall(r"--stats (\S+)", summarize["cmd"])) and written <= set(summarize["deps"])


def _make_var(name: str) -> str:
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines() if ln.startswith(f"{name} :="))
    return line.split(":=", 1)[1].strip().replace("$$", "$")


def _compare_repo(tmp_path: Path) -> Path:
    """A throw-away repo holding this pipeline's dvc.yaml, params and result files, a commit, then a workspace
    changing two params: what `make exp-show` sees after an experiment."""
    repo = init_repo(tmp_path / "repo")
    files = ["dvc.yaml", "params.yaml", "metrics/eval.json", *(str(p.relative_to(REPO)) for p in
             [*(REPO / "stats").glob("*.json"), *(REPO / "dvclive").glob("*/metrics.json")])]
    for rel in files:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, repo / rel)
    stats = {p.stem: json.loads(p.read_text()) for p in (repo / "stats").glob("*.json")}
    (repo / "metrics/summary.json").write_text(json.dumps(headline(stats, _eval())))
    (repo / "metrics/funnel.json").write_text(json.dumps(funnel(stats)))
    calibration = REPO / "metrics/calibration.json"  # the calibrate stage's; a stand-in before its first run
    (repo / "metrics/calibration.json").write_text(calibration.read_text() if calibration.exists() else json.dumps(
        {"refusal_judge": {"judge": "refusal_keywords", "files": {"gpt4": {"agreement": 0.9}}}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["select_instructions"]["min_score"], params["judge_instructions"]["threshold"] = 0.85, 0.7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def test_make_compare_fits_a_terminal_and_metrics_hold_no_timings(tmp_path):
    repo = _compare_repo(tmp_path)
    shown = dvc(repo, "exp", "show", "--no-pager", "--only-changed", "--drop", _make_var("COMPARE_DROP"),
                "--keep", _make_var("COMPARE_KEEP"), COLUMNS="1000").stdout
    header = next(ln for ln in shown.splitlines() if "Experiment" in ln).split()
    assert {"harmful.dpo", "safe.sft", "cost_usd", "pairs.train"} <= set(header)
    assert {"select_instructions.min_score", "judge_instructions.threshold"} <= set(header)
    assert not [h for h in header if "/" in h or h.startswith("models.") or TIMING.search(h)]
    # an experiment row is named "├── 1a2b3c4 [exp-name]", wider than "workspace": count that in
    widest = max(len(ln.rstrip()) for ln in shown.splitlines())
    width = widest + len("├── 1a2b3c4 [min-score-085]") - len("workspace")
    assert width < 200, shown
    metrics = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(metrics.values()))["data"]
    assert set(files) == RESULT_METRICS
    leaves = [n for doc in files.values() for n in flat_names(doc["data"])]
    assert not [n for n in leaves if TIMING.search(n)]


def test_compare_is_documented():
    assert "make compare" in (REPO / "README.md").read_text()
    assert os.path.exists(REPO / "docs/sharing.md") and "make compare" in (REPO / "docs/sharing.md").read_text()
