"""Helpers for tests that build throw-away git + DVC repositories (imported by test_diff, test_remote_s3, ...)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIPELINE = Path(__file__).resolve().parent / "fixtures" / "versions" / "pipeline"


def env(**extra: str) -> dict[str, str]:
    """Subprocess environment: offline, no analytics, this venv's python first on PATH."""
    out = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "GIT_TERMINAL_PROMPT": "0", **extra}
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def run(args: list[str], cwd: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, **extra_env)


def git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd).stdout.strip()


def init_repo(path: Path) -> Path:
    """An empty git + DVC repository with a local identity and a first commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    git(path, "config", "commit.gpgsign", "false")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.autostage", "true")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def copy_pipeline(repo: Path) -> None:
    """The tiny two-stage pipeline (judge with a call cache -> select by threshold) of tests/fixtures/versions."""
    for f in PIPELINE.iterdir():
        if f.is_file():
            shutil.copy(f, repo / f.name)
    (repo / "data").mkdir(exist_ok=True)
    shutil.copy(PIPELINE / "data" / "instructions.jsonl", repo / "data" / "instructions.jsonl")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def ran_stages(output: str) -> set[str]:
    """Stage names DVC reports as run ("Running stage 'x':") in its own output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` (outputs compared before/after a pull)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
