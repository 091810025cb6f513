"""induce: k candidates per text with parent ids, resumable after a crash, templates, and every param reaches the
library call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.induce import InduceParams, build_request, clean_instruction, induce, select_sources, truncate
from saferinstruct.io import read_rows
from saferinstruct.llm.base import ChatResult
from saferinstruct.llm.fake import FakeBackend
from saferinstruct.llm.local import LocalBackend
from saferinstruct.records import InducedInstruction, SourceText

from conftest import FIXTURES, stage_args

SOURCES = FIXTURES / "induce" / "sources.jsonl"
FAST = {"k": 3, "options": {"batch_size": 4, "device": "cpu"}, "generation": {"max_tokens": 6, "temperature": 1.0}}


def _stage(tmp_path, load_stage, model_dir, params: dict, stage=None, cache="cache"):
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({"induce": params}))
    args = [*stage_args("induce", tmp_path, params=pfile, sources=SOURCES, model=model_dir,
                        out=tmp_path / "induced.jsonl", rejected=tmp_path / "rejected.jsonl", cache=tmp_path / cache,
                        stats=tmp_path / "stats.json"), "--no-progress"]
    return CliRunner().invoke((stage or load_stage("induce")).main, args)


def _stats(tmp_path) -> dict:
    return json.loads((tmp_path / "stats.json").read_text())


def test_k_candidates_per_text_with_parent_ids(tmp_path, load_stage, varied_model_dir):
    res = _stage(tmp_path, load_stage, varied_model_dir, FAST)
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "induced.jsonl", InducedInstruction)
    sources = {s.id: s for s in read_rows(SOURCES, SourceText)}
    assert [(r.parent_id, r.candidate) for r in rows] == [(s, c) for s in sources for c in range(3)]
    for r in rows:
        assert r.id == f"{r.parent_id}:{r.candidate}" and r.category == sources[r.parent_id].category
        assert r.source_text == sources[r.parent_id].text and r.model.startswith("transformers:")
        assert len(r.cache_key) == 64
    assert len({r.cache_key for r in rows}) == 15 and len({r.instruction for r in rows}) > 10  # distinct samples
    assert _stats(tmp_path)["calls"] == 15 and _stats(tmp_path)["candidates"] == 15
    # k is a param: one candidate per text now, and those are the first candidates already cached (no generation)
    assert _stage(tmp_path, load_stage, varied_model_dir, {**FAST, "k": 1}).exit_code == 0
    again = read_rows(tmp_path / "induced.jsonl", InducedInstruction)
    assert [r.id for r in again] == [f"{s}:0" for s in sources]
    assert _stats(tmp_path)["calls"] == 0 and _stats(tmp_path)["cache_hits"] == 5


def test_kill_and_resume_generates_nothing_twice(tmp_path, load_stage, varied_model_dir, monkeypatch):
    params = {**FAST, "options": {**FAST["options"], "batch_size": 2}}  # 15 requests -> 8 batches
    batches = {"n": 0}
    real = LocalBackend.generate_batch

    def dies_after_three(self, *args, **kwargs):
        if batches["n"] == 3:
            raise KeyboardInterrupt  # what a kill looks like from inside: no cleanup code of ours runs
        batches["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LocalBackend, "generate_batch", dies_after_three)
    res = _stage(tmp_path, load_stage, varied_model_dir, params)
    assert res.exit_code != 0 and not (tmp_path / "induced.jsonl").exists()
    monkeypatch.setattr(LocalBackend, "generate_batch", real)
    generated = []
    monkeypatch.setattr(LocalBackend, "generate_batch",
                        lambda self, ids, *a, **kw: generated.extend(ids) or real(self, ids, *a, **kw))
    assert _stage(tmp_path, load_stage, varied_model_dir, params).exit_code == 0
    assert len(generated) == 15 - 6  # the 3 finished batches (6 candidates) came from the cache
    assert _stats(tmp_path)["cache_hits"] == 6 and _stats(tmp_path)["calls"] == 9
    resumed = read_rows(tmp_path / "induced.jsonl", InducedInstruction)
    # an uninterrupted run in a fresh cache writes the very same rows: resuming changed nothing
    assert _stage(tmp_path, load_stage, varied_model_dir, params, cache="fresh").exit_code == 0
    assert read_rows(tmp_path / "induced.jsonl", InducedInstruction) == resumed


@pytest.mark.parametrize("key,value", [
    ("model", "another/model"), ("template", "chat"), ("k", 4), ("generation.temperature", 0.3),
    ("generation.top_p", 0.5), ("generation.max_tokens", 9), ("generation.seed", 11), ("options.batch_size", 3),
    ("max_sources", 2), ("max_source_chars", 40), ("options.max_input_tokens", 99), ("options.dtype", "bfloat16"),
    ("options.device", "cuda")])
def test_every_param_reaches_the_library(tmp_path, load_stage, key, value, monkeypatch):
    def read(params):
        node = params
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    assert read(InduceParams()) != value
    section: dict = {}
    *parents, leaf = key.split(".")
    node = section
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    stage = load_stage("induce")
    seen = {}

    def spy(sources, model_dir, params, cache_dir, **kw):
        seen["params"] = params
        return induce(sources, model_dir, params, cache_dir, backend=FakeBackend(), progress=False)

    monkeypatch.setattr(stage, "induce", spy)
    res = _stage(tmp_path, load_stage, tmp_path, section, stage=stage)
    assert res.exit_code == 0, res.output
    assert read(seen["params"]) == value


def test_library_params_shape_requests_and_rows():
    sources = read_rows(SOURCES, SourceText)
    fake = FakeBackend({"template": "Write about it, take {n}.\n### Response:\nignored"})
    p = InduceParams(k=2, max_sources=3, max_source_chars=20, generation={"seed": 5})
    out = induce(sources, "unused", p, cache_dir=None, backend=fake, progress=False)
    assert len(out.rows) == 6 and {r.instruction for r in out.rows} == {"Write about it, take 0.",
                                                                        "Write about it, take 1."}
    assert [r.parent_id for r in out.rows[::2]] == [s.id for s in select_sources(sources, 3, 5)]
    assert all(len(r.source_text) <= 20 for r in out.rows) and out.stats["truncated_sources"] == 3
    assert select_sources(sources, 3, 5) != select_sources(sources, 3, 6)  # the seed picks the subset


class _FilterSecondCandidate(FakeBackend):
    """Every candidate 1 comes back filtered, as a provider's content filter would answer."""

    def run(self, requests):
        for i, result in super().run(requests):
            if requests[i].sample_index == 1:
                result = ChatResult(text="", outcome="content_filter", error="filtered by the provider")
            yield i, result


