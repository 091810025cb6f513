"""The expert: writes the preferred (safe) response to each kept instruction.

The prompt file (prompts/expert.md) holds the safety system prompt and few-shot examples of good safe answers; the
instruction is the user turn. A provider's refusal, content filter or invalid-prompt answer is a recorded outcome
(kept in the output with its outcome, never retried); self_evaluate keeps only ``ok`` answers it judges safe.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.judging.prompts import PromptTemplate
from saferinstruct.llm.base import ChatRequest, ChatResult, GenerationParams
from saferinstruct.llm.gateway import check_call_errors
from saferinstruct.llm.roles import PaidRole, open_role
from saferinstruct.params import ParamsError
from saferinstruct.progress import complete
from saferinstruct.records import ExpertResponse, InducedInstruction

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


class ExpertParams(PaidRole):
    """params.yaml `respond`: the expert role (model null: the stage's --model, models/base, for a local backend)."""

    options: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16})
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=96))
    few_shot: int | None = Field(default=None, ge=0)  # example pairs kept from the prompt file (null: all)
    # A reply cut by max_tokens ends mid-sentence: trim it back to its last full sentence (a better target).
    trim_truncated: bool = True
    # Keep only the first N sentences (null: all). Small models drift after a refusal and its redirect, sometimes
    # into the very help they just declined; a safe answer is short.
    max_sentences: int | None = Field(default=None, ge=1)
    # Share of calls that may still fail after retries: those instructions get no response (counted under
    # dropped.call_error); above it the stage fails and writes nothing.
    max_error_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass
class ExpertRun:
    rows: list[ExpertResponse]
    stats: dict = field(default_factory=dict)


def trim_to_sentence(text: str) -> str:
    """Cut after the last sentence end; unchanged when there is none (better a cut sentence than nothing)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else text


def first_sentences(text: str, n: int | None) -> str:
    """The first ``n`` sentences (all when None or when there are fewer)."""
    if n is None:
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[n - 1].end()].strip() if len(ends) >= n else text


def answer_text(result: ChatResult, trim_truncated: bool) -> str:
    """The stripped answer; one cut by max_tokens is trimmed back to its last full sentence when asked."""
    text = result.text.strip()
    if trim_truncated and result.outcome == "ok" and result.finish_reason == "length":
        return trim_to_sentence(text)
    return text


def _to_row(instr: InducedInstruction, result: ChatResult, model: str, params: ExpertParams) -> ExpertResponse:
    text = first_sentences(answer_text(result, params.trim_truncated), params.max_sentences)
    return ExpertResponse(id=f"{instr.id}:expert", parent_id=instr.id, instruction=instr.instruction,
                          response=text, outcome=result.outcome, model=model, cache_key=result.cache_key)


def respond(instructions: Sequence[InducedInstruction], prompt_path: Path | str, params: ExpertParams,
            cache_dir: Path | str | None, default_model: str | None = None,
            secrets: Mapping[str, str] | None = None, progress: bool = True) -> ExpertRun:
    """One expert answer per instruction, through the gateway's call cache (``progress``: a bar with the time left
    on stderr, cached answers counted as done)."""
    prompt = PromptTemplate.load(prompt_path)
    if "instruction" not in prompt.placeholders():
        raise ParamsError(f"{prompt_path}: the expert prompt must contain {{{{instruction}}}}")
    gateway = open_role(params, "respond", cache_dir, default_model, secrets)
    requests = [ChatRequest(messages=prompt.render({"instruction": i.instruction}, delimit=False,
                                                   examples=params.few_shot), params=params.generation)
                for i in instructions]
    try:
        results = complete(gateway, requests, "respond", unit="responses", enabled=progress)
    finally:
        gateway.close()
    failed = check_call_errors("respond", sum(r.outcome == "error" for r in results), len(results),
                               params.max_error_fraction, gateway.stats.last_error)
    pairs = [(i, r) for i, r in zip(instructions, results, strict=True) if r.outcome != "error"]
    rows = [_to_row(i, r, gateway.identity, params) for i, r in pairs]
    truncated = sum(r.finish_reason == "length" for _, r in pairs)
    return ExpertRun(rows, {
        "in": len(instructions), "responses": len(rows), "dropped": {"call_error": failed} if failed else {},
        "outcomes": dict(sorted(Counter(r.outcome for r in rows).items())),
        "truncated_by_max_tokens": truncated, "empty": sum(not r.response for r in rows),
        "mean_chars": round(sum(len(r.response) for r in rows) / max(len(rows), 1), 1),
        "prompt": str(prompt_path), "prompt_sha256": prompt.sha256, "gateway": gateway.stats.as_dict()})
