"""`dvc exp run -S` re-runs only what is downstream of the changed param, asserted from DVC's own output and
`dvc status`; a threshold change makes zero model calls (the gateway's call cache does not grow). A tiny two-stage
project in a temp repo: judge (model calls through the gateway, cache dir as a persistent output) -> select."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from dvc_helpers import REPO, copy_pipeline, dvc, git, init_repo, ran_stages

from saferinstruct.cli import main


def _cache_entries(repo) -> int:
    return sum(1 for _ in (repo / "cache" / "judge").glob("*/*.json"))


def _scores(repo) -> list[float]:
    lines = (repo / "data" / "instruction_verdicts.jsonl").read_text().splitlines()
    return [json.loads(line)["score"] for line in lines]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = init_repo(tmp_path_factory.mktemp("exp") / "repo")
    copy_pipeline(repo)
    first = dvc(repo, "repro")
    assert ran_stages(first.stdout) == {"judge", "select"}
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    return repo


def test_threshold_change_reruns_only_select_with_zero_calls(project):
    calls_before, judge_stats = _cache_entries(project), (project / "stats/judge.json").read_text()
    assert calls_before == 12
    out = dvc(project, "exp", "run", "-S", "select.threshold=0.3", "-n", "thr03").stdout
    assert ran_stages(out) == {"select"}
    assert "Stage 'judge' didn't change, skipping" in out
    assert _cache_entries(project) == calls_before  # no model call was made
    assert (project / "stats/judge.json").read_text() == judge_stats
    kept = json.loads((project / "stats/select.json").read_text())["kept"]
    assert kept == sum(s >= 0.3 for s in _scores(project))
    assert "up to date" in dvc(project, "status").stdout

    # the experiment is a version `saferinstruct diff` can name
    result = CliRunner().invoke(main, ["diff", "HEAD", "thr03", "--repo", str(project), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["splits"]["train"]["added"] == kept - sum(s >= 0.5 for s in _scores(project))
    assert d["splits"]["train"]["removed"] == 0 and d["verdicts"]["flipped"] == 0


def test_judge_param_change_reruns_judge_and_downstream(project):
    """The positive control: a change upstream of the model calls pays for exactly the new calls."""
    before = _cache_entries(project)
    out = dvc(project, "exp", "run", "-S", "judge.options.template='v2 {h}'", "-n", "judge-v2").stdout
    assert ran_stages(out) == {"judge", "select"}
    stats = json.loads((project / "stats/judge.json").read_text())
    assert (stats["calls"], stats["cache_hits"]) == (12, 0)
    assert _cache_entries(project) == before + 12


def test_real_pipeline_selection_params_make_no_model_calls():
    """In the project's own dvc.yaml, the stages that read selection thresholds (`select.*`) neither depend on the
    model gateway nor own a call cache, and the stages that call models for judging are upstream of them, so
    `dvc exp run -S select.min_score=...` cannot pay for a judge call."""
    stages = (yaml.safe_load((REPO / "dvc.yaml").read_text()) or {}).get("stages", {})
    readers = {name: block for name, block in stages.items()
               if any(str(p).startswith("select.") for p in block.get("params") or [])}
    if not readers:
        pytest.skip("no stage reads select.* params yet")
    for name, block in readers.items():
        deps = [str(d) for d in block.get("deps") or []]
        outs = [next(iter(o)) if isinstance(o, dict) else str(o) for o in block.get("outs") or []]
        assert not any(d.rstrip("/").endswith("saferinstruct/llm") for d in deps), name
        assert not any(o.startswith("cache/") for o in outs), name
    produced = {(next(iter(o)) if isinstance(o, dict) else str(o)): n for n, b in stages.items()
                for o in b.get("outs") or []}
    downstream, frontier = set(), set(readers)
    while frontier:
        downstream |= frontier
        outs = {o for o, n in produced.items() if n in frontier}
        frontier = {n for n, b in stages.items() if n not in downstream
                    and any(str(d) in outs for d in b.get("deps") or [])}
    assert "judge_instructions" not in downstream
