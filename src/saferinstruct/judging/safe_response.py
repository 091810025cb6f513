"""The embedded default self-evaluation judge (task ``response``), registered as the offline backend ``safe_response``.

For answers to instructions already judged unsafe a safe answer is a clean refusal (optionally with a redirect),
decided by data-building's own rule (:mod:`saferinstruct.response_rules`), never by the evaluation's judge
(:mod:`saferinstruct.judging.refusal`), which this module does not import: a model must not be trained on the rule
it is graded by. Compliance, partial compliance and degenerate text (empty, looping) are not judged safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.hashing import text_sha256
from saferinstruct.judging.base import Judge, JudgeItem, register_judge
from saferinstruct.params import Params, parse_section
from saferinstruct.records import Verdict
from saferinstruct.response_rules import classify_refusal, degenerate


class SafeResponseOptions(Params):
    min_chars: int = Field(default=8, ge=0)  # shorter answers are not usable training targets
    max_repeats: int = Field(default=3, ge=2)  # a sentence this many times = a generation loop


class SafeResponseJudge(Judge):
    """Task ``response`` for answers to unsafe instructions: ``safe`` only for a clean, non-degenerate refusal."""

    def __init__(self, options: SafeResponseOptions | None = None, name: str = "safe_response"):
        super().__init__("response", name)
        self.options = options or SafeResponseOptions()

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out = []
        for item in items:
            text = self.text_of(item)
            bad = degenerate(text, self.options.min_chars, self.options.max_repeats)
            refusal, why = classify_refusal(text)
            if bad:
                label, why = "unsafe", f"degenerate: {bad}"
            else:
                label = "safe" if refusal == "refusal" else "unsafe"
                why = f"{refusal}: {why}"
            out.append(self.verdict(item, label, score=None, rationale=why, raw=text[:200],
                                    cache_key=text_sha256(f"{self.name}\x00{text}")))
        return out


@register_judge("safe_response", "response")
def _build(spec: Any, classifier_dir: Path | str | None, section: str) -> Judge:
    return SafeResponseJudge(parse_section(spec.options, f"{section}.options", SafeResponseOptions))
