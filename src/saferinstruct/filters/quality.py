"""The quality_filter step: heuristics, exact duplicates, off-source instructions, then near duplicates by embedding.

An induced instruction is meant to be what its source text answers. A small reversed model sometimes writes a generic
one instead ("Find a job.", "What do I do?"), which a judge can still score as unsafe (the harm is in the source, not
in the instruction) and which would then teach the aligned model to refuse harmless questions. ``off_source`` drops
instructions whose embedding cosine with their own source text is below ``min_source_similarity``.

With k > 1 candidates per source text, ``max_per_source`` keeps at most that many of each text's surviving candidates
by a diversity pick (:mod:`saferinstruct.filters.diversity`); the others are dropped as ``not_picked``.

Every dropped row becomes a :class:`RejectedRow` (through :class:`~saferinstruct.rejects.Rejects`, grouped by category)
with its reason and a detail (the measured value, or the id of the row it duplicates); stats count rows per reason.
Rows are judged in input order, so "keep the first" is deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from saferinstruct.embeddings import Embedder
from saferinstruct.filters.dedup import exact_duplicates, near_duplicates
from saferinstruct.filters.diversity import pick_diverse, request_shape
from saferinstruct.filters.heuristics import HeuristicParams, check_text
from saferinstruct.records import InducedInstruction, RejectedRow
from saferinstruct.rejects import Rejects

STAGE = "quality_filter"
REASONS = ("empty", "non_language", "too_short", "too_long", "repeated_ngrams", "copied_source", "not_a_request",
           "exact_duplicate", "off_source", "near_duplicate", "not_picked")


class QualityFilterParams(HeuristicParams):
    """params.yaml `quality_filter`: the heuristics' thresholds, then the duplicate and source-similarity checks."""

    near_dup_threshold: float | None = Field(default=0.9, ge=-1, le=1)  # cosine; null turns the embedding check off
    min_source_similarity: float | None = Field(default=None, ge=-1, le=1)  # cosine with the source text; null: off
    # at most this many candidates per source text, by the diversity pick (null: every surviving candidate)
    max_per_source: int | None = Field(default=None, ge=1)
    diversity_weight: float = Field(default=0.5, ge=0, le=1)  # 0: the closest to the source; 1: the most novel
    shape_bonus: float = Field(default=0.2, ge=0)  # added for a request shape (question / imperative) not picked yet
    embedding_model: str = ""  # "" = the bundled all-MiniLM-L6-v2
    embedding_batch_size: int = Field(default=64, ge=1)


@dataclass
class QualityResult:
    kept: list[InducedInstruction]
    rejected: list[RejectedRow]
    by_reason: Counter = field(default_factory=Counter)

    def stats(self) -> dict:
        return {"rows_in": len(self.kept) + len(self.rejected), "kept": len(self.kept),
                "rejected": len(self.rejected), "by_reason": {r: self.by_reason.get(r, 0) for r in REASONS}}


def quality_filter(rows: Sequence[InducedInstruction], params: QualityFilterParams,
                   embedder: Embedder | None = None) -> QualityResult:
    """Split rows into kept and rejected (with reasons), keeping input order in both."""
    verdicts: dict[int, tuple[str, str]] = {}
    for i, row in enumerate(rows):
        failed = check_text(row.instruction, row.source_text, params)
        if failed:
            verdicts[i] = failed
    alive = [i for i in range(len(rows)) if i not in verdicts]
    for dup, first in exact_duplicates([rows[i].instruction for i in alive]).items():
        verdicts[alive[dup]] = ("exact_duplicate", f"same text as {rows[alive[first]].id}")
    alive = [i for i in alive if i not in verdicts]
    need_source = params.min_source_similarity is not None or params.max_per_source is not None
    if (need_source or params.near_dup_threshold is not None) and alive:
        embedder = embedder or Embedder(params.embedding_model or None)
        emb = embedder.encode([rows[i].instruction for i in alive], batch_size=params.embedding_batch_size)
        if need_source:  # k candidates share one source text: embed each text once
            texts = list(dict.fromkeys(rows[i].source_text for i in alive))
            by_text = dict(zip(texts, embedder.encode(texts, batch_size=params.embedding_batch_size), strict=True))
            src = np.stack([by_text[rows[i].source_text] for i in alive])
    if params.min_source_similarity is not None and alive:
        for i, cos in zip(alive, (emb * src).sum(axis=1), strict=True):  # unit vectors: the dot is the cosine
            if cos < params.min_source_similarity:
                verdicts[i] = ("off_source", f"cosine {cos:.3f} with its source text < {params.min_source_similarity}")
    if params.near_dup_threshold is not None and len(alive) > 1:
        live = [n for n, i in enumerate(alive) if i not in verdicts]
        for dup, (first, cos) in near_duplicates(emb[live], params.near_dup_threshold).items():
            verdicts[alive[live[dup]]] = ("near_duplicate", f"cosine {cos:.3f} with {rows[alive[live[first]]].id}")
    if params.max_per_source is not None and alive:
        _pick_per_source(rows, [n for n, i in enumerate(alive) if i not in verdicts], alive, emb, src, params,
                         verdicts)
    rejects = Rejects(STAGE)
    for i in sorted(verdicts):
        rejects.add_record(rows[i].category, rows[i], *verdicts[i])
    return QualityResult(kept=[r for i, r in enumerate(rows) if i not in verdicts], rejected=rejects.rows,
                         by_reason=rejects.total())


def _pick_per_source(rows: Sequence[InducedInstruction], live: list[int], alive: list[int], emb, src,
                     params: QualityFilterParams, verdicts: dict[int, tuple[str, str]]) -> None:
    """Drop as not_picked the candidates beyond each source text's diversity pick (``live`` indexes ``emb``)."""
    by_source: dict[str, list[int]] = {}
    for n in live:
        by_source.setdefault(rows[alive[n]].parent_id, []).append(n)
    for source_id, group in by_source.items():
        picked = pick_diverse(emb[group], src[group[0]], [request_shape(rows[alive[n]].instruction) for n in group],
                              params.max_per_source, params.diversity_weight, params.shape_bonus)
        kept_ids = ", ".join(rows[alive[group[p]]].id for p in picked)
        for pos, n in enumerate(group):
            if pos not in picked:
                verdicts[alive[n]] = ("not_picked", f"{source_id} keeps {kept_ids} (max_per_source "
                                                    f"{params.max_per_source})")
