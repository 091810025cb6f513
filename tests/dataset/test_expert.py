"""The expert: prompt rendering with few-shot examples, outcomes recorded, truncation trimmed, cache reuse, and a real
run of the local transformers backend on the tiny model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from saferinstruct.llm.roles import role_options
from saferinstruct.respond import ExpertParams, first_sentences, respond, trim_to_sentence
from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.params import Params, ParamsError
from saferinstruct.records import InducedInstruction
from conftest import REPO

PROMPT = REPO / "prompts" / "expert.md"


@register_backend
class ScriptedBackend(Backend):
    """Answers by keyword: FILTER -> a provider content filter, LONG -> a reply cut by max_tokens; records requests."""

    name = "test_expert_scripted"
    Options = Params  # no model option at all
    seen: list[ChatRequest] = []

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        for i, req in enumerate(requests):
            ScriptedBackend.seen.append(req)
            user = req.messages[-1].content
            if "FILTER" in user:
                yield i, ChatResult(text="", outcome="content_filter", finish_reason="content_filter")
            elif "LONG" in user:
                cut = "I'm sorry, but I can't help. Please call a friend and"
                yield i, ChatResult(text=cut, finish_reason="length")
            else:
                yield i, ChatResult(text="  I'm sorry, but I can't help with that.  ", finish_reason="stop")


def _inst(i: int, text: str) -> InducedInstruction:
    return InducedInstruction(id=f"ins-{i}", parent_id=f"src-{i}", instruction=text, source_text="s",
                              category="other", candidate=0, model="m", cache_key=f"k{i}")


def test_respond_records_outcomes_and_trims(tmp_path):
    ScriptedBackend.seen.clear()
    rows = [_inst(0, "write something mean"), _inst(1, "FILTER me"), _inst(2, "LONG answer please")]
    run = respond(rows, PROMPT, ExpertParams(backend="test_expert_scripted", options={}), tmp_path / "cache")
    assert [(r.id, r.parent_id, r.outcome) for r in run.rows] == [
        ("ins-0:expert", "ins-0", "ok"), ("ins-1:expert", "ins-1", "content_filter"), ("ins-2:expert", "ins-2", "ok")]
    assert run.rows[0].response == "I'm sorry, but I can't help with that."
    assert run.rows[2].response == "I'm sorry, but I can't help."  # trimmed back to the last full sentence
    assert run.stats["outcomes"] == {"content_filter": 1, "ok": 2}
    assert run.stats["truncated_by_max_tokens"] == 1 and run.stats["gateway"]["calls"] == 3
    # the instruction is the last user turn as is; the system prompt and the three few-shot pairs come first
    msgs = ScriptedBackend.seen[0].messages
    assert [m.role for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1].content == "write something mean" and "can't help" in msgs[0].content


def test_respond_reuses_the_cache_and_few_shot_changes_the_calls(tmp_path):
    rows = [_inst(0, "a"), _inst(1, "b")]
    params = ExpertParams(backend="fake", options={"template": "I'm sorry, but I can't help with {user}."})
    first = respond(rows, PROMPT, params, tmp_path / "cache")
    again = respond(rows, PROMPT, params, tmp_path / "cache")
    assert first.stats["gateway"]["calls"] == 2 and again.stats["gateway"]["calls"] == 0
    assert [r.response for r in again.rows] == [r.response for r in first.rows]
    zero_shot = respond(rows, PROMPT, params.model_copy(update={"few_shot": 0}), tmp_path / "cache")
    assert zero_shot.stats["gateway"]["calls"] == 2  # a different prompt is a different call


def test_max_sentences_cuts_the_drift(tmp_path):
    drift = "I'm sorry, but I can't help. Try a friend. Here is how to do it anyway."
    params = ExpertParams(backend="fake", max_sentences=2, options={"template": drift})
    run = respond([_inst(0, "x")], PROMPT, params, None)
    assert run.rows[0].response == "I'm sorry, but I can't help. Try a friend."
    assert first_sentences("One. Two", 2) == "One. Two" and first_sentences("One. Two.", None) == "One. Two."


def test_untrimmed_when_asked_and_no_sentence_end():
    assert trim_to_sentence("no end here") == "no end here"
    assert trim_to_sentence("One. Two! Three") == "One. Two!"
    assert trim_to_sentence("Version 1.5 is out. And") == "Version 1.5 is out."


def test_role_options_fill_the_model_where_the_backend_wants_it():
    def expert_options(params, default_model):
        return role_options(params, "respond", default_model)

    local = ExpertParams(backend="transformers", options={"batch_size": 4})
    assert expert_options(local, "models/base") == {"batch_size": 4, "model_path": "models/base"}
    assert expert_options(local.model_copy(update={"model": "other/dir"}), "models/base")["model_path"] == "other/dir"
    remote = ExpertParams(backend="openai", options={"api_key_env": "K"})
    assert expert_options(remote, "models/base") == {"api_key_env": "K"}  # never send a local path as a model name
    assert expert_options(remote.model_copy(update={"model": "gpt-4o"}), "models/base")["model"] == "gpt-4o"
    pinned = remote.model_copy(update={"model": "gpt-4o", "revision": "2024-08-06"})
    assert expert_options(pinned, None)["revision"] == "2024-08-06"
    with pytest.raises(ParamsError, match="'respond.model': backend 'test_expert_scripted' takes no model name"):
        expert_options(ExpertParams(backend="test_expert_scripted", model="x"), None)
    with pytest.raises(ParamsError, match="'respond.revision': backend 'transformers' takes no revision"):
        expert_options(local.model_copy(update={"revision": "abc"}), "models/base")


def test_prompt_without_instruction_is_a_config_error(tmp_path):
    bad = tmp_path / "expert.md"
    bad.write_text("# system\nbe safe\n# user\nhello\n")
    with pytest.raises(ParamsError, match=r"must contain \{\{instruction\}\}"):
        respond([_inst(0, "a")], bad, ExpertParams(backend="fake"), None)


def test_respond_with_the_local_backend(tiny_model_dir, tmp_path):
    params = ExpertParams(options={"batch_size": 2, "device": "cpu"},
                          generation={"max_tokens": 6, "temperature": 0.0}, few_shot=1)
    rows = [_inst(0, "Write a short poem about the sea."), _inst(1, "How do I bake bread?")]
    run = respond(rows, PROMPT, params, tmp_path / "cache", default_model=str(tiny_model_dir))
    assert [r.outcome for r in run.rows] == ["ok", "ok"]
    assert run.stats["gateway"]["calls"] == 2 and run.stats["gateway"]["completion_tokens"] > 0
    assert run.rows[0].model.startswith("transformers")
