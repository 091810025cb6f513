"""A failed stage leaves the last good results in place.

Metrics, plots and stats are `cache: false` (kept in git, not in the DVC cache), so `dvc checkout` cannot restore
them: DVC must not delete them before a run (`persist: true`), and the stage must replace them only when it succeeds
(all together; a plots directory as a whole, so a plot a run no longer writes does not linger)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from dvc_helpers import dvc, git, init_repo

KINDS = ("outs", "metrics", "plots")


def _entries(block: dict) -> list[tuple[str, str, dict]]:
    """(kind, path, flags) of every output a stage declares."""
    out = []
    for kind in KINDS:
        for entry in block.get(kind) or []:
            path, flags = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            out.append((kind, path, flags or {}))
    return out


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_uncached_outputs_persist(name):
    """DVC deletes a stage's outputs before running it unless they persist; uncached ones would then be lost."""
    lost = [path for _, path, flags in _entries(STAGES[name])
            if flags.get("cache") is False and not flags.get("persist")]
    assert not lost, f"stage {name}: cache: false outputs {lost} need persist: true (a failed run would delete them)"


# The throw-away stage declares exactly what the real evaluate stage declares, and writes like it does: all files
# through one output set, the plots directory through atomic_dir, nothing when the param is bad.
REPORT = '''
import sys, yaml
from pathlib import Path
from saferinstruct.io import atomic_dir, output_set, write_json
p = yaml.safe_load(open("params.yaml"))["report"]
if p["plots"] < 0:
    sys.exit("error: params.yaml report.plots: must be >= 0")
with output_set() as out, atomic_dir("plots/eval") as plots:
    for i in range(p["plots"]):
        write_json(plots / f"plot{i}.json", [{"x": i, "run": p["run"]}])
    out.json("metrics/eval.json", {"run": p["run"]})
    out.json("stats/evaluate.json", {"run": p["run"], "seconds": 1})
    out.text("data/eval/responses.jsonl", "{}\\n")
    Path("cache/evaluate").mkdir(parents=True, exist_ok=True)
    out.text("cache/evaluate/entry.json", "{}")
'''


def _report_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    real = STAGES["evaluate"]
    stage = {"cmd": f"{Path(sys.executable).name} report.py", "deps": ["report.py"],
             "params": ["report.plots", "report.run"], **{k: real[k] for k in KINDS if k in real}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}, sort_keys=False))
    (repo / "report.py").write_text(REPORT)
    return repo


def _params(repo: Path, plots: int, run: int) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump({"report": {"plots": plots, "run": run}}))


def _results(repo: Path) -> dict[str, bytes]:
    files = [repo / "metrics/eval.json", repo / "stats/evaluate.json", *sorted((repo / "plots/eval").glob("*"))]
    return {str(f.relative_to(repo)): f.read_bytes() for f in files if f.is_file()}


def test_failed_run_keeps_results_and_a_good_run_replaces_the_plots(tmp_path):
    repo = _report_repo(tmp_path)
    _params(repo, plots=2, run=1)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "run 1")
    good = _results(repo)
    assert set(good) == {"metrics/eval.json", "stats/evaluate.json", "plots/eval/plot0.json", "plots/eval/plot1.json"}

    _params(repo, plots=-1, run=2)  # the typo: the stage fails before writing anything
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0
    assert _results(repo) == good, "a failed run changed or deleted the last good results"

    _params(repo, plots=1, run=3)  # success with fewer plots: the directory is replaced, nothing stale stays
    dvc(repo, "repro")
    now = _results(repo)
    assert set(now) == {"metrics/eval.json", "stats/evaluate.json", "plots/eval/plot0.json"}
    assert json.loads(now["metrics/eval.json"]) == {"run": 3}
    assert "evaluate" not in dvc(repo, "status", "--json").stdout


def _fake_run(plots: dict[str, list], rate: float) -> SimpleNamespace:
    overall = {"overall": {"refusal_rate": rate, "n": 1}}
    return SimpleNamespace(results=[], plots=plots, stats={"prompts": 1},
                           metrics={"schema_version": 1, "models": {"base": {"harmful": overall, "safe": overall}}})


def test_evaluate_stage_writes_all_or_nothing(load_stage, tmp_path, monkeypatch):
    """The real stage: an error after the model calls leaves every old result; a success with fewer plots removes
    the plot it no longer writes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {}}))
    (tmp_path / "train.jsonl").write_text("")
    stage = load_stage("evaluate")
    args = ["--train", "train.jsonl"]
    monkeypatch.setattr(stage, "run_evaluation", lambda *a, **k: _fake_run({"sets": [{"a": 1}], "categories": []}, 0.5))
    assert CliRunner().invoke(stage.main, args).exit_code == 0
    good = _results(tmp_path)
    assert set(good) == {"metrics/eval.json", "stats/evaluate.json", "plots/eval/categories.json",
                         "plots/eval/sets.json"}

    def broken(*a, **k):
        run = _fake_run({"sets": [{"a": 2}]}, 0.9)
        run.stats["self"] = run.stats  # not JSON: fails while writing the outputs, after the plots and metrics
        return run

    monkeypatch.setattr(stage, "run_evaluation", broken)
    assert CliRunner().invoke(stage.main, args).exit_code != 0
    assert _results(tmp_path) == good

    monkeypatch.setattr(stage, "run_evaluation", lambda *a, **k: _fake_run({"sets": [{"a": 3}]}, 0.7))
    assert CliRunner().invoke(stage.main, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "plots/eval").iterdir()) == ["sets.json"]
    assert not list((tmp_path / "plots").glob(".*")), "a staging directory was left behind"


def test_failed_training_keeps_the_last_curves(tmp_path, tiny_model_dir, monkeypatch):
    """DVCLive logs into a staging folder: a run that fails (here: saving the model) leaves the previous
    dvclive/<stage> as it was; a good run replaces it."""
    from _train_helpers import FIX, copy_model, write_params
    from conftest import import_stage, stage_args

    from saferinstruct.train import common

    base = copy_model(tiny_model_dir, tmp_path / "base")
    live = tmp_path / "dvclive"
    args = stage_args("train_sft", tmp_path, base=base, train=FIX / "preferences.jsonl", live_dir=live,
                      params=write_params(tmp_path / "params.yaml", "train_sft", max_steps=2))
    (live / "plots").mkdir(parents=True)
    (live / "metrics.json").write_text('{"loss": 1.0}')

    def no_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common, "_save", no_disk)
    with pytest.raises(OSError):
        CliRunner().invoke(import_stage("train_sft").main, args, catch_exceptions=False)
    assert (live / "metrics.json").read_text() == '{"loss": 1.0}' and (live / "plots").is_dir()
    monkeypatch.undo()
    result = CliRunner().invoke(import_stage("train_sft").main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((live / "metrics.json").read_text())["loss"] != 1.0
    steps = [int(line.split("\t")[0]) for line in (live / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]]
    assert steps and steps == sorted(set(steps)) and steps[0] == 1, steps  # the trainer's steps, one row each
    assert not list(tmp_path.glob(".dvclive*")), "the staging folder was left behind"