def test_failed_calls_are_rejects_in_the_common_format():
    """saferinstruct.rejects' format: id = the id the candidate would have had, parent_id = its source text."""
    sources = read_rows(SOURCES, SourceText)[:2]
    backend = _FilterSecondCandidate({"template": "Write about it."})
    out = induce(sources, "unused", InduceParams(k=2), cache_dir=None, backend=backend, progress=False)
    assert [r.id for r in out.rows] == [f"{s.id}:0" for s in sources]
    assert [(r.id, r.parent_id, r.stage, r.reason, r.detail) for r in out.rejected] == [
        (f"{s.id}:1", s.id, "induce", "content_filter", "filtered by the provider") for s in sources]
    assert out.rejected[0].row["candidate"] == 1 and len(out.rejected[0].row["cache_key"]) == 64
    assert out.stats["rejected"] == 2 and out.stats["outcomes"] == {"ok": 2, "content_filter": 2}


def test_templates_build_the_trained_prompt():
    paper = build_request("some text", 1, InduceParams(template="paper", generation={
        "temperature": 0.5, "top_p": 0.8, "seed": 3, "max_tokens": 7}))
    assert len(paper.messages) == 1 and paper.messages[0].content.endswith("some text\n\n### Instruction:\n")
    assert paper.params.stop == ["###"] and paper.sample_index == 1
    gen = paper.params
    assert (gen.temperature, gen.top_p, gen.seed, gen.max_tokens) == (0.5, 0.8, 3, 7)
    chat = build_request("some text", 0, InduceParams(template="chat"))
    assert [m.role for m in chat.messages] == ["system", "user"] and chat.params.stop == []


