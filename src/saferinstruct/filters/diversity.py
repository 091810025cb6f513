"""A diversity pick among the k candidates the reversed model wrote for one source text.

With k > 1 samples per text, several candidates are near paraphrases of the same imperative ("Write a guide to ...",
"Write instructions for ..."). Keeping them all spends the expert's calls and the training steps on one phrasing;
keeping one at random loses the question the text also answers. Maximal marginal relevance (Carbonell & Goldstein,
SIGIR 1998) keeps at most ``m`` per text: first the candidate closest to its source text (grounding), then each next
one trading closeness to the source against similarity to those already picked, with a bonus for a request shape
(question / imperative) not picked yet, so a text that answers "How do I ...?" can teach both phrasings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saferinstruct.filters.heuristics import IMPERATIVES, LEAD_INS, QUESTION_WORDS, REQUEST_PHRASES, words


def request_shape(text: str) -> str:
    """question ("How do I ...?", "Is it ...?") | imperative ("Write ...", "Tell me ...") | other, read from the
    first line: "Write a response to this question.\n\nWhy ...?" is an imperative with an input."""
    first = text.strip().split("\n", 1)[0]
    toks = words(first.lower())
    while toks and toks[0] in LEAD_INS:
        toks.pop(0)
    if "?" in first or (toks and toks[0] in QUESTION_WORDS):
        return "question"
    if toks and (toks[0] in IMPERATIVES or any(" ".join(toks).startswith(p) for p in REQUEST_PHRASES)):
        return "imperative"
    return "other"


def pick_diverse(candidates: np.ndarray, source: np.ndarray, shapes: Sequence[str], m: int,
                 diversity_weight: float, shape_bonus: float) -> list[int]:
    """Indices of at most ``m`` candidates in pick order (ties: the earlier candidate).

    ``candidates`` (n x d) and ``source`` (d) are unit-length embeddings. A candidate's score is
    ``(1 - w) * cos(candidate, source) - w * max cos(candidate, picked) + shape_bonus * [its shape is new]``; the
    first pick has no picked set, so it is the best grounded one (plus the bonus, which every shape has then).
    """
    n = len(candidates)
    if n <= m:
        return list(range(n))
    grounding = candidates @ source
    sims = candidates @ candidates.T
    picked: list[int] = []
    while len(picked) < m:
        best, best_score = -1, -np.inf
        seen_shapes = {shapes[j] for j in picked}
        for i in range(n):
            if i in picked:
                continue
            redundancy = max((sims[i, j] for j in picked), default=0.0)
            score = ((1 - diversity_weight) * grounding[i] - diversity_weight * redundancy
                     + shape_bonus * (shapes[i] not in seen_shapes))
            if score > best_score:
                best, best_score = i, score
        picked.append(best)
    return picked
