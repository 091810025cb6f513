"""metrics/eval.json carries a 95% Wilson interval with every rate and paired exact McNemar comparisons between
models on the same prompts. Expected numbers come from statsmodels' proportion_confint(method="wilson") and scipy's
binomtest, computed outside the package and hard-coded."""

from __future__ import annotations

import re
from pathlib import Path

from saferinstruct.eval.metrics import ENTRY_KEYS, MetricsParams, compute_metrics, model_pairs, plot_rows
from saferinstruct.records import EvalResult

# labels per model on 10 harmful AdvBench prompts a0..a9 and 4 safe XSTest prompts s0..s3 ("unknown" = unparseable)
HARMFUL = {
    "base": ["refusal"] + ["compliance"] * 9,  # refused 1/10
    "sft": ["refusal"] * 6 + ["partial", "compliance", "compliance", "unknown"],  # 7/9 judged (partial counts)
    "dpo": ["refusal"] * 5 + ["compliance", "compliance", "refusal", "compliance", "compliance"],  # 6/10
}
SAFE = {"base": ["compliance"] * 4, "sft": ["refusal", "refusal", "compliance", "compliance"],
        "dpo": ["refusal", "compliance", "compliance", "compliance"]}


def _rows(model: str, kind: str, eval_set: str, prefix: str, labels: list[str]) -> list[EvalResult]:
    return [EvalResult(id=f"{model}:{prefix}{i}", parent_id=f"{prefix}{i}", model_name=model, eval_set=eval_set,
                       prompt=f"prompt {prefix}{i}", prompt_label=kind, response="...", judge_label=label,
                       parse_ok=label != "unknown", group="g1" if i % 2 else "g2")
            for i, label in enumerate(labels)]


def _results() -> list[EvalResult]:
    out: list[EvalResult] = []
    for model in ("base", "sft", "dpo"):
        out += _rows(model, "harmful", "advbench", "a", HARMFUL[model]) + _rows(model, "safe", "xstest_safe", "s",
                                                                                SAFE[model])
    return out


def test_every_rate_carries_its_wilson_interval():
    metrics = compute_metrics(_results(), MetricsParams())
    for kinds in metrics["models"].values():
        for sets in kinds.values():
            assert all(tuple(e) == ENTRY_KEYS for e in sets.values())
    sft = metrics["models"]["sft"]["harmful"]["advbench"]
    assert (sft["judged"], sft["refusal_rate"], sft["refusal_ci"]) == (9, 0.7778, [0.452589, 0.936775])  # n = judged
    assert metrics["models"]["base"]["harmful"]["overall"]["refusal_ci"] == [0.017876, 0.40415]
    assert metrics["models"]["dpo"]["harmful"]["overall"]["refusal_ci"] == [0.312674, 0.83182]
    assert metrics["models"]["base"]["safe"]["overall"]["refusal_ci"] == [0.0, 0.489891]
    assert metrics["models"]["sft"]["safe"]["xstest_safe"]["harmless_ci"] == [0.150039, 0.849961]


def test_paired_mcnemar_comparisons_between_models():
    metrics = compute_metrics(_results(), MetricsParams())
    comparisons = metrics["comparisons"]
    assert list(comparisons) == ["base_vs_sft", "sft_vs_dpo", "base_vs_dpo"]
    harmful = {pair: kinds["harmful"]["overall"]["refusal"] for pair, kinds in comparisons.items()}
    # sft's unparseable a9 is not paired: base vs sft is over the 9 prompts both had judged
    assert harmful["base_vs_sft"] == {"n": 9, "a_rate": 0.1111, "b_rate": 0.7778, "b": 0, "c": 6, "p_value": 0.03125}
    assert harmful["sft_vs_dpo"] == {"n": 9, "a_rate": 0.7778, "b_rate": 0.6667, "b": 2, "c": 1, "p_value": 1.0}
    assert harmful["base_vs_dpo"] == {"n": 10, "a_rate": 0.1, "b_rate": 0.6, "b": 0, "c": 5, "p_value": 0.0625}
    assert comparisons["base_vs_dpo"]["harmful"]["advbench"]["refusal"] == harmful["base_vs_dpo"]
    safe = comparisons["base_vs_sft"]["safe"]["overall"]["refusal"]
    assert (safe["n"], safe["b"], safe["c"], safe["p_value"]) == (4, 0, 2, 0.5)
    assert set(comparisons["sft_vs_dpo"]["safe"]) == {"overall", "xstest_safe"}


def test_harmless_comparison_follows_harmless_labels():
    metrics = compute_metrics(_results(), MetricsParams(harmless_labels=["refusal"]))
    test = metrics["comparisons"]["sft_vs_dpo"]["harmful"]["overall"]
    assert test["refusal"]["b"] == 2  # a5, a6 (partial counts as refused)
    assert test["harmless"] == {"n": 9, "a_rate": 0.6667, "b_rate": 0.6667, "b": 1, "c": 1, "p_value": 1.0}
    assert metrics["models"]["sft"]["harmful"]["overall"]["harmless_ci"] == [0.354202, 0.879416]


def test_nothing_judged_gives_null_rate_and_interval():
    rows = _rows("base", "harmful", "advbench", "a", ["unknown", "unknown"])
    e = compute_metrics(rows, MetricsParams())["models"]["base"]["harmful"]["overall"]
    assert (e["refusal_rate"], e["refusal_ci"], e["harmless_ci"]) == (None, None, None)
    assert compute_metrics(rows, MetricsParams())["comparisons"] == {}  # one model: nothing to compare


def test_model_pairs_read_in_training_order():
    assert model_pairs(["dpo", "base", "sft"]) == [("base", "sft"), ("sft", "dpo"), ("base", "dpo")]
    assert model_pairs(["dpo", "base"]) == [("base", "dpo")]


def test_plot_rows_carry_interval_bounds():
    rows = plot_rows(_results(), MetricsParams())
    base = next(r for r in rows if r["bar"] == "advbench | base")
    assert (base["judged"], base["refusal_ci_low"], base["refusal_ci_high"]) == (10, 0.017876, 0.40415)


def test_make_compare_drops_the_comparison_columns():
    """`make compare` (dvc exp show) must stay narrow: each comparison would add ~24 columns per model pair."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text().splitlines()
    drop = next(ln for ln in makefile if ln.startswith("COMPARE_DROP :=")).split(":=", 1)[1].strip().replace("$$", "$")
    keep = next(ln for ln in makefile if ln.startswith("COMPARE_KEEP :=")).split(":=", 1)[1].strip().replace("$$", "$")
    column = "comparisons.base_vs_sft.harmful.overall.refusal.p_value"
    assert re.match(drop, column) and not re.match(keep, column)  # dvc exp show matches --drop/--keep from the start
