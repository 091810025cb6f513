"""The quality_filter step: heuristics, exact duplicates, off-source instructions, then near duplicates by embedding.

An induced instruction is meant to be what its source text answers. A small reversed model sometimes writes a generic
one instead ("Find a job.", "What do I do?"), which a judge can still score as unsafe (the harm is in the source, not
in the instruction) and which would then teach the aligned model to refuse harmless questions. ``off_source`` drops
instructions whose embedding cosine with their own source text is below ``min_source_similarity``.

Every dropped row becomes a :class:`RejectedRow` (through :class:`~saferinstruct.rejects.Rejects`, grouped by category)
with its reason and a detail (the measured value, or the id of the row it duplicates); stats count rows per reason.
Rows are judged in input order, so "keep the first" is deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field

from saferinstruct.embeddings import Embedder
from saferinstruct.filters.dedup import exact_duplicates, near_duplicates
from saferinstruct.filters.heuristics import HeuristicParams, check_text
from saferinstruct.records import InducedInstruction, RejectedRow
from saferinstruct.rejects import Rejects

STAGE = "quality_filter"
REASONS = ("empty", "non_language", "too_short", "too_long", "repeated_ngrams", "copied_source", "not_a_request",
           "exact_duplicate", "off_source", "near_duplicate")


class QualityFilterParams(HeuristicParams):
    """params.yaml `quality_filter`: the heuristics' thresholds, then the duplicate and source-similarity checks."""

    near_dup_threshold: float | None = Field(default=0.9, ge=-1, le=1)  # cosine; null turns the embedding check off
    min_source_similarity: float | None = Field(default=None, ge=-1, le=1)  # cosine with the source text; null: off
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
    need_embeddings = params.min_source_similarity is not None or params.near_dup_threshold is not None
    if need_embeddings and alive:
        embedder = embedder or Embedder(params.embedding_model or None)
        emb = embedder.encode([rows[i].instruction for i in alive], batch_size=params.embedding_batch_size)
    if params.min_source_similarity is not None and alive:
        src = embedder.encode([rows[i].source_text for i in alive], batch_size=params.embedding_batch_size)
        for i, cos in zip(alive, (emb * src).sum(axis=1), strict=True):  # unit vectors: the dot is the cosine
            if cos < params.min_source_similarity:
                verdicts[i] = ("off_source", f"cosine {cos:.3f} with its source text < {params.min_source_similarity}")
        emb = emb[[i not in verdicts for i in alive]]
        alive = [i for i in alive if i not in verdicts]
    if params.near_dup_threshold is not None and len(alive) > 1:
        for dup, (first, cos) in near_duplicates(emb, params.near_dup_threshold).items():
            verdicts[alive[dup]] = ("near_duplicate", f"cosine {cos:.3f} with {rows[alive[first]].id}")
    rejects = Rejects(STAGE)
    for i in sorted(verdicts):
        rejects.add_record(rows[i].category, rows[i], *verdicts[i])
    return QualityResult(kept=[r for i, r in enumerate(rows) if i not in verdicts], rejected=rejects.rows,
                         by_reason=rejects.total())
