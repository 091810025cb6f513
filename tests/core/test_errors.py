"""One error hierarchy, one line per failure: user errors derive from UserError and each stage reports them as
`error: ...` (exit 2); an unwritable output names its path; a stage's outputs change together or not at all; an
unreadable call-cache entry is a counted miss."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.errors import UserError, WriteError
from saferinstruct.io import RowError, output_set, write_rows
from saferinstruct.llm.base import BackendConfigError, ChatRequest, make_backend
from saferinstruct.llm.gateway import BudgetExceeded, CallsFailed, Gateway
from saferinstruct.params import ParamsError
from saferinstruct.records import Verdict
from conftest import FIXTURES, REPO

FIX = FIXTURES / "judging"


def test_every_user_error_shares_one_base():
    for cls in (RowError, ParamsError, BackendConfigError, BudgetExceeded, CallsFailed, WriteError):
        assert issubclass(cls, UserError), cls
    assert issubclass(RowError, ValueError) and issubclass(ParamsError, ValueError)  # old `except` clauses still work


def _verdicts(tmp_path: Path, scores: list[float]) -> Path:
    path = tmp_path / "verdicts.jsonl"
    write_rows(path, [Verdict(id=f"ins-{i}:instruction", parent_id=f"ins-{i}", label="unsafe", score=s,
                              parse_ok=True, raw="", judge="j", cache_key="k") for i, s in enumerate(scores, 1)])
    return path


def _select(load_stage, tmp_path: Path, min_score: float, out_dir: Path | None = None):
    out_dir = out_dir or tmp_path / "out"
    params = tmp_path / "params.yaml"
    section = {"label": "unsafe", "keep_unparsed": False}  # the test's own rule, not the live params.yaml
    params.write_text(yaml.safe_dump({"select_instructions": {**section, "min_score": min_score}}))
    verdicts = _verdicts(tmp_path, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    return CliRunner().invoke(load_stage("select_instructions").main, [
        "--filtered", str(FIX / "filtered.jsonl"), "--verdicts", str(verdicts),
        "--out", str(out_dir / "instructions.jsonl"), "--rejected", str(out_dir / "rejected.jsonl"),
        "--stats", str(out_dir / "select.json"), "--params", str(params)])


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_an_output_folder_that_cannot_exist_is_one_line(load_stage, tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the output folder should be\n")
    res = _select(load_stage, tmp_path, 0.6, out_dir=blocker / "selected")
    assert res.exit_code == 2
    assert _one_line(res.output) == (f"error: cannot write {blocker}/selected/instructions.jsonl: "
                                     f"{blocker} is a file, not a folder")


def _fail_fsync_for(monkeypatch, name: str) -> None:
    """A full disk, but only for the temp file of output ``name`` (the ones written before it succeed)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_is_one_line_and_leaves_every_old_output_byte_identical(load_stage, tmp_path, monkeypatch):
    assert _select(load_stage, tmp_path, 0.6).exit_code == 0
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["instructions.jsonl", "rejected.jsonl", "select.json"]

    _fail_fsync_for(monkeypatch, "select.json")  # the stats: the last output the stage writes
    res = _select(load_stage, tmp_path, 0.9)  # other params: every output would change
    assert res.exit_code == 2
    assert _one_line(res.output) == f"error: cannot write {out}/select.json: No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new file, no temp file left behind

    monkeypatch.undo()
    assert _select(load_stage, tmp_path, 0.9).exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} != before


def test_output_set_commits_all_or_nothing(tmp_path):
    (tmp_path / "a.json").write_text("old a\n")
    with pytest.raises(RuntimeError), output_set() as out:
        out.json(tmp_path / "a.json", {"new": 1})
        out.text(tmp_path / "b.md", "new b")
        raise RuntimeError("the stage failed after staging both")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (tmp_path / "a.json").read_text() == "old a\n"
    with output_set() as out:
        out.json(tmp_path / "a.json", {"new": 1})
        out.text(tmp_path / "b.md", "new b")
    assert json.loads((tmp_path / "a.json").read_text()) == {"new": 1} and (tmp_path / "b.md").read_text() == "new b"


def test_a_cache_entry_with_an_unknown_field_is_a_counted_miss(tmp_path):
    requests = [ChatRequest.chat(f"question {i}") for i in range(3)]
    first = Gateway(make_backend("fake"), cache_dir=tmp_path)
    first.complete(requests)
    entry = tmp_path / first.key(requests[1])[:2] / f"{first.key(requests[1])}.json"
    doc = json.loads(entry.read_text())
    entry.write_text(json.dumps({**doc, "logprobs": [0.1]}))  # e.g. written by a newer version

    again = Gateway(make_backend("fake"), cache_dir=tmp_path)
    results = again.complete(requests)
    assert [r.text for r in results] == ["echo: question 0", "echo: question 1", "echo: question 2"]
    stats = again.stats.as_dict()
    assert stats["calls"] == 1 and stats["cache_hits"] == 2 and stats["cache_invalid"] == 1
    assert "logprobs" not in json.loads(entry.read_text())  # recomputed and rewritten


def test_an_input_path_that_is_a_folder_is_one_line(load_stage, tmp_path):
    res = CliRunner().invoke(load_stage("judge_instructions").main, [
        "--filtered", str(FIX / "filtered.jsonl"), "--out", str(tmp_path / "v.jsonl"),
        "--cache", str(tmp_path / "cache"), "--stats", str(tmp_path / "s.json"), "--params", str(tmp_path)])
    assert res.exit_code == 2 and _one_line(res.output) == f"error: {tmp_path}: Is a directory"


def test_budget_stop_is_reported_like_every_user_error(load_stage, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"respond": {"backend": "fake", "options": {"template": "I can't help."},
                                                 "prices": {"prompt": 1e6, "completion": 0.0}, "budget_usd": 1.0}}))
    res = CliRunner().invoke(load_stage("respond").main, [
        "--instructions", str(FIX / "filtered.jsonl"), "--prompt", str(REPO / "prompts" / "expert.md"),
        "--out", str(tmp_path / "r.jsonl"), "--cache", str(tmp_path / "cache"), "--stats", str(tmp_path / "s.json"),
        "--params", str(params), "--no-progress"])  # the error is one line; progress lines are tested apart
    assert res.exit_code == 2 and _one_line(res.output).startswith("error: budget of $1.00 reached")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_cache_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "cache").write_text("not a folder\n")
    gateway = Gateway(make_backend("fake"), cache_dir=tmp_path / "cache")
    with pytest.raises(WriteError, match=r"^cannot write .*/cache/\w\w/\w+\.json: Not a directory$"):
        gateway.complete([ChatRequest.chat("question")])
