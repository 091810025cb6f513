"""Instruction induction: the reversed model writes, for each source text, k instructions that text would answer.

Every call goes through the gateway's content-addressed cache, and the gateway writes each batch to it as soon as the
batch finishes: a killed run re-started regenerates nothing it already has. Requests are sorted by prompt length and
sent in chunks of a few batches, so batches stay full of similar lengths and the progress bar moves per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from saferinstruct.hashing import sample_rows
from saferinstruct.io import read_json
from saferinstruct.llm import local  # noqa: F401 - registers the "transformers" backend without loading the others
from saferinstruct.llm.base import Backend, ChatRequest, GenerationParams, Message
from saferinstruct.llm.gateway import Gateway
from saferinstruct.llm.roles import Role, backend_class_at, open_role
from saferinstruct.params import ParamsError
from saferinstruct.progress import Progress
from saferinstruct.records import InducedInstruction, RejectedRow, SourceText
from saferinstruct.rejects import Rejects
from saferinstruct.templates import ReverseTemplate, reverse_messages, reverse_prompt

STAGE = "induce"
# The paper template's next section header: a model that keeps going after the instruction starts a new "###" block.
SECTION = "###"
CHUNK_BATCHES = 4


class InduceParams(Role):
    """params.yaml `induce`: the inducer role (model null: the stage's --model, models/reverse) plus the sampling of
    sources and candidates."""

    options: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16, "dtype": "float32", "device": "auto",
                                                             "max_input_tokens": 1024})
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=64, temperature=0.7,
                                                                                  top_p=0.9, seed=0))
    template: ReverseTemplate = "paper"  # must match the template models/reverse was trained with
    k: int = Field(default=2, ge=1)  # candidates per source text
    max_sources: int | None = Field(default=None, ge=1)  # a seeded subset of the sources (null: all)
    max_source_chars: int = Field(default=1500, ge=1)  # longer texts are cut at a word boundary

    @model_validator(mode="after")
    def _distinct_candidates(self) -> InduceParams:
        if self.k > 1 and self.generation.temperature == 0:
            raise ValueError("k > 1 with generation.temperature 0 gives k identical (greedy) candidates; "
                             "set generation.temperature > 0 or k: 1")
        if self.generation.seed is None:  # it also draws the max_sources subset
            raise ValueError("generation.seed must be an integer (it also draws the max_sources subset)")
        return self


@dataclass
class InduceResult:
    rows: list[InducedInstruction]
    rejected: list[RejectedRow]
    stats: dict[str, Any] = field(default_factory=dict)


def select_sources(sources: Sequence[SourceText], max_sources: int | None, seed: int) -> list[SourceText]:
    """All sources, or a seeded subset in input order (:func:`saferinstruct.hashing.sample_rows`)."""
    return sample_rows(sources, max_sources, seed)


def truncate(text: str, max_chars: int) -> str:
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut.rsplit(None, 1)[0] if " " in cut else cut).rstrip()


def build_request(text: str, candidate: int, p: InduceParams) -> ChatRequest:
    stop = [*p.generation.stop, *([SECTION] if p.template == "paper" and SECTION not in p.generation.stop else [])]
    gen = p.generation.model_copy(update={"stop": stop})
    if p.template == "paper":  # raw prompt: the backend adds no chat markup (chat_template=False)
        messages: tuple[Message, ...] = (Message(role="user", content=reverse_prompt(text)),)
    else:
        messages = tuple(Message(**m) for m in reverse_messages(text))
    return ChatRequest(messages=messages, params=gen, sample_index=candidate)


def clean_instruction(text: str) -> str:
    """The instruction alone: cut at the next section header, trimmed."""
    return text.split(SECTION, 1)[0].strip()


def check_template(model_dir: Path, template: str) -> None:
    """Refuse to prompt a model with a template other than the one it was trained with (when its config says)."""
    config = Path(model_dir) / "training_config.json"
    if not config.exists():
        return
    doc = read_json(config)
    trained = (doc.get("params") or {}).get("template") if isinstance(doc, dict) else None
    if trained is not None and trained != template:
        raise ParamsError(f"induce.template is '{template}' but {model_dir} was trained with template "
                          f"'{trained}'; set induce.template: {trained}")


def inducer_role(p: InduceParams) -> InduceParams:
    """The role as opened: the template decides ``chat_template`` (the paper's prompt is raw text, no chat markup),
    so it needs a backend that takes that option."""
    if "chat_template" not in backend_class_at(p.backend, STAGE).Options.model_fields:
        if p.template == "paper":
            raise ParamsError(f"params.yaml: '{STAGE}.backend': backend '{p.backend}' always applies a chat template; "
                              f"the paper template needs a local backend (transformers, vllm) or {STAGE}.template: chat")
        return p
    wanted = p.template == "chat"
    if p.options.get("chat_template", wanted) != wanted:
        raise ParamsError(f"params.yaml: '{STAGE}.options.chat_template': set by {STAGE}.template ({p.template}); "
                          "remove it")
    return p.model_copy(update={"options": {**p.options, "chat_template": wanted}})


def make_inducer(model_dir: Path, p: InduceParams, cache_dir: Path | str | None = None) -> Gateway:
    """The inducer role behind the call cache (``model_dir``: the model when ``induce.model`` is null)."""
    return open_role(inducer_role(p), STAGE, cache_dir, default_model=str(model_dir))


def induce(sources: Sequence[SourceText], model_dir: Path | str, p: InduceParams, cache_dir: Path | str | None,
           backend: Backend | None = None, progress: bool = True) -> InduceResult:
    """k instructions per source text (InducedInstruction rows) plus rejected rows for failed generations."""
    check_template(Path(p.model or model_dir), p.template)
    chosen = select_sources(sources, p.max_sources, p.generation.seed)
    texts = [truncate(s.text, p.max_source_chars) for s in chosen]
    jobs = [(si, c, build_request(texts[si], c, p)) for si in range(len(chosen)) for c in range(p.k)]
    jobs.sort(key=lambda job: -len(job[2].messages[-1].content))
    gateway = Gateway(backend, cache_dir=cache_dir) if backend else make_inducer(Path(model_dir), p, cache_dir)
    results: dict[tuple[int, int], Any] = {}
    start = time.perf_counter()
    chunk = (getattr(gateway.backend.options, "batch_size", None) or 16) * CHUNK_BATCHES
    try:
        with Progress("induce", len(jobs), unit="instr", enabled=progress) as bar:  # lines when not a TTY
            for at in range(0, len(jobs), chunk):
                part = jobs[at:at + chunk]
                for (si, c, _), res in zip(part, gateway.complete([job[2] for job in part])):
                    results[(si, c)] = res
                bar.update(len(part))
    finally:
        gateway.close()
    out = _rows(chosen, texts, results, p.k, gateway.identity)
    seconds = time.perf_counter() - start
    out.stats = {"sources_in": len(sources), "sources_used": len(chosen), "k": p.k,
                 "truncated_sources": sum(t != s.text.strip() for t, s in zip(texts, chosen)),
                 "candidates": len(out.rows), "rejected": len(out.rejected), **gateway.stats.as_dict(),
                 "generation_seconds": round(seconds, 3),
                 "completion_tokens_per_s": round(gateway.stats.completion_tokens / seconds, 2) if seconds else 0.0}
    return out


def _rows(chosen: list[SourceText], texts: list[str], results: dict, k: int, identity: str) -> InduceResult:
    rejects = Rejects(STAGE)  # a failed call is a reject under the id its candidate would have had
    out = InduceResult(rows=[], rejected=rejects.rows)  # and is counted by outcome in the gateway stats
    for si, src in enumerate(chosen):
        for c in range(k):
            res, row_id = results[(si, c)], f"{src.id}:{c}"
            if res.outcome != "ok":
                rejects.add(src.category, row_id, res.outcome, res.error or "",
                            {"candidate": c, "cache_key": res.cache_key}, parent_id=src.id)
                continue
            out.rows.append(InducedInstruction(id=row_id, parent_id=src.id, instruction=clean_instruction(res.text),
                                               source_text=texts[si], category=src.category, candidate=c,
                                               model=identity, cache_key=res.cache_key))
    return out
