"""The evaluate stage's persisted generation cache and capability NLL cache, on tiny models: keyed by each model's
content (weights and tokenizer files, not its name or folder), cached answers are the same greedy text as fresh ones,
a re-run generates nothing for unchanged models and only the changed model's answers when one changes."""

from __future__ import annotations

import shutil

import pytest

from saferinstruct.eval.capability import CapabilityParams, Reference, model_nlls
from saferinstruct.eval.harness import EvalFiles, EvaluateParams, GenerationSettings, run_evaluation
from saferinstruct.eval.sets import SetsParams
from conftest import FIXTURES

FIX = FIXTURES / "eval"
FILES = EvalFiles(FIX / "advbench.csv", FIX / "safer_instruct_test.csv", FIX / "xstest.csv", root=FIX)
SETS = SetsParams(advbench_n=None, safer_instruct_per_group=None, xstest_safe_n=None, xstest_unsafe_n=None)


def _params() -> EvaluateParams:
    gen = GenerationSettings(options={"batch_size": 3, "device": "cpu"},
                             generation={"max_tokens": 6, "temperature": 0.0})
    return EvaluateParams(models=["base", "sft", "dpo"], sets=SETS, generation=gen)


def _perturb(model_dir) -> None:
    """Change one weight: another model, same architecture and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight[5].add_(3.0)
    model.save_pretrained(model_dir)


@pytest.fixture
def models_dir(tiny_model_dir, tmp_path):
    for name in ("base", "sft", "dpo"):
        shutil.copytree(tiny_model_dir, tmp_path / "models" / name)
    return tmp_path / "models"


def _calls(run) -> dict[str, int]:
    return {m: s["calls"] for m, s in run.stats["models"].items()}


def test_cached_answers_equal_fresh_ones_and_only_changed_models_generate(models_dir, tmp_path):
    cache = tmp_path / "cache"
    fresh = run_evaluation(_params(), models_dir, FILES, [], None)  # no cache at all
    first = run_evaluation(_params(), models_dir, FILES, [], cache)
    n = fresh.stats["prompts"]
    assert _calls(first) == {"base": n, "sft": n, "dpo": n}
    again = run_evaluation(_params(), models_dir, FILES, [], cache)
    assert _calls(again) == {"base": 0, "sft": 0, "dpo": 0}
    assert [r.response for r in again.results] == [r.response for r in first.results] == \
        [r.response for r in fresh.results]  # greedy text identical: fresh, first cached run, read from the cache

    _perturb(models_dir / "dpo")  # a new DPO model (e.g. another recipe); base and SFT unchanged
    changed = run_evaluation(_params(), models_dir, FILES, [], cache)
    assert _calls(changed) == {"base": 0, "sft": 0, "dpo": n}
    by_model = {m: [r.response for r in changed.results if r.model_name == m] for m in ("base", "dpo")}
    assert by_model["dpo"] != by_model["base"]  # the changed model really answered anew
    assert [r.response for r in changed.results if r.model_name == "base"] == \
        [r.response for r in first.results if r.model_name == "base"]


def test_capability_nll_is_batched_and_cached(models_dir, tmp_path):
    refs = [Reference(f"r{i}", f"Tell me about item {i}" + " please" * i, "It is a thing." * (1 + i % 3))
            for i in range(5)]
    one = model_nlls(models_dir / "base", refs, CapabilityParams(batch_size=1, device="cpu"))
    many = model_nlls(models_dir / "base", refs, CapabilityParams(batch_size=4, device="cpu"))
    assert many == pytest.approx(one, abs=1e-5)  # padding changes nothing but float rounding; order kept

    reference = tmp_path / "refs.jsonl"
    reference.write_text("".join(f'{{"id": "{r.id}", "instruction": "{r.instruction}", "output": "{r.answer}"}}\n'
                                 for r in refs))
    files = EvalFiles(**{**FILES.__dict__, "capability_reference": reference})
    params = _params().model_copy(update={"capability": CapabilityParams(reference_n=5, device="cpu",
                                                                         bootstrap_resamples=100)})
    first = run_evaluation(params, models_dir, files, [], tmp_path / "cache")
    assert first.stats["capability_cached"] == ["sft", "dpo"]  # keyed by content: copies of base score as base did
    _perturb(models_dir / "sft")
    again = run_evaluation(params, models_dir, files, [], tmp_path / "cache")
    assert again.stats["capability_cached"] == ["base", "dpo"]  # only the changed model is scored again
    assert again.metrics["capability"]["models"]["base"] == first.metrics["capability"]["models"]["base"]
    assert again.metrics["capability"]["models"]["sft"] != first.metrics["capability"]["models"]["sft"]
