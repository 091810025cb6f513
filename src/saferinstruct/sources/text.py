"""Text clean-up shared by every loader: whitespace normalisation, PII scrubbing with counts, the match key.

PII patterns are deliberately conservative (precision over recall): URLs, e-mail addresses, social-media handles
(@name, Reddit u/name) and phone numbers written with separators or a leading "+" and 9-15 digits. Plain digit runs,
years and dates are left alone. Each match becomes a placeholder so the sentence still reads naturally.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

PLACEHOLDERS = {"url": "[URL]", "email": "[EMAIL]", "handle": "@USER", "phone": "[PHONE]"}

_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]")  # no trailing punctuation
_EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_HANDLE = re.compile(r"(?<![\w@./])(?:@[A-Za-z0-9_]{1,30}|/?u/[A-Za-z0-9_-]{3,20})\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d\s().-]{7,18}\d|\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,5})(?![\w])")
_ORDER = (("url", _URL), ("email", _EMAIL), ("handle", _HANDLE), ("phone", _PHONE))

_PUNCT = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_BLANKS = re.compile(r"\n{3,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")  # controls, zero-width


def normalise_whitespace(text: str, unescape_html: bool = False) -> str:
    """One space between words, no trailing spaces, at most one blank line between paragraphs, no control chars."""
    if unescape_html:
        text = html.unescape(text)  # tweets arrive as "&amp;" and "&#128514;"
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _phone_ok(match: re.Match) -> bool:
    return 9 <= sum(ch.isdigit() for ch in match.group(0)) <= 15


def scrub_pii(text: str) -> tuple[str, Counter]:
    """Replace PII with placeholders; returns the new text and counts per kind (kinds with no match are absent)."""
    counts: Counter = Counter()
    for kind, pattern in _ORDER:
        def repl(m: re.Match, kind: str = kind) -> str:
            if kind == "phone" and not _phone_ok(m):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(repl, text)
    return text, counts


def match_key(text: str) -> str:
    """Text identity for leakage and overlap checks: NFKC, lower case, punctuation dropped, whitespace collapsed.
    The one rule for every such comparison (ingest, reverse_pairs, build_preferences, the safety classifier's
    evaluation overlap, evaluate's seen-in-training drop), so a prompt evaluation calls "seen in training" is one the
    data-building stages already removed. (quality_filter's duplicate key is deliberately different: see
    saferinstruct.filters.heuristics.duplicate_key.)"""
    return " ".join(_PUNCT.sub(" ", unicodedata.normalize("NFKC", text).lower()).split())
