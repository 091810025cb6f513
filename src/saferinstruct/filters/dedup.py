"""Exact and near duplicates; the first occurrence is kept, later ones name the row they duplicate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saferinstruct.filters.heuristics import duplicate_key

# Rows compared per matrix product: bounds memory at block x n floats while staying vectorised.
_BLOCK = 1024


def exact_duplicates(texts: Sequence[str]) -> dict[int, int]:
    """{index of a duplicate: index of the first row with the same normalised text}."""
    first: dict[str, int] = {}
    dups: dict[int, int] = {}
    for i, text in enumerate(texts):
        key = duplicate_key(text)
        if key in first:
            dups[i] = first[key]
        else:
            first[key] = i
    return dups


def near_duplicates(emb: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """{index: (earlier kept index, cosine)} for rows whose cosine with an earlier kept row is >= threshold.

    ``emb`` rows must be unit length. Greedy in input order, so a row dropped as a duplicate cannot knock out later
    rows: only kept rows count, exactly as if rows were added one by one.
    """
    n = len(emb)
    kept = np.zeros(n, dtype=bool)
    dups: dict[int, tuple[int, float]] = {}
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = emb[start:stop] @ emb[:stop].T
        for i in range(start, stop):
            row = np.where(kept[:i], sims[i - start, :i], -np.inf)
            j = int(np.argmax(row)) if i else -1
            if i and row[j] >= threshold:
                dups[i] = (j, float(row[j]))
            else:
                kept[i] = True
    return dups
