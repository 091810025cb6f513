"""`saferinstruct diff` / `stats`: two committed versions of a small preference dataset in a temp git + DVC repo,
compared by revision and by path; exact counts, examples, funnel deltas and verdict flips."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from dvc_helpers import dvc, git, init_repo, write_jsonl

from saferinstruct.cli import main


def _pair(i: str, category: str = "hate", chosen: str = "I can't help with that.") -> dict:
    return {"id": f"p{i}", "parent_id": f"i{i}", "prompt": f"prompt {i}", "chosen": chosen, "rejected": f"text {i}",
            "category": category, "kind": "safety", "provenance": {}}


def _verdict(i: str, label: str) -> dict:
    return {"id": f"i{i}:instruction", "parent_id": f"i{i}", "label": label, "score": None, "rationale": "",
            "parse_ok": True, "raw": label, "judge": "fake", "cache_key": "k"}


def _commit_version(repo, pairs, test_pairs, verdicts, stats, message):
    write_jsonl(repo / "data/preferences/train.jsonl", pairs)
    write_jsonl(repo / "data/preferences/test.jsonl", test_pairs)
    write_jsonl(repo / "data/instruction_verdicts.jsonl", verdicts)
    (repo / "stats").mkdir(exist_ok=True)
    (repo / "stats/build_preferences.json").write_text(json.dumps(stats))
    dvc(repo, "add", "-q", "data/preferences/train.jsonl", "data/preferences/test.jsonl",
        "data/instruction_verdicts.jsonl")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def versions_repo(tmp_path_factory):
    repo = init_repo(tmp_path_factory.mktemp("diff") / "repo")
    _commit_version(repo, [_pair("1"), _pair("2"), _pair("3", "illegal"), _pair("4", "illegal")], [_pair("9")],
                    [_verdict("1", "unsafe"), _verdict("2", "unsafe"), _verdict("3", "safe")],
                    {"in": 10, "kept": 4, "dropped": {"duplicate": 6}, "seconds": 1.5}, "v1")
    _commit_version(repo, [_pair("1"), _pair("2", chosen="A different, safer answer."), _pair("4", "illegal"),
                           _pair("5", "self-harm"), _pair("6", "self-harm")], [_pair("9")],
                    [_verdict("1", "unsafe"), _verdict("2", "safe"), _verdict("3", "unsafe"), _verdict("4", "safe")],
                    # a different size from v1's stats: git may skip re-hashing a same-size file rewritten within
                    # the same second ("racy git"), which would commit v1's content again
                    {"in": 10, "kept": 5, "dropped": {"duplicate": 5}, "seconds": 12.5}, "v2")
    return repo


def _diff_json(repo, *args):
    result = CliRunner().invoke(main, ["diff", *args, "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_diff_by_revision(versions_repo):
    d = _diff_json(versions_repo, "HEAD~1", "HEAD")
    train = d["splits"]["train"]
    assert (train["a"], train["b"], train["added"], train["removed"], train["changed"], train["unchanged"]) == \
        (4, 5, 2, 1, 1, 2)
    assert train["changed_fields"] == {"chosen": 1}
    assert [e["id"] for e in train["examples"]["added"]] == ["p5", "p6"]
    assert [e["id"] for e in train["examples"]["removed"]] == ["p3"]
    assert train["examples"]["changed"] == [{"id": "p2", "fields": ["chosen"], "a": {"chosen": "I can't help with that."},
                                             "b": {"chosen": "A different, safer answer."}}]
    assert train["categories"] == {"safety/hate": {"a": 2, "b": 2, "delta": 0},
                                   "safety/illegal": {"a": 2, "b": 1, "delta": -1},
                                   "safety/self-harm": {"a": 0, "b": 2, "delta": 2}}
    assert d["splits"]["test"]["unchanged"] == 1 and d["splits"]["test"]["changed"] == 0
    assert d["funnel"]["build_preferences"]["kept"] == {"a": 4, "b": 5, "delta": 1}
    assert d["funnel"]["build_preferences"]["dropped.duplicate"] == {"a": 6, "b": 5, "delta": -1}
    v = d["verdicts"]
    assert (v["a"], v["b"], v["added"], v["removed"], v["flipped"]) == (3, 4, 1, 0, 2)
    assert v["flips"] == {"safe -> unsafe": 1, "unsafe -> safe": 1}
    assert d["a"].startswith("HEAD~1 (") and d["missing"] == {"a": [], "b": []}


def test_diff_examples_limit_and_human_output(versions_repo):
    assert _diff_json(versions_repo, "HEAD~1", "HEAD", "--examples", "1")["splits"]["train"]["examples"]["added"] \
        == [{"id": "p5", "kind": "safety", "category": "self-harm", "prompt": "prompt 5"}]
    out = CliRunner().invoke(main, ["diff", "HEAD~1", "HEAD", "--repo", str(versions_repo)]).output
    assert "[train] rows 4 -> 5: +2 added, -1 removed, ~1 changed, 2 unchanged" in out
    assert "build_preferences.kept: 4 -> 5 (+1)" in out
    assert "seconds" not in out  # timings are noise unless --timing
    assert "unsafe -> safe: 1" in out and "- p3 [safety/illegal] prompt 3" in out


def test_diff_by_path(versions_repo, tmp_path, monkeypatch):
    """A directory laid out like the repository (the workspace) against a revision, and file against file."""
    monkeypatch.chdir(versions_repo)
    d = _diff_json(versions_repo, "HEAD~1", ".")
    assert d["splits"]["train"]["added"] == 2 and d["b"] == "."
    old = tmp_path / "old.jsonl"
    write_jsonl(old, [_pair("1"), _pair("7")])
    shutil.copy(versions_repo / "data/preferences/train.jsonl", tmp_path / "new.jsonl")
    d = _diff_json(versions_repo, str(old), str(tmp_path / "new.jsonl"))
    assert (d["splits"]["file"]["added"], d["splits"]["file"]["removed"], d["splits"]["file"]["unchanged"]) == (4, 1, 1)
    assert d["verdicts"] is None


def test_stats_one_version(versions_repo):
    result = CliRunner().invoke(main, ["stats", "HEAD~1", "--repo", str(versions_repo), "--json"])
    s = json.loads(result.output)
    assert s["splits"]["train"] == {"rows": 4, "categories": {"safety/hate": 2, "safety/illegal": 2}}
    assert s["funnel"]["build_preferences"] == {"in": 10, "kept": 4, "dropped.duplicate": 6, "seconds": 1.5}
    assert s["verdicts"] == {"safe": 1, "unsafe": 2}


def test_bad_revision_missing_data_and_bad_rows_are_one_line_errors(versions_repo, tmp_path):
    result = CliRunner().invoke(main, ["diff", "no-such-rev", "HEAD", "--repo", str(versions_repo)])
    assert result.exit_code == 2 and "error: no-such-rev: not a directory, file, git revision" in result.output
    clone = tmp_path / "clone"  # git history without the DVC cache: the data cannot be read
    git(tmp_path, "clone", "-q", str(versions_repo), str(clone))
    result = CliRunner().invoke(main, ["diff", "HEAD~1", "HEAD", "--repo", str(clone)])
    assert result.exit_code == 2 and "data/preferences/train.jsonl: tracked by DVC but in neither" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_pair("1")) + "\n{not json\n")
    result = CliRunner().invoke(main, ["diff", str(bad), str(bad)])
    assert result.exit_code == 2 and f"{bad}:2: bad JSON" in result.output
