"""Capability kept: reference-answer NLL (teacher-forced, answer tokens only) against a hand computation with torch,
the reference rows' disjointness from training, the metrics block and its README table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from saferinstruct.eval.capability import (CapabilityParams, Reference, answer_nll, bootstrap_mean_ci,
                                           capability_metrics, encode, load_references, model_nlls)
from saferinstruct.eval.table import capability_table, render_table
from saferinstruct.sources.text import match_key

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "eval"
REFERENCE = ROOT / "data" / "raw" / "capability" / "alpaca_libre_reference.jsonl"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _hand_nll(model, ids: list[int], first_answer: int) -> float:
    """Sum of -log p(token t | tokens < t) over t >= first_answer, divided by their count, one position at a time."""
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    terms = [-logp[t - 1, ids[t]].item() for t in range(first_answer, len(ids))]
    return sum(terms) / len(terms)


def test_nll_equals_a_hand_computation_over_answer_tokens_only(tiny):
    model, tok = tiny
    prompt_ids, answer_ids = encode(tok, "How do I bake bread?", "Mix flour, water, salt and yeast.", 256)
    templated = tok.apply_chat_template([{"role": "user", "content": "How do I bake bread?"}], tokenize=False,
                                        add_generation_prompt=True)
    assert prompt_ids == tok(templated, add_special_tokens=False)["input_ids"]  # the chat template is applied
    assert answer_ids == tok("Mix flour, water, salt and yeast.", add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer_ids
    got = answer_nll(model, prompt_ids, answer_ids)
    assert got == pytest.approx(_hand_nll(model, ids, len(prompt_ids)), abs=1e-5)
    # prompt tokens are not scored: counting them too gives another number
    assert got != pytest.approx(_hand_nll(model, ids, 1), abs=1e-3)


def test_answer_is_cut_to_max_answer_tokens(tiny):
    _, tok = tiny
    assert len(encode(tok, "Hi", "word " * 50, 5)[1]) == 5


def test_model_nlls_scores_every_row_in_eval_mode(tiny_model_dir, tiny):
    refs = [Reference("a", "How do I bake bread?", "Mix flour, water, salt and yeast."),
            Reference("b", "Name a colour.", "Blue.")]
    nlls = model_nlls(tiny_model_dir, refs, CapabilityParams(device="cpu"))
    model, tok = tiny
    expected = [answer_nll(model, *encode(tok, r.instruction, r.answer, 256)) for r in refs]
    assert nlls == pytest.approx(expected, abs=1e-5) and all(v > 0 for v in nlls)


def test_references_drop_training_prompts_and_sample_by_seed():
    refs, overlap = load_references(FIX / "capability_reference.jsonl", ["how do I bake BREAD?"], None, 0)
    assert overlap == 1 and [r.id for r in refs] == ["ref:2", "ref:3"]
    assert load_references(FIX / "capability_reference.jsonl", [], 2, 0)[0] == \
        load_references(FIX / "capability_reference.jsonl", [], 2, 0)[0]


def test_shipped_references_are_outside_every_training_input():
    """No stage but evaluate reads data/raw/capability, and no reference instruction is an instruction of the files
    reverse_pairs trains from."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, s in stages.items() if any("data/raw/capability" in d for d in s.get("deps", []))
               or "data/raw/capability" in str(s.get("cmd", "")) or any(d == "data/raw" for d in s.get("deps", []))}
    assert readers == {"evaluate"}
    refs, _ = load_references(REFERENCE, [], None, 0)
    assert len(refs) == 200
    import json
    trained = {match_key(r["instruction"]) for r in json.loads((ROOT / "data/raw/instructions/alpaca_en_demo.json")
                                                                .read_text())}
    trained |= {match_key(r["instruction"]) for r in json.loads((ROOT / "data/raw/instructions/lima.json").read_text())}
    assert not {match_key(r.instruction) for r in refs} & trained


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    low, high = bootstrap_mean_ci(values, 2000, 0)
    assert (low, high) == bootstrap_mean_ci(values, 2000, 0) and low < 4.0 < high
    assert bootstrap_mean_ci([2.0] * 5, 500, 1) == (2.0, 2.0)


