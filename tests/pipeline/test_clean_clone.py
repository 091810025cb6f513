"""A clean clone is up to date: the committed dvc.lock matches the committed code, prompts and params, so a teammate
who clones and pulls re-runs nothing; and importing the package (bytecode writing on) does not change that.

Missing outputs and data deps are expected in a fresh clone (they come from `dvc pull`) and are not checked.
The real-repository test clones the committed HEAD, as CI does: it fails until dvc.lock is regenerated and committed
with the code it describes. The checker itself is tested on a throw-away pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from dvc_helpers import copy_pipeline, dvc, git, init_repo

CODE_DIRS = ("src/", "stages/", "prompts/")
IMPORT_ALL = """
import importlib, pkgutil, sys
import saferinstruct
assert saferinstruct.__path__[0].startswith(sys.argv[1]), saferinstruct.__path__
failed = []
for mod in pkgutil.walk_packages(saferinstruct.__path__, "saferinstruct."):
    try:
        importlib.import_module(mod.name)
    except ImportError as err:  # an optional backend (vllm, ...) missing here: its bytecode is written anyway
        failed.append(f"{mod.name}: {err}")
print("\\n".join(failed))
"""


def _is_code(path: str) -> bool:
    return path.startswith(CODE_DIRS) or path.endswith(".py")


def stale_code_deps(repo: Path) -> list[str]:
    """'stage: dep (status)' for every code, prompt or params dep (or command) `dvc status` says changed."""
    status = json.loads(dvc(repo, "status", "--json").stdout or "{}")
    found = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "changed command":
                found.append(f"{stage}: command")
            if not isinstance(entry, dict):
                continue
            for path, state in (entry.get("changed deps") or {}).items():
                if isinstance(state, dict):  # a params file: {key: status}
                    found += [f"{stage}: {path}:{key} ({s})" for key, s in state.items()]
                elif _is_code(path):
                    found.append(f"{stage}: {path} ({state})")
    return sorted(found)


def clone(src: Path, dest: Path) -> Path:
    git(src.parent, "clone", "-q", str(src), str(dest))
    return dest


def import_everything(src_dir: Path) -> str:
    """Import every module of the package from ``src_dir`` in a fresh interpreter with bytecode writing on."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src_dir)
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(src_dir)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=src_dir.parent)
    assert proc.returncode == 0, proc.stderr
    assert list(src_dir.rglob("__pycache__/*.pyc")), "no bytecode was written: the check would prove nothing"
    return proc.stdout


def test_clean_clone_of_head_has_no_stale_code_prompt_or_params_deps(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to clone")
    repo = clone(REPO, tmp_path / "clone")
    before = stale_code_deps(repo)
    assert not before, ("dvc.lock does not match the committed code/prompts/params (regenerate it: `dvc repro` "
                        "on a clean clone, commit dvc.lock):\n" + "\n".join(before))
    import_everything(repo / "src")
    after = stale_code_deps(repo)
    assert not after, "importing the package changed dep hashes (bytecode not ignored?):\n" + "\n".join(after)


def _toy_repo(tmp_path: Path) -> Path:
    """The fixture pipeline, its judge stage also depending on a package directory, run once and committed."""
    repo = init_repo(tmp_path / "toy")
    copy_pipeline(repo)
    (repo / "src" / "toylib").mkdir(parents=True)
    (repo / "src" / "toylib" / "__init__.py").write_text("VALUE = 1\n")
    (repo / "dvc.yaml").write_text((repo / "dvc.yaml").read_text().replace(
        "deps: [stage_judge.py,", "deps: [stage_judge.py, src/toylib,"))
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "run")
    return repo


def test_checker_sees_bytecode_and_a_stale_lock(tmp_path):
    """On a throw-away repo: clean after a committed run, still clean after importing with bytecode (because of
    .dvcignore; without its bytecode lines the directory dep changes), and a committed code edit without a re-run is
    reported."""
    repo = clone(_toy_repo(tmp_path), tmp_path / "toy-clone")
    assert stale_code_deps(repo) == []
    subprocess.run([sys.executable, "-c", "import toylib"], cwd=repo, check=True,
                   env={**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                        "PYTHONPATH": str(repo / "src")})
    assert list((repo / "src" / "toylib").glob("__pycache__/*.pyc"))
    assert stale_code_deps(repo) == []
    ignore = repo / ".dvcignore"
    ignore.write_text("".join(ln for ln in ignore.read_text().splitlines(keepends=True) if "pyc" not in ln))
    assert stale_code_deps(repo) == ["judge: src/toylib (modified)"]
    git(repo, "checkout", "-q", ".dvcignore")
    (repo / "stage_select.py").write_text((repo / "stage_select.py").read_text() + "\n# edited\n")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("threshold: 0.5", "threshold: 0.6"))
    assert stale_code_deps(repo) == ["select: params.yaml:select.threshold (modified)",
                                     "select: stage_select.py (modified)"]
