"""A pipeline run that pays for model calls with an API key from an env var leaves the key in no output, cache entry,
dvc.lock, metric, DVC cache object, git history or log. The run uses the real openai backend against a loopback
server that rejects any other key, so the key provably was used."""

from __future__ import annotations

import json
import secrets

import pytest
import yaml
from dvc_helpers import copy_pipeline, dvc, git, init_repo, ran_stages, run

from saferinstruct.testing.openai_server import OpenAIServer

KEY_ENV = "SAFERINSTRUCT_TEST_API_KEY"


@pytest.fixture
def api_key() -> str:
    return "sk-test-" + secrets.token_hex(16)


def _files_containing(root, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_api_key_appears_nowhere(tmp_path, api_key):
    repo = init_repo(tmp_path / "repo")
    copy_pipeline(repo)
    with OpenAIServer(api_key=api_key) as server:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["judge"] = {"backend": "openai", "options": {"base_url": server.base_url, "model": "test-model",
                                                            "api_key_env": KEY_ENV, "max_retries": 0}}
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        logs = [dvc(repo, "repro", "-v", **{KEY_ENV: api_key})]
        assert ran_stages(logs[0].stdout) == {"judge", "select"}
        assert server.calls == 12 and {r.authorization for r in server.log} == {f"Bearer {api_key}"}
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "run with a key")
        logs.append(dvc(repo, "exp", "run", "-S", "select.threshold=0.2", **{KEY_ENV: api_key}))
    stats = json.loads((repo / "stats/judge.json").read_text())
    assert stats["calls"] == 12 and stats["outcomes"] == {"ok": 12}

    needle = api_key.encode()
    assert _files_containing(repo, needle) == []  # outputs, cache/, .dvc/cache, .dvc/tmp, dvc.lock, stats, params
    for log in logs:
        assert api_key not in log.stdout + log.stderr
    assert api_key not in run(["git", "log", "-p", "--all"], repo).stdout  # every commit, experiments included
    shown = [dvc(repo, *args).stdout for args in (["metrics", "show", "--json"], ["params", "diff", "HEAD~1", "--json"],
                                                  ["exp", "show", "--json"])]
    assert all(api_key not in s for s in shown)
    assert KEY_ENV in (repo / "params.yaml").read_text()  # the NAME of the variable is config; its value is not


def test_missing_key_is_a_clean_error(tmp_path):
    """Without the variable the stage fails naming the variable, before any call, and writes no output."""
    repo = init_repo(tmp_path / "repo")
    copy_pipeline(repo)
    with OpenAIServer() as server:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["judge"] = {"backend": "openai", "options": {"base_url": server.base_url, "model": "m",
                                                            "api_key_env": KEY_ENV}}
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        proc = dvc(repo, "repro", check=False, **{KEY_ENV: ""})
        assert proc.returncode != 0 and KEY_ENV in proc.stderr + proc.stdout
        assert server.calls == 0
    assert not (repo / "data/instruction_verdicts.jsonl").exists()
