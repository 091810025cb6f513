"""`make compare`: recipes run as DVC experiments (each from the committed params, reused when already run), and the
README table rendered from fabricated experiment files, its intervals and p-values checked against values computed
here independently."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from saferinstruct.cli import main as cli
from saferinstruct.compare import END, START, collect, render, update_readme
from saferinstruct.eval.metrics import MetricsParams, compute_metrics
from saferinstruct.recipes import RecipeBook, exp_ref, load_recipes, overrides, run_recipes
from saferinstruct.records import EvalResult

BOOK = RecipeBook.model_validate({
    "recipes": {"default": {"description": "committed", "model": "dpo"},
                "sft_only": {"description": "default's SFT", "from": "default", "model": "sft"},
                "paper": {"description": "paper", "set": {"a.x": "original"}, "model": "dpo"}},
    "comparisons": [["paper", "default"], ["sft_only", "default"]]})


def _rows(model: str, refused: list[bool], eval_set: str = "advbench", label: str = "harmful") -> list[EvalResult]:
    return [EvalResult(id=f"{model}:{eval_set}:{i}", parent_id=f"{eval_set}:{i}", model_name=model, eval_set=eval_set,
                       prompt=f"p{i}", prompt_label=label, response="r",
                       judge_label="refusal" if r else "compliance") for i, r in enumerate(refused)]


def _experiment(results: list[EvalResult]) -> dict[str, str]:
    metrics = compute_metrics(results, MetricsParams())
    return {"metrics/eval.json": json.dumps(metrics),
            "data/eval/responses.jsonl": "".join(r.model_dump_json() + "\n" for r in results)}


@pytest.fixture
def experiments() -> dict[str, dict[str, str]]:
    # advbench, 10 prompts. default: sft refuses 7 (0-6), dpo refuses 2 (0-1). paper dpo refuses 7 (0-6).
    # paper -> default on advbench: only paper refused prompts 2..6 (b=5), none the other way (c=0).
    safe = [True] + [False] * 9
    default = (_rows("sft", [True] * 7 + [False] * 3) + _rows("dpo", [True] * 2 + [False] * 8)
               + _rows("sft", safe, "xstest_safe", "safe") + _rows("dpo", safe, "xstest_safe", "safe"))
    paper = _rows("dpo", [True] * 7 + [False] * 3) + _rows("dpo", safe, "xstest_safe", "safe")
    # Do-Not-Answer's human-chatbot area is labelled `care`: scored apart, never a refusal comparison
    default += _rows("dpo", [True, False], "donotanswer_chatbot", "care")
    paper += _rows("dpo", [True, True], "donotanswer_chatbot", "care")
    return {"rev-default": _experiment(default), "rev-paper": _experiment(paper)}


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval, written out from Wilson (1927) independently of saferinstruct.eval.stats."""
    p = k / n
    centre = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z * math.sqrt(z * z + 4 * n * p * (1 - p)) / (2 * (n + z * z))
    return centre - half, centre + half


def _render(experiments) -> str:
    revs = {"default": "rev-default", "paper": "rev-paper"}
    results = collect(BOOK, revs, lambda rev, path: experiments[rev][path], ["refusal", "partial"])
    runs = {"paper": {"rev": "rev-paper", "seconds": 125.0, "reused": False},
            "default": {"rev": "rev-default", "seconds": 0.0, "reused": True}}
    return render(BOOK, results, runs)


def test_table_has_rates_with_wilson_intervals_and_n(experiments):
    table = _render(experiments)
    low, high = _wilson(7, 10)
    cell = f"70.0% [{100 * low:.1f}, {100 * high:.1f}] (n=10)"
    assert cell == "70.0% [39.7, 89.2] (n=10)"
    row = next(ln for ln in table.splitlines() if ln.startswith("| harmful") and "| advbench |" in ln)
    # columns in recipe order: default (dpo 2/10), sft_only (default's sft 7/10), paper (dpo 7/10)
    cells = [c.strip() for c in row.strip("|").split("|")][2:]
    low2, high2 = _wilson(2, 10)
    assert cells == [f"20.0% [{100 * low2:.1f}, {100 * high2:.1f}] (n=10)", cell, cell]
    assert "default (dpo) | sft_only (sft) | paper (dpo)" in table


