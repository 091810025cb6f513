"""Parse a judge model's free text into (label, score, rationale), tolerating the ways models get it wrong.

Accepted, in order: a JSON object anywhere in the text (also inside a code fence) with ``label`` (or ``verdict``,
``answer``, ``classification``), optional ``score`` and ``rationale``/``reason``; else a ``label: X`` line. Labels
are normalised through synonyms (``harmful`` -> ``unsafe``, XSTest's ``2_full_refusal`` -> ``refusal``). Anything
else is a parse failure: returned, never raised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from saferinstruct.judging.base import LABELS, UNKNOWN

SYNONYMS = {
    "harmful": "unsafe", "unsafe_to_comply": "unsafe", "not_safe": "unsafe", "dangerous": "unsafe",
    "harmless": "safe", "benign": "safe", "not_harmful": "safe",
    "refused": "refusal", "refuse": "refusal", "full_refusal": "refusal", "2_full_refusal": "refusal",
    "complied": "compliance", "comply": "compliance", "compliant": "compliance", "full_compliance": "compliance",
    "1_full_compliance": "compliance", "partial_refusal": "partial", "3_partial_refusal": "partial",
}
_LABEL_KEYS = ("label", "verdict", "answer", "classification")
_LABEL_LINE = re.compile(r"^\W*(?:label|verdict|answer|classification)\W*[:=]\s*\W*([\w\s-]+)", re.I | re.M)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Parsed:
    label: str
    score: float | None
    rationale: str
    ok: bool


def normalise_label(raw: object, task: str) -> str | None:
    """The task's canonical label for ``raw``, or None when it is not one."""
    if not isinstance(raw, str):
        return None
    key = re.sub(r"[\s-]+", "_", raw.strip().strip("\"'.`*").lower())
    key = SYNONYMS.get(key, key)
    return key if key in LABELS[task] else None


def _score(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def _json_objects(text: str) -> list[dict]:
    """Every JSON object that starts at some '{' (raw_decode copes with nesting and braces inside strings)."""
    found = []
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            found.append(obj)
        start = text.find("{", start + 1)
    return found


def parse_verdict(text: str, task: str) -> Parsed:
    for obj in _json_objects(text):
        lowered = {str(k).lower(): v for k, v in obj.items()}
        raw_label = next((lowered[k] for k in _LABEL_KEYS if k in lowered), None)
        label = normalise_label(raw_label, task)
        if label is not None:
            rationale = lowered.get("rationale", lowered.get("reason", ""))
            return Parsed(label, _score(lowered.get("score")), str(rationale or ""), True)
    for match in _LABEL_LINE.finditer(text):
        words = match.group(1).strip().split()
        label = normalise_label(words[0], task) if words else None
        if label is not None:
            return Parsed(label, None, "", True)
    return Parsed(UNKNOWN, None, "unparseable judge output", False)