def test_template_must_match_the_trained_model(tmp_path, load_stage):
    (tmp_path / "training_config.json").write_text(json.dumps({"params": {"template": "chat"}}))
    res = _stage(tmp_path, load_stage, tmp_path, {"template": "paper"})
    assert res.exit_code == 2 and "set induce.template: chat" in res.output


def test_config_errors_are_one_line(tmp_path, load_stage):
    res = _stage(tmp_path, load_stage, tmp_path, {"k": 2, "generation": {"temperature": 0}})
    assert res.exit_code == 2 and "identical" in res.output and len(res.output.strip().splitlines()) == 1
    res = _stage(tmp_path, load_stage, tmp_path / "missing", {})
    assert res.exit_code == 2 and "reversed model not found" in res.output


def test_clean_and_truncate():
    assert clean_instruction("  Write a poem.\n\n### Response:\nblah") == "Write a poem."
    assert clean_instruction("\n") == ""
    assert truncate("one two three four", 12) == "one two"
    assert truncate("short", 12) == "short"


@pytest.mark.slow
def test_induce_on_real_smollm2(tmp_path, load_stage, smollm2_dir):
    """The real 135M model (not reverse-tuned here) through the paper template: plausible, distinct candidates."""
    res = _stage(tmp_path, load_stage, smollm2_dir, {"k": 2, "generation": {"temperature": 0.7, "max_tokens": 32},
                                                     "options": {"batch_size": 8}, "max_sources": 4})
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "induced.jsonl", InducedInstruction)
    assert len(rows) == 8 and sum(bool(r.instruction) for r in rows) >= 6
    assert all("###" not in r.instruction for r in rows)
    assert _stats(tmp_path)["completion_tokens"] > 0


def test_sigkill_then_rerun_pays_only_for_the_rest(tmp_path, varied_model_dir):
    """A real kill -9 of the stage process half way: the re-run generates exactly what the cache does not hold."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"induce": {
        **FAST, "k": 8, "generation": {**FAST["generation"], "max_tokens": 32},
        "options": {**FAST["options"], "batch_size": 1}}}))
    cmd = [sys.executable, str(REPO / "stages" / "induce.py"), "--sources", str(SOURCES), "--model",
           str(varied_model_dir), "--out", str(tmp_path / "induced.jsonl"), "--rejected", str(tmp_path / "rej.jsonl"),
           "--cache", str(tmp_path / "cache"), "--stats", str(tmp_path / "stats.json"), "--params",
           str(tmp_path / "params.yaml"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "cache").glob("*/*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the stage finished before it could be killed"
    done = len(list((tmp_path / "cache").glob("*/*.json")))
    assert 3 <= done < 40 and not (tmp_path / "induced.jsonl").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = _stats(tmp_path)
    assert (stats["cache_hits"], stats["calls"]) == (done, 40 - done)
    assert len(read_rows(tmp_path / "induced.jsonl", InducedInstruction)) == 40
    # the killed-then-resumed output equals an uninterrupted run's, byte for byte
    clean = tmp_path / "clean"
    clean_cmd = [a if not a.startswith(str(tmp_path)) or a.endswith("params.yaml") else
                 str(clean / Path(a).relative_to(tmp_path)) for a in cmd]
    clean.mkdir()
    subprocess.run(clean_cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert (clean / "induced.jsonl").read_bytes() == (tmp_path / "induced.jsonl").read_bytes()
