"""Row-level heuristics for induced instructions. Each check returns ``None`` to keep or ``(reason, detail)``.

The checks target what a small reversed model gets wrong: empty or runaway output, copying the source text back
instead of writing an instruction for it, a statement instead of a request, generation loops, and non-text. The
request-shape check is English-only (imperative verbs, question words, request phrases, a question mark).
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import Field

from saferinstruct.params import Params

Rejection = tuple[str, str] | None


class HeuristicParams(Params):
    """The row heuristics' thresholds (the first keys of params.yaml `quality_filter`)."""

    min_words: int = Field(default=3, ge=0)
    max_words: int = Field(default=120, ge=1)
    max_chars: int = Field(default=1000, ge=1)
    min_letter_ratio: float = Field(default=0.6, ge=0, le=1)  # letters among non-space characters
    repeat_ngram: int = Field(default=3, ge=1)
    max_repeated_ngram_ratio: float = Field(default=0.3, ge=0, le=1)
    copy_ngram: int = Field(default=3, ge=1)
    max_copy_ratio: float = Field(default=0.6, ge=0, le=1)  # share of word n-grams copied from the source text

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_CLAUSE = re.compile(r"[.,;:!\n]+")

# Verbs an instruction usually starts with ("Write ...", "Explain ...").
IMPERATIVES = frozenset("""
act add advise analyze analyse answer argue ask assume brainstorm build calculate change check choose classify come
compare compile complete compose construct continue convert convince correct craft create debate define delete describe
design detail develop devise discuss draft draw edit elaborate encourage estimate evaluate explain express extract fill
find finish fix follow form formulate generate give guide help identify illustrate imagine improve insult include
instruct introduce invent justify keep label let list make mention mock name offer organize organise outline paraphrase
persuade pick plan play post predict prepare present pretend produce propose prove provide put rank rate react read
recommend reply report respond restate retell review rewrite roast role rephrase say send share show simulate sketch
solve sort speak specify state suggest summarize summarise support talk teach tell think translate try turn tweet type
use vent verify voice write
""".split())
QUESTION_WORDS = frozenset("""
how what why when where which who whom whose is are am was were can could would should will shall may might must do does
did have has
""".split())
LEAD_INS = frozenset("please kindly now then also ok okay so and just hey hi briefly quickly".split())
REQUEST_PHRASES = ("can you", "could you", "would you", "will you", "i want you", "i need", "i'd like", "i would like",
                   "help me", "give me", "tell me", "show me", "how to", "i want to", "let's", "let us")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def duplicate_key(text: str) -> str:
    """quality_filter's exact-duplicate key: the heuristics' own word tokens (NFKC, lower case), joined. Deliberately
    not saferinstruct.sources.text.match_key, the leakage rule: words keep inner apostrophes ("don't" is not "don t")
    and underscores split, the tokenisation every heuristic here counts by."""
    return " ".join(words(unicodedata.normalize("NFKC", text)))


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def letter_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def copy_ratio(instruction: list[str], source: list[str], n: int) -> float:
    """Share of the instruction's word n-grams that also occur in the source (n shrinks for very short text)."""
    n = max(1, min(n, len(instruction)))
    grams = ngrams(instruction, n)
    if not grams:
        return 0.0
    source_grams = set(ngrams(source, n))
    return sum(g in source_grams for g in grams) / len(grams)


def repeated_ngram_ratio(tokens: list[str], n: int) -> float:
    """1 - distinct/total word n-grams: 0 for text without repeats, towards 1 for a generation loop."""
    grams = ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def looks_like_request(text: str) -> bool:
    lowered = text.lower()
    if "?" in text or any(p in lowered for p in REQUEST_PHRASES):
        return True
    for clause in _CLAUSE.split(lowered):
        toks = words(clause)
        while toks and toks[0] in LEAD_INS:
            toks.pop(0)
        if toks and (toks[0] in IMPERATIVES or toks[0] in QUESTION_WORDS):
            return True
    return False


def check_text(instruction: str, source: str, p: HeuristicParams) -> Rejection:
    """The first heuristic an instruction fails, in a fixed order, or None."""
    text = instruction.strip()
    if not text:
        return "empty", ""
    ratio = letter_ratio(text)
    if ratio < p.min_letter_ratio:
        return "non_language", f"letter ratio {ratio:.2f} < {p.min_letter_ratio}"
    toks = words(text)
    if len(toks) < p.min_words:
        return "too_short", f"{len(toks)} words < {p.min_words}"
    if len(toks) > p.max_words or len(text) > p.max_chars:
        return "too_long", f"{len(toks)} words / {len(text)} chars > {p.max_words} / {p.max_chars}"
    rep = repeated_ngram_ratio(toks, p.repeat_ngram)
    if rep > p.max_repeated_ngram_ratio:
        return "repeated_ngrams", f"repeated {p.repeat_ngram}-gram ratio {rep:.2f} > {p.max_repeated_ngram_ratio}"
    copied = copy_ratio(toks, words(source), p.copy_ngram)
    if copied > p.max_copy_ratio:
        return "copied_source", f"{copied:.2f} of {p.copy_ngram}-grams from the source > {p.max_copy_ratio}"
    if not looks_like_request(text):
        return "not_a_request", "no imperative verb, question or request phrase"
    return None
