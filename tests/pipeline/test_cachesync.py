"""`saferinstruct caches pull` without a reachable remote: what `make repro` runs first must never fail the run.

The remote paths (a teammate pays only for changed rows; two branches' caches merge) are in tests/pipeline/test_remote_s3.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dvc_helpers import REPO, copy_pipeline, dvc, files_under, git, init_repo, run


def _cli(repo: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "saferinstruct"), "caches", "pull", *args], repo, check=check)


def _judged_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    copy_pipeline(repo)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "judged")
    return repo


def test_make_repro_pulls_the_caches_before_it_reproduces():
    plan = run(["make", "-n", "repro"], REPO).stdout.splitlines()
    pull = next(i for i, line in enumerate(plan) if "saferinstruct caches pull --best-effort" in line)
    assert any("dvc repro" in line for line in plan[pull + 1:]), plan


def test_no_remote_or_an_empty_one_is_one_line_and_the_local_cache_still_merges(tmp_path):
    repo = _judged_repo(tmp_path)
    entries = files_under(repo / "cache" / "judge")
    lost = sorted(entries)[:3]
    for rel in lost:
        (repo / "cache" / "judge" / rel).unlink()
    (repo / "cache" / "judge" / "local-only.json").write_text("{}", encoding="utf-8")

    strict = _cli(repo)  # no remote configured: an error for a person who asked for the remote's caches...
    assert strict.returncode == 2 and "no DVC remote configured" in strict.stderr
    lenient = _cli(repo, "--best-effort")  # ...and one line for `make repro`, which goes on
    assert lenient.returncode == 0 and len(lenient.stderr.strip().splitlines()) == 1, lenient.stderr
    assert "continuing" in lenient.stderr
    after = files_under(repo / "cache" / "judge")
    assert {k: after[k] for k in entries} == entries  # the lost entries came back from the local DVC cache
    assert "local-only.json" in after  # and nothing local was deleted

    empty = tmp_path / "empty-remote"
    empty.mkdir()
    dvc(repo, "remote", "add", "-d", "team", str(empty))
    git(repo, "commit", "-q", "-am", "remote")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = _cli(clone, "--best-effort")
    assert out.returncode == 0 and "not pushed yet?" in out.stdout and "cache/judge @ HEAD" in out.stdout
    assert not (clone / "cache" / "judge").exists()


def test_offline_merges_another_revision_from_the_local_dvc_cache(tmp_path):
    repo = _judged_repo(tmp_path)
    first = files_under(repo / "cache" / "judge")
    git(repo, "checkout", "-q", "-b", "other")
    rows = (repo / "data" / "instructions.jsonl").read_text(encoding="utf-8").replace("number 3 ", "number 3b ")
    (repo / "data" / "instructions.jsonl").write_text(rows, encoding="utf-8")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other judged")
    git(repo, "checkout", "-q", "main")
    dvc(repo, "checkout", "--force")  # back to main's 12 entries (persisted outputs are not restored otherwise)
    for f in (repo / "cache" / "judge").rglob("*.json"):
        f.unlink()
    out = _cli(repo, "--offline", "--rev", "other", check=True)
    merged = files_under(repo / "cache" / "judge")
    assert set(first) < set(merged) and len(merged) == len(first) + 1, out.stdout
