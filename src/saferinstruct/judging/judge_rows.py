"""Judge a stage's rows: what the judge_instructions and self_evaluate stages do with a judge (rows in, verdicts and
funnel counts out; calls that still failed after their retries are dropped within ``max_error_fraction``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from saferinstruct.judging.base import Judge, JudgeItem
from saferinstruct.llm.gateway import check_call_errors
from saferinstruct.params import ParamsError
from saferinstruct.records import ExpertResponse, InducedInstruction, Verdict


def judged(stage: str, judge: Judge, verdicts: Sequence[Verdict], max_error_fraction: float) -> list[bool]:
    """Per verdict, whether it is a real judgement: verdicts of calls that failed after their retries are dropped
    when they are at most ``max_error_fraction`` of all; more stop the stage (:class:`CallsFailed`)."""
    failed = [judge.call_failed(v) for v in verdicts]
    check_call_errors(stage, sum(failed), len(verdicts), max_error_fraction, judge.last_call_error())
    return [not f for f in failed]


def judge_instructions(rows: Sequence[InducedInstruction], judge: Judge,
                       max_error_fraction: float = 0.0) -> tuple[list[Verdict], dict]:
    """One verdict per instruction (``parent_id`` = instruction id); the source text goes along as context."""
    if judge.task != "instruction":
        raise ParamsError(f"judge {judge.name} does task '{judge.task}'; judging instructions needs 'instruction'")
    items = [JudgeItem(id=r.id, instruction=r.instruction, source_text=r.source_text) for r in rows]
    verdicts = judge.judge(items)
    real = judged("judge_instructions", judge, verdicts, max_error_fraction)
    per_category: dict[str, Counter] = {}
    for row, v, ok in zip(rows, verdicts, real, strict=True):
        if ok:
            per_category.setdefault(row.category, Counter())[v.label] += 1
    kept = [v for v, ok in zip(verdicts, real, strict=True) if ok]
    dropped = {"call_error": len(verdicts) - len(kept)} if len(kept) < len(verdicts) else {}
    return kept, {"in": len(rows), "verdicts": len(kept), "dropped": dropped,
                  "labels_per_category": {c: dict(sorted(n.items())) for c, n in sorted(per_category.items())},
                  **judge.stats()}


# self_evaluate: the label a verdict is written with when its P(unsafe) reaches the threshold
UNSAFE = "unsafe"


@dataclass
class SelfEvaluation:
    verdicts: list[Verdict]
    kept: list[ExpertResponse]
    stats: dict = field(default_factory=dict)


def _drop_reason(verdict: Verdict, keep_label: str, threshold: float | None) -> str | None:
    """Why a judged answer is not kept, or None: the label decides, then (as select_instructions' min_score) a scored
    verdict's P(unsafe) must stay below ``threshold`` (null: the label alone decides)."""
    if not verdict.parse_ok:
        return "unparsed_verdict"
    if verdict.label != keep_label:
        return f"judged_{verdict.label}"
    if threshold is not None and verdict.score is not None and verdict.score >= threshold:
        return "above_threshold"
    return None


def _unsafe_by_score(verdict: Verdict, threshold: float | None) -> Verdict:
    """The verdict as written when its score reaches the threshold: labelled unsafe, because build_preferences reads
    the labels only; the judge's own label stays in the rationale (and its reply in ``raw``)."""
    why = f"P(unsafe)={verdict.score} >= threshold {threshold}; judge label {verdict.label}: {verdict.rationale}"
    return verdict.model_copy(update={"label": UNSAFE, "rationale": why})


def self_evaluate(responses: Sequence[ExpertResponse], judge: Judge, keep_label: str = "safe",
                  max_error_fraction: float = 0.0, threshold: float | None = None) -> SelfEvaluation:
    """Judge every answer the expert actually gave; keep those judged ``keep_label`` (parsed verdicts only) whose
    P(unsafe), when the judge gives one (``score``), is below ``threshold``."""
    if judge.task != "response":
        raise ParamsError(f"judge {judge.name} does task '{judge.task}'; self-evaluation needs 'response'")
    answered = [r for r in responses if r.outcome == "ok" and r.response.strip()]
    verdicts = judge.judge([JudgeItem(id=r.id, instruction=r.instruction, response=r.response) for r in answered])
    real = judged("self_evaluate", judge, verdicts, max_error_fraction)
    dropped: Counter = Counter(call_error=real.count(False))
    answered = [r for r, ok in zip(answered, real, strict=True) if ok]
    verdicts = [v for v, ok in zip(verdicts, real, strict=True) if ok]
    reasons = [_drop_reason(v, keep_label, threshold) for v in verdicts]
    kept = [r for r, why in zip(answered, reasons, strict=True) if why is None]
    verdicts = [_unsafe_by_score(v, threshold) if why == "above_threshold" else v
                for v, why in zip(verdicts, reasons, strict=True)]
    for r in responses:
        if r.outcome != "ok":
            dropped[f"outcome_{r.outcome}"] += 1
        elif not r.response.strip():
            dropped["empty_response"] += 1
    dropped.update(why for why in reasons if why)
    return SelfEvaluation(verdicts, kept, {"in": len(responses), "judged": len(verdicts), "kept": len(kept),
                                           "dropped": dict(sorted((+dropped).items())), **judge.stats()})
