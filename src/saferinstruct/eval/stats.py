"""Uncertainty for the evaluation's rates: Wilson score intervals, and exact McNemar tests for paired comparisons.

Pure Python (``math.comb``), so the package needs no scipy. Sets are small (n=24 on some), where the
normal-approximation interval and the chi-square McNemar test are both wrong; Wilson stays inside [0, 1] and the exact
test needs no continuity correction."""

from __future__ import annotations

from collections.abc import Mapping
from math import comb, sqrt

Z_95 = 1.959963984540054  # two-sided 95% normal quantile (what statsmodels' proportion_confint uses)


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials; ``(0.0, 1.0)`` when ``n`` is 0 (nothing known)."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds are exactly 0 at k=0 and exactly 1 at k=n; float noise would print 1e-17 or 0.9999999999999999
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: ``min(1, 2 * P[X <= min(b, c)])``, X ~ Bin(b+c, 1/2).

    ``b + c == 0`` (no discordant pair: the two models agree everywhere) gives 1.0."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict:
    """Compare two models' binary outcomes (e.g. refused) on the prompts both have, keyed by prompt id.

    Returns ``n`` (shared prompts), ``a_rate`` / ``b_rate`` over them, the discordant counts ``b`` (a yes, b no) and
    ``c`` (a no, b yes), and the exact McNemar ``p_value``. Prompts only one side has are left out, so the two rates
    are always over the same prompts; rates are None when none is shared."""
    shared = [key for key in a if key in b]
    n = len(shared)
    yes_no = sum(bool(a[k]) and not b[k] for k in shared)
    no_yes = sum(not a[k] and bool(b[k]) for k in shared)
    a_yes = sum(bool(a[k]) for k in shared)
    b_yes = sum(bool(b[k]) for k in shared)
    # p to 4 significant digits: a tiny p stays > 0, where rounding to decimals would print 0
    return {"n": n, "a_rate": round(a_yes / n, 4) if n else None, "b_rate": round(b_yes / n, 4) if n else None,
            "b": yes_no, "c": no_yes, "p_value": float(f"{mcnemar_exact(yes_no, no_yes):.4g}")}
