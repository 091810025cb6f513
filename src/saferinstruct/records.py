"""One strict pydantic model per jsonl row kind.

Every row has an ``id`` and the id of the row it came from (``parent_id``), so any preference pair can be traced back
to the source text, the induced instruction, the verdicts and the expert response that made it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Category = Literal["hate", "self-harm", "illegal", "sexual", "violence", "other"]
CATEGORIES: tuple[str, ...] = ("hate", "self-harm", "illegal", "sexual", "violence", "other")


class Record(BaseModel):
    """Base of every row: unknown fields are errors, ids are mandatory."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    parent_id: str | None = None


class Provenance(BaseModel):
    """Where a row came from: corpus, licence and the file position it was read at."""

    model_config = ConfigDict(extra="forbid")

    corpus: str
    licence: str
    file: str
    line: int


class SourceText(Record):
    """A harmful or safety-relevant text the pipeline will write an instruction for (ingest output)."""

    text: str
    category: Category
    provenance: Provenance
    labels: dict[str, Any] = Field(default_factory=dict)
    pii_scrubbed: dict[str, int] = Field(default_factory=dict)


class RejectedRow(Record):
    """A row a stage dropped, with the reason: ``id`` is the dropped row's own id, ``parent_id`` the row it came from
    (:mod:`saferinstruct.rejects`, the one way stages write these)."""

    stage: str
    reason: str
    detail: str = ""
    row: dict[str, Any] = Field(default_factory=dict)


class QuarantinedRow(BaseModel):
    """An input line that could not be parsed, kept verbatim when a stage asked for quarantine instead of failing."""

    model_config = ConfigDict(extra="forbid")

    file: str
    line: int
    error: str
    raw: str


class ReversePair(Record):
    """An (instruction, response) pair used to learn P(instruction | response)."""

    instruction: str
    response: str
    dataset: str
    licence: str


class InducedInstruction(Record):
    """An instruction the reversed model wrote for a source text (``parent_id`` = the source text id)."""

    instruction: str
    source_text: str
    category: Category
    candidate: int = Field(ge=0)
    model: str
    cache_key: str


class Verdict(Record):
    """A judge's typed verdict on an instruction or a response (``parent_id`` = the judged row id)."""

    label: str
    score: float | None = None
    rationale: str = ""
    parse_ok: bool
    raw: str
    judge: str
    cache_key: str


class ExpertResponse(Record):
    """The expert's answer to a kept instruction (``parent_id`` = the instruction id)."""

    instruction: str
    response: str
    outcome: Literal["ok", "content_filter", "refused", "invalid_prompt", "error"]
    model: str
    cache_key: str


class ChatTurn(BaseModel):
    """One message of TRL's conversational format."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class PreferencePair(Record):
    """A TRL-ready preference row: prompt, chosen (safe expert answer), rejected (original harmful text).

    Either TRL variant: plain strings, or conversational lists of turns (prompt: user turns, chosen/rejected: one
    assistant turn). ``as_text`` gives a plain string of either, for display and matching.
    """

    prompt: str | list[ChatTurn]
    chosen: str | list[ChatTurn]
    rejected: str | list[ChatTurn]
    category: str
    kind: Literal["safety", "helpful"]
    provenance: dict[str, Any] = Field(default_factory=dict)


def as_text(value: str | list[ChatTurn]) -> str:
    """The text of a plain or conversational preference field (turns joined by blank lines)."""
    return value if isinstance(value, str) else "\n\n".join(t.content for t in value)


class EvalResult(Record):
    """One evaluated generation: which model, which prompt set, what it said and how the judge labelled it."""

    model_name: str
    eval_set: str
    group: str = ""
    prompt: str
    prompt_label: Literal["harmful", "safe", "care"]  # care: wants a caring answer (eval/sets.py)
    response: str
    judge_label: str
    parse_ok: bool = True