def test_capability_metrics_pair_the_difference_to_base_and_mirror_the_answered_rate():
    params = CapabilityParams(bootstrap_resamples=500)
    safe = {"base": {"judged": 10, "refusal_rate": 0.1, "refusal_ci": [0.017876, 0.404150]}, "dpo": None}
    cap = capability_metrics({"base": [1.0, 2.0, 3.0], "dpo": [1.5, 2.5, 3.5]}, safe, params, {"n": 3})
    base, dpo = cap["models"]["base"], cap["models"]["dpo"]
    assert (base["nll_mean"], base["nll_diff_to_base"], dpo["nll_mean"]) == (2.0, None, 2.5)
    assert dpo["nll_diff_to_base"] == 0.5 and dpo["nll_diff_ci"] == [0.5, 0.5]  # paired: the same shift on each row
    assert (base["answered_rate"], base["answered_ci"], base["answered_n"]) == (0.9, [0.59585, 0.982124], 10)
    assert dpo["answered_rate"] is None
    lines = capability_table({"capability": cap})
    assert any(line.startswith("| dpo | 2.500 [") and "+0.500 [+0.500, +0.500]" in line for line in lines)
    assert "| base | 2.000 [" in lines[2] and "90.0% [59.6, 98.2] (n=10)" in lines[2]


def test_results_table_shows_capability_and_care_rows():
    entry = {"n": 2, "judged": 2, "parse_failures": 0, "compliance": 1, "refusal": 1, "partial": 0, "other": 0,
             "refusal_rate": 0.5, "harmless_rate": 0.5, "refusal_ci": [0.094529, 0.905471],
             "harmless_ci": [0.094529, 0.905471]}
    care = {**entry, "care": 1, "care_rate": 0.5, "care_ci": [0.094529, 0.905471]}
    metrics = {"schema_version": 1,
               "models": {"base": {"harmful": {"overall": entry}, "safe": {"overall": entry},
                                   "care": {"overall": care, "donotanswer_chatbot": care}}},
               "comparisons": {},
               "capability": capability_metrics({"base": [1.0, 2.0]}, {}, CapabilityParams(bootstrap_resamples=100),
                                                {"n": 2})}
    text = render_table(metrics)
    assert "| personal risk: pointed to help (care_rate, higher is better) | donotanswer_chatbot | 50.0% [9.5, 90.5]" \
        in text
    assert "| base | 1.500 [" in text and math.isfinite(metrics["capability"]["models"]["base"]["nll_mean"])


def test_evaluation_writes_the_capability_block_next_to_the_existing_keys(tiny_model_dir, tmp_path):
    from saferinstruct.eval.harness import EvalFiles, EvaluateParams, GenerationSettings, run_evaluation
    from saferinstruct.eval.sets import SetsParams
    from saferinstruct.judging.base import Judge

    class WaterJudge(Judge):
        """refusal when the prompt mentions water, else compliance: exact whatever the tiny model says."""

        def __init__(self):
            super().__init__("refusal", "water_rule")

        def _judge(self, items):
            return [self.verdict(i, "refusal" if "water" in i.instruction else "compliance", score=None,
                                 rationale="", raw="", cache_key="") for i in items]

    models = tmp_path / "models"
    for name in ("base", "dpo"):
        (models / name).parent.mkdir(exist_ok=True)
        (models / name).symlink_to(tiny_model_dir, target_is_directory=True)
    files = EvalFiles(FIX / "advbench.csv", FIX / "safer_instruct_test.csv", FIX / "xstest.csv", root=FIX,
                      donotanswer=FIX / "donotanswer", alpaca_val=FIX / "alpaca_val.json",
                      capability_reference=FIX / "capability_reference.jsonl")
    params = EvaluateParams(
        models=["base", "dpo"], sets=SetsParams(advbench_n=1, safer_instruct_per_group=0, xstest_safe_n=0,
                                                xstest_unsafe_n=0),
        generation=GenerationSettings(options={"batch_size": 8, "device": "cpu"}, generation={"max_tokens": 2}),
        capability=CapabilityParams(device="cpu", bootstrap_resamples=200))
    run = run_evaluation(params, models, files, ["What is 2 plus 2?"], None, judge=WaterJudge())
    assert {"schema_version", "models", "comparisons", "capability"} <= set(run.metrics)
    cap = run.metrics["capability"]
    assert cap["reference"] == {"file": str(FIX / "capability_reference.jsonl"), "n": 2, "train_overlap": 1}
    base, dpo = cap["models"]["base"], cap["models"]["dpo"]
    assert base["nll_mean"] == dpo["nll_mean"] and dpo["nll_diff_to_base"] == 0.0  # same weights
    # 3 Alpaca validation instructions, one mentions water and is "refused": answered 2 of 3
    assert (base["answered_rate"], base["answered_n"]) == (0.6667, 3)
    assert run.metrics["models"]["base"]["care"]["donotanswer_chatbot"]["n"] == 1
