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
from typing import Any, Literal

from pydantic import Field, model_validator
from tqdm import tqdm

from saferinstruct.hashing import sample_rows
from saferinstruct.io import read_json
from saferinstruct.llm import local  # noqa: F401 - registers the "transformers" backend without loading the others
from saferinstruct.llm.base import Backend, ChatRequest, GenerationParams, Message, backend_class
from saferinstruct.llm.gateway import Gateway
from saferinstruct.params import Params, ParamsError
from saferinstruct.records import InducedInstruction, RejectedRow, SourceText
from saferinstruct.templates import ReverseTemplate, reverse_messages, reverse_prompt

STAGE = "induce"
# The paper template's next section header: a model that keeps going after the instruction starts a new "###" block.
SECTION = "###"
CHUNK_BATCHES = 4


class InduceParams(Params):
    """params.yaml `induce`."""

    backend: Literal["transformers", "vllm"] = "transformers"
    template: ReverseTemplate = "paper"  # must match the template models/reverse was trained with
    k: int = Field(default=2, ge=1)  # candidates per source text
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seed: int = 0
    max_sources: int | None = Field(default=None, ge=1)  # a seeded subset of the sources (null: all)
    max_source_chars: int = Field(default=1500, ge=1)  # longer texts are cut at a word boundary
    max_input_tokens: int = Field(default=1024, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    @model_validator(mode="after")
    def _distinct_candidates(self) -> InduceParams:
        if self.k > 1 and self.temperature == 0:
            raise ValueError("k > 1 with temperature 0 gives k identical (greedy) candidates; "
                             "set temperature > 0 or k: 1")
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
    gen = GenerationParams(max_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, seed=p.seed,
                           stop=[SECTION] if p.template == "paper" else [])
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


def make_inducer(model_dir: Path, p: InduceParams) -> Backend:
    options = {"model_path": str(model_dir), "batch_size": p.batch_size, "dtype": p.dtype, "device": p.device,
               "max_input_tokens": p.max_input_tokens, "chat_template": p.template == "chat"}
    try:
        cls = backend_class(p.backend)
    except ValueError as err:  # only a backend whose optional dependency is missing is unknown here
        raise ParamsError(f"induce.backend '{p.backend}' is not available ({err}); "
                          f"for vllm: pip install 'saferinstruct[gpu]' on a GPU machine") from None
    return cls(options)


def induce(sources: Sequence[SourceText], model_dir: Path | str, p: InduceParams, cache_dir: Path | str | None,
           backend: Backend | None = None, progress: bool = True) -> InduceResult:
    """k instructions per source text (InducedInstruction rows) plus rejected rows for failed generations."""
    check_template(Path(model_dir), p.template)
    chosen = select_sources(sources, p.max_sources, p.seed)
    texts = [truncate(s.text, p.max_source_chars) for s in chosen]
    jobs = [(si, c, build_request(texts[si], c, p)) for si in range(len(chosen)) for c in range(p.k)]
    jobs.sort(key=lambda job: -len(job[2].messages[-1].content))
    gateway = Gateway(backend or make_inducer(Path(model_dir), p), cache_dir=cache_dir)
    results: dict[tuple[int, int], Any] = {}
    start, chunk = time.perf_counter(), p.batch_size * CHUNK_BATCHES
    try:
        with tqdm(total=len(jobs), desc="induce", unit="instr", disable=not progress) as bar:
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
    out = InduceResult(rows=[], rejected=[])  # failed calls are counted by outcome in the gateway stats
    for si, src in enumerate(chosen):
        for c in range(k):
            res, row_id = results[(si, c)], f"{src.id}:{c}"
            if res.outcome != "ok":
                out.rejected.append(RejectedRow(id=f"{row_id}#{STAGE}", parent_id=src.id, stage=STAGE,
                                                reason=res.outcome, detail=res.error or "",
                                                row={"candidate": c, "cache_key": res.cache_key}))
                continue
            out.rows.append(InducedInstruction(id=row_id, parent_id=src.id, instruction=clean_instruction(res.text),
                                               source_text=texts[si], category=src.category, candidate=c,
                                               model=identity, cache_key=res.cache_key))
    return out
