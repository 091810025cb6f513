"""Keep the instructions the judge found unsafe to answer: thresholds over stored verdicts, never a model call.

Because this stage only reads verdicts, changing a threshold re-runs it and what follows, and costs no judge call.
Score semantics follow the judge interface: ``Verdict.score`` is P(unsafe) when the judge gives one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field

from saferinstruct.io import RowError
from saferinstruct.params import Params
from saferinstruct.records import InducedInstruction, RejectedRow, Verdict
from saferinstruct.rejects import Rejects

STAGE = "select_instructions"


class SelectParams(Params):
    label: str = "unsafe"  # the verdict label that makes an instruction a candidate
    # With a scored verdict, keep only P(unsafe) >= min_score (null: the label alone decides).
    min_score: float | None = Field(default=0.5, ge=0.0, le=1.0)
    keep_unparsed: bool = False  # an unparseable verdict is dropped (counted) unless this is true
    # Caps applied after the thresholds, highest score first: a balanced, bounded set for the expert.
    max_per_category: int | None = Field(default=None, ge=1)
    max_total: int | None = Field(default=None, ge=1)


@dataclass
class Selection:
    kept: list[InducedInstruction]
    rejected: list[RejectedRow]
    stats: dict = field(default_factory=dict)


def _reason(verdict: Verdict | None, params: SelectParams) -> str | None:
    """Why an instruction is not a candidate, or None when it is."""
    if verdict is None:
        return "no_verdict"
    if not verdict.parse_ok:
        return None if params.keep_unparsed else "unparsed_verdict"
    if verdict.label != params.label:
        return f"judged_{verdict.label}"
    if params.min_score is not None and verdict.score is not None and verdict.score < params.min_score:
        return "below_min_score"
    return None


def _by_instruction(verdicts: Sequence[Verdict]) -> dict[str, Verdict]:
    out: dict[str, Verdict] = {}
    for v in verdicts:
        if v.parent_id is None:
            raise RowError(f"verdict {v.id}", None, "no parent_id (the instruction it judged)")
        if v.parent_id in out:
            raise RowError(f"verdict {v.id}", None, f"a second verdict for instruction {v.parent_id} "
                                                    f"(first: {out[v.parent_id].id})")
        out[v.parent_id] = v
    return out


def _apply_caps(candidates: list[tuple[InducedInstruction, Verdict | None]], params: SelectParams) -> set[str]:
    """Ids kept under the caps: highest score first (unscored count as 1.0), ties by id for determinism."""
    ranked = sorted(candidates, key=lambda c: (-(c[1].score if c[1] and c[1].score is not None else 1.0), c[0].id))
    per_category: Counter = Counter()
    kept: set[str] = set()
    for row, _ in ranked:
        if params.max_per_category is not None and per_category[row.category] >= params.max_per_category:
            continue
        if params.max_total is not None and len(kept) >= params.max_total:
            break
        per_category[row.category] += 1
        kept.add(row.id)
    return kept


def select_instructions(instructions: Sequence[InducedInstruction], verdicts: Sequence[Verdict],
                        params: SelectParams) -> Selection:
    by_id = _by_instruction(verdicts)
    candidates, rejects = [], Rejects(STAGE)
    for row in instructions:
        verdict = by_id.get(row.id)
        reason = _reason(verdict, params)
        if reason is None:
            candidates.append((row, verdict))
        else:
            rejects.add_record(row.category, row, reason, _detail(verdict))
    kept_ids = _apply_caps(candidates, params)
    for row, verdict in candidates:
        if row.id not in kept_ids:
            rejects.add_record(row.category, row, "over_cap", _detail(verdict))
    kept = [row for row, _ in candidates if row.id in kept_ids]
    known = {r.id for r in instructions}
    stats = {
        "in": len(instructions), "kept": len(kept), "candidates": len(candidates),
        "dropped": dict(sorted(rejects.total().items())),
        "kept_per_category": dict(sorted(Counter(r.category for r in kept).items())),
        "verdict_labels": dict(sorted(Counter(v.label for v in verdicts).items())),
        "parse_failures": sum(not v.parse_ok for v in verdicts),
        "orphan_verdicts": sum(1 for v in verdicts if v.parent_id not in known),
    }
    return Selection(kept, rejects.rows, stats)


def _detail(verdict: Verdict | None) -> str:
    return "" if verdict is None else f"{verdict.label} score={verdict.score} parse_ok={verdict.parse_ok}"