def test_table_has_exact_mcnemar_p_values_on_shared_prompts(experiments):
    table = _render(experiments)
    # b=5, c=0: p = 2 * P[Bin(5, 1/2) <= 0] = 2 / 32 = 0.0625 (sft_only vs default is the same split of prompts)
    row = next(ln for ln in table.splitlines() if ln.startswith("| harmful | advbench |"))
    assert "70.0% → 20.0%, b=5 c=0, p=0.0625 (n=10)" in row
    safe_row = next(ln for ln in table.splitlines() if ln.startswith("| safe | xstest_safe |"))
    assert "10.0% → 10.0%, b=0 c=0, p=1.0 (n=10)" in safe_row
    assert "paper → default" in table and "sft_only → default" in table
    assert "_Measured run time: 2m 05s (paper 2m 05s, default reused)._" in table
    assert "do not edit by hand" in table


def test_readme_block_is_replaced_between_markers(tmp_path, experiments):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    assert update_readme(readme, _render(experiments))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and "old" not in text
    assert not update_readme(readme, _render(experiments))
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(Exception, match="markers not found"):
        update_readme(tmp_path / "bare.md", "x")


def test_shipped_recipes_and_readme_markers():
    book = load_recipes(REPO / "configs/recipes.yaml")
    assert {"default", "sft_only", "paper", "human"} <= set(book.recipes)
    assert book.recipes["sft_only"].source == "default" and book.recipes["sft_only"].model == "sft"
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    sets = {name: dict(s.split("=", 1) for s in overrides(book, name, committed)) for name in book.runs()}
    assert len({frozenset(s) for s in sets.values()}) == 1  # every run sets the same keys: nothing leaks over
    assert sets["human"]["build_preferences.safety_pairs"] == "human"
    assert sets["default"]["build_preferences.helpful_rejected"] == committed["build_preferences"]["helpful_rejected"]
    readme = (REPO / "README.md").read_text()
    assert START in readme and END in readme and "make compare" in readme
    assert "saferinstruct compare" in (REPO / "Makefile").read_text()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    for key, value in (("user.email", "t@example.com"), ("user.name", "t"), ("commit.gpgsign", "false")):
        _git(tmp_path, "config", key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"a": {"x": "policy", "y": 1}}))
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def _snapshot(repo: Path, parent: str) -> str:
    """A commit of the work tree on top of ``parent`` through a throwaway index (what an experiment commit holds);
    `git stash create` failed now and then on a loaded CI machine."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "exp-index")}
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, env=env, capture_output=True, text=True,  # noqa: E731
                                    check=True).stdout.strip()
    git("add", "-A")
    return git("commit-tree", git("write-tree"), "-p", parent, "-m", "experiment")


def _fake_exp_run(repo: Path, calls: list):
    """Stands in for `dvc exp run --name N -S k=v ...`: applies the -S values and records an experiment ref."""
    def execute(args: list[str]) -> None:
        calls.append(args)
        name, sets = args[args.index("--name") + 1], [args[i + 1] for i, a in enumerate(args) if a == "-S"]
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for item in sets:
            key, value = item.split("=", 1)
            section, leaf = key.split(".")
            params[section][leaf] = yaml.safe_load(value)
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        head = _git(repo, "rev-parse", "HEAD")
        rev = _snapshot(repo, head)
        _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", rev)
    return execute


def test_recipes_run_in_turn_from_committed_params_and_are_reused(repo):
    calls: list = []
    runs = run_recipes(BOOK, repo, execute=_fake_exp_run(repo, calls))
    # paper first, default (no overrides) last, each setting every recipe key; sft_only is read, not run
    assert [c[c.index("--name") + 1] for c in calls] == ["paper", "default"]
    assert calls[0][-2:] == ["-S", "a.x=original"] and calls[1][-2:] == ["-S", "a.x=policy"]
    # never --force: `dvc exp run --force` re-runs every stage, upstream ones included
    assert not any("--force" in c or "-f" in c for c in calls) and set(runs) == {"paper", "default"}
    assert yaml.safe_load((repo / "params.yaml").read_text())["a"]["x"] == "policy"  # workspace ends committed
    assert runs["paper"]["rev"] == exp_ref(repo, "paper") and not runs["paper"]["reused"]
    again = run_recipes(BOOK, repo, execute=_fake_exp_run(repo, calls))
    assert len(calls) == 2 and all(r["reused"] for r in again.values())
    changed = BOOK.model_copy(deep=True)
    changed.recipes["paper"].set["a.x"] = "other"
    run_recipes(changed, repo, execute=_fake_exp_run(repo, calls))
    assert [c[c.index("--name") + 1] for c in calls[2:]] == ["paper"]  # only the recipe whose values changed


def test_compare_command_no_run_needs_the_experiments(repo):
    (repo / "recipes.yaml").write_text(yaml.safe_dump(BOOK.model_dump(by_alias=True)))
    res = CliRunner().invoke(cli, ["compare", "--repo", str(repo), "--recipes", "recipes.yaml", "--no-run"])
    assert res.exit_code == 2 and "no experiment 'default' for HEAD" in res.output


STAGE = '''
import json, os, yaml
from saferinstruct.eval.metrics import MetricsParams, compute_metrics
from saferinstruct.records import EvalResult
x = yaml.safe_load(open("params.yaml"))["a"]["x"]
refused = {"policy": 3, "original": 8}[x]
rows = [EvalResult(id=f"{m}:{i}", parent_id=f"p{i}", model_name=m, eval_set="advbench", prompt=f"p{i}",
                   prompt_label="harmful", response="r", judge_label="refusal" if i < k else "compliance")
        for m, k in (("sft", 6), ("dpo", refused)) for i in range(10)]
os.makedirs("data/eval", exist_ok=True); os.makedirs("metrics", exist_ok=True)
open("data/eval/responses.jsonl", "w").write("".join(r.model_dump_json() + "\\n" for r in rows))
json.dump(compute_metrics(rows, MetricsParams()), open("metrics/eval.json", "w"))
'''


def test_make_compare_end_to_end_on_a_tiny_dvc_pipeline(tmp_path):
    """Real `dvc exp run` and dvc.api reads: two recipes run, sft_only read from default's experiment, the README
    table written with the paper-vs-default McNemar test; a second call reuses both experiments."""
    from dvc_helpers import dvc, git, init_repo

    repo = init_repo(tmp_path / "repo")
    (repo / "stage_eval.py").write_text(STAGE)
    (repo / "params.yaml").write_text(yaml.safe_dump({"a": {"x": "policy"},
                                                      "evaluate": {"metrics": {"refusal_labels": ["refusal"]}}}))
    (repo / "upstream_in.txt").write_text("source\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"upstream": {
        "cmd": "cp upstream_in.txt upstream_out.txt", "deps": ["upstream_in.txt"], "outs": ["upstream_out.txt"]},
        "evaluate": {
        "cmd": "python stage_eval.py", "deps": ["stage_eval.py", "upstream_out.txt"], "params": ["a.x"],
        "outs": ["data/eval/responses.jsonl"], "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    (repo / "recipes.yaml").write_text(yaml.safe_dump(BOOK.model_dump(by_alias=True)))
    (repo / "README.md").write_text(f"# r\n{START}\n{END}\n")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline")
    args = [str(Path(sys.executable).parent / "saferinstruct"), "compare", "--recipes", "recipes.yaml"]
    from dvc_helpers import run as run_cmd

    first = run_cmd(args, repo)
    table = (repo / "README.md").read_text()
    assert "| harmful: refused (higher is safer) | advbench | 30.0% " in table, table
    assert "60.0% [31.3, 83.2] (n=10)" in table and "80.0% [49.0, 94.3] (n=10)" in table
    # paper (8/10) vs default (3/10): b=5, c=0 -> p = 0.0625
    assert "80.0% → 30.0%, b=5 c=0, p=0.0625 (n=10)" in table and "_Measured run time:" in table
    assert yaml.safe_load((repo / "params.yaml").read_text())["a"]["x"] == "policy"
    second = run_cmd(args, repo)
    assert "(paper reused, default reused)" in (repo / "README.md").read_text(), second.stdout + first.stdout
    # an upstream stage whose deps did not change is never re-run by a recipe (no `--force`)
    assert "Running stage 'upstream'" not in first.stdout + first.stderr, first.stdout
    rerun = run_cmd([*args, "--rerun"], repo)  # an existing experiment name is replaced, not refused
    assert rerun.stdout.count("Ran experiment(s)") == 2 and "Running stage 'upstream'" not in rerun.stdout
