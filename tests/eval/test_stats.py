"""Wilson intervals and exact McNemar tests pinned against independently computed values.

References were computed once with statsmodels 0.14 ``proportion_confint(k, n, alpha=0.05, method="wilson")`` and
scipy ``binomtest(min(b, c), b + c, 0.5).pvalue`` (two-sided), outside the package, and are hard-coded here."""

from __future__ import annotations

import pytest

from saferinstruct.eval.stats import mcnemar_exact, paired_comparison, wilson_interval

WILSON_REFERENCE = {  # (k, n): statsmodels proportion_confint(method="wilson")
    (0, 10): (0.0, 0.27753279986288926),
    (5, 10): (0.23659309051256394, 0.7634069094874361),
    (10, 10): (0.7224672001371106, 1.0),
    (54, 100): (0.4426486032336822, 0.6343919169097589),
    (1, 24): (0.007393456165505796, 0.20241806478655947),
    (123, 226): (0.47911723512703447, 0.6078992679121433),
    (3, 34): (0.03046594367464854, 0.22960486562808874),
}

MCNEMAR_REFERENCE = {  # (b, c): scipy binomtest(min(b, c), b + c, 0.5).pvalue
    (0, 5): 0.0625,
    (3, 10): 0.09228515625,
    (10, 10): 1.0,
    (1, 0): 1.0,
    (7, 2): 0.1796875,
    (25, 10): 0.016673847800120715,
    (0, 40): 1.8189894035458565e-12,
}


@pytest.mark.parametrize(("k", "n"), list(WILSON_REFERENCE))
def test_wilson_matches_statsmodels(k, n):
    low, high = wilson_interval(k, n)
    ref_low, ref_high = WILSON_REFERENCE[(k, n)]
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing observed: nothing known
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 1  # never below 0 or above 1, unlike the normal approximation
    assert wilson_interval(10, 10)[1] == 1.0
    # z=1.96 (the rounded quantile) moves the bounds only in the 5th decimal
    assert wilson_interval(54, 100, z=1.96)[0] == pytest.approx(0.4426486, abs=1e-5)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)


@pytest.mark.parametrize(("b", "c"), list(MCNEMAR_REFERENCE))
def test_mcnemar_matches_scipy(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(MCNEMAR_REFERENCE[(b, c)], rel=1e-12)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)  # symmetric in the discordant counts


def test_mcnemar_edges():
    assert mcnemar_exact(0, 0) == 1.0  # the models agree on every prompt
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 2)


def test_paired_comparison_counts_discordant_pairs_on_shared_prompts_only():
    # statsmodels mcnemar([[5, 3], [10, 7]], exact=True).pvalue == 0.09228515625: 5 both, 3 a only, 10 b only, 7 none
    a = {f"p{i}": i < 8 for i in range(25)}
    b = {f"p{i}": i < 5 or 8 <= i < 18 for i in range(25)}
    a["only_in_a"] = True  # not paired: the rates must be over the same prompts
    b["only_in_b"] = False
    assert paired_comparison(a, b) == {"n": 25, "a_rate": 0.32, "b_rate": 0.6, "b": 3, "c": 10,
                                       "p_value": 0.09229}
    assert paired_comparison({}, {"x": True}) == {"n": 0, "a_rate": None, "b_rate": None, "b": 0, "c": 0,
                                                  "p_value": 1.0}


def test_paired_comparison_keeps_tiny_p_values_above_zero():
    a = {f"p{i}": True for i in range(40)}
    b = {f"p{i}": False for i in range(40)}
    out = paired_comparison(a, b)
    assert (out["b"], out["c"]) == (40, 0) and out["p_value"] == 1.819e-12
