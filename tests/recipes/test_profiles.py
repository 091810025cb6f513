"""Profiles (configs/profiles.yaml): `full` runs as its own DVC experiment from the committed (quick) params with only
its overrides, is reused when already run, and its README block is rendered from the experiment's metrics."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from saferinstruct.cli import main as cli
from saferinstruct.errors import UserError
from saferinstruct.eval.table import markers
from saferinstruct.recipes import ProfileBook, exp_ref, load_profiles, lookup, run_profile

from test_recipe_compare import _fake_exp_run, _git, _snapshot, repo  # noqa: F401  (the fixture)

BOOK = ProfileBook.model_validate({"profiles": {"full": {"description": "more", "set": {"a.y": 5}}}})


def test_shipped_full_profile_names_real_keys_with_other_values_than_the_quick_default():
    book = load_profiles(REPO / "configs/profiles.yaml")
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    full = book.profiles["full"].set
    assert full and all(lookup(committed, key) != value for key, value in full.items())  # each key changes something
    assert full["train_dpo.max_steps"] > lookup(committed, "train_dpo.max_steps")
    readme = (REPO / "README.md").read_text()
    assert all(marker in readme for marker in markers("full")) and "make repro-full" in readme
    assert "saferinstruct profile full" in (REPO / "Makefile").read_text()


def test_profile_runs_once_with_only_its_keys_and_is_reused(repo):  # noqa: F811
    calls: list = []
    run = run_profile(BOOK, "full", repo, execute=_fake_exp_run(repo, calls))
    assert calls == [["dvc", "exp", "run", "--name", "full", "-S", "a.y=5"]] and not run["reused"]
    assert run["rev"] == exp_ref(repo, "full")
    assert run_profile(BOOK, "full", repo, execute=_fake_exp_run(repo, calls))["reused"] and len(calls) == 1


def test_unknown_profile_or_key_fails_before_running(repo):  # noqa: F811
    with pytest.raises(UserError, match="no profile 'huge'.*there: full"):
        run_profile(BOOK, "huge", repo, execute=lambda args: pytest.fail("ran"))
    bad = ProfileBook.model_validate({"profiles": {"full": {"set": {"a.z": 1}}}})
    with pytest.raises(UserError, match="no 'a.z'"):
        run_profile(bad, "full", repo, execute=lambda args: pytest.fail("ran"))


def test_results_table_renders_an_experiments_metrics_into_its_block(repo, monkeypatch):  # noqa: F811
    first, last = markers("full")
    (repo / "README.md").write_text(f"# r\n{first}\nold\n{last}\n")
    (repo / "metrics").mkdir()
    (repo / "metrics/eval.json").write_text((REPO / "tests/eval/fixtures/metrics_eval.json").read_text())
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/full", _snapshot(repo, head))
    (repo / "metrics/eval.json").unlink()  # the workspace lacks it: the table must come from the experiment
    monkeypatch.chdir(repo)
    res = CliRunner().invoke(cli, ["results-table", "--rev", "full", "--block", "full"])
    assert res.exit_code == 0, res.output
    block = (repo / "README.md").read_text().split(first)[1].split(last)[0]
    assert "old" not in block and "metrics/eval.json of full" in block and "advbench" in block
    res = CliRunner().invoke(cli, ["results-table", "--rev", "nosuch", "--block", "full"])
    assert res.exit_code == 2 and "metrics/eval.json at nosuch" in res.output


def test_make_repro_full_target_exists():
    out = subprocess.run(["make", "-n", "repro-full"], cwd=REPO, capture_output=True, text=True)
    assert "saferinstruct profile full" in out.stdout and "results-table --rev full --block full" in out.stdout
