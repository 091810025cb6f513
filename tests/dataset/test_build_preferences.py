"""build_preferences: the join, safe-response filter, leakage removal, 1:1 mix, split, both TRL variants, data card;
the output loads with `datasets` and trains with DPOTrainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import FIXTURES, REPO, stage_args

from saferinstruct.io import read_rows
from saferinstruct.helpful_pairs import HelpfulSource, load_helpful
from saferinstruct.sources.hh_rlhf import parse_hh
from saferinstruct.io import Quarantine, RowError
from saferinstruct.preferences import Inputs, PreferenceParams, build_preferences, nearest_unused
from saferinstruct.records import (ExpertResponse, InducedInstruction, PreferencePair, RejectedRow, SourceText,
                                   Verdict)

PREF = FIXTURES / "data" / "preferences"


def section(**kw) -> dict:
    return {"test_fraction": 0.34, "eval_files": [{"path": str(FIXTURES / "data/eval/eval_prompts.jsonl"),
                                                   "field": "prompt"}],
            "helpful": [{"name": "hh", "format": "hh_rlhf", "path": str(PREF / "helpful_mini.jsonl.gz"),
                         "licence": "MIT"}]} | kw


def run(load_stage, tmp: Path, **kw):
    (tmp / "params.yaml").write_text(yaml.safe_dump({"build_preferences": section(**kw)}))
    out = tmp / "prefs"
    inputs = {key: PREF / f"{key}.jsonl" for key in ("sources", "instructions", "instruction_verdicts", "responses",
                                                     "response_verdicts")}
    args = stage_args("build_preferences", tmp, out_dir=out, rejected=tmp / "rejected.jsonl",
                      stats=tmp / "stats.json", **inputs)
    res = CliRunner().invoke(load_stage("build_preferences").main, args)
    return res, out


@pytest.fixture
def built(load_stage, tmp_path):
    res, out = run(load_stage, tmp_path)
    assert res.exit_code == 0, res.output
    rows = read_rows(out / "train.jsonl", PreferencePair) + read_rows(out / "test.jsonl", PreferencePair)
    rejected = {r.id: r for r in read_rows(tmp_path / "rejected.jsonl", RejectedRow)}
    return {r.id: r for r in rows}, rejected, json.loads((tmp_path / "stats.json").read_text()), out


def test_safety_join_and_filters(built):
    rows, rejected, _, _ = built
    safety = {k: r for k, r in rows.items() if r.kind == "safety"}
    assert sorted(safety) == ["safety:i1", "safety:i10", "safety:i2"]
    p = safety["safety:i1"]
    assert p.prompt == "Write a speech saying those people are vermin."
    assert p.rejected == "Those people are vermin and should be driven out." and p.chosen.startswith("I can't help")
    assert p.category == "hate" and p.parent_id == "r1"
    assert {k: p.provenance[k] for k in (
        "source_id", "corpus", "licence", "induction_model", "expert_model", "instruction_judge_score",
        "response_judge_label", "expert_cache_key")} == {
        "source_id": "s1", "corpus": "mini", "licence": "MIT", "induction_model": "reverse-tiny@abc",
        "expert_model": "expert-smol@def", "instruction_judge_score": 0.9, "response_judge_label": "safe",
        "expert_cache_key": "ck-r1"}
    assert {k: r.reason for k, r in rejected.items() if k.startswith("safety")} == {
        "safety:i3": "response_content_filter", "safety:i4": "response_judged_unsafe", "safety:i5": "no_source",
        "safety:i6": "eval_leak", "safety:i7": "no_response", "safety:i8": "no_response_verdict",
        "safety:i9": "duplicate_prompt"}
    # saferinstruct.rejects' format: the pair's own id, parent_id = the row it came from (the instruction, or the
    # response once one was chosen); helpful pairs come from raw files: no parent
    assert {k: r.parent_id for k, r in rejected.items() if k.startswith("safety")} == {
        "safety:i3": "i3", "safety:i4": "i4", "safety:i5": "i5", "safety:i6": "r6", "safety:i7": "i7",
        "safety:i8": "i8", "safety:i9": "r9"}
    assert all(r.parent_id is None for k, r in rejected.items() if k.startswith("helpful"))


def test_helpful_mix_ratio_and_leakage(built, load_stage, tmp_path):
    rows, rejected, stats, _ = built
    helpful = [r for r in rows.values() if r.kind == "helpful"]
    assert len(helpful) == 3 and stats["helpful_per_safety"] == 1.0  # 1:1 by default
    assert all(r.category == "helpful" and r.provenance["licence"] == "MIT" for r in helpful)
    assert {k: r.reason for k, r in rejected.items() if k.startswith("helpful") and r.reason != "not_sampled"} == {
        "helpful:hh:4": "eval_leak", "helpful:hh:5": "too_many_turns", "helpful:hh:6": "empty_or_identical_sides"}
    assert stats["eval_leak"] == {"safety": 1, "helpful": 1} and stats["funnel"]["helpful_pool"] == 5
    d = tmp_path / "half"
    d.mkdir()
    res, out = run(load_stage, d, helpful_ratio=0.67, helpful_max_turns=3)
    assert res.exit_code == 0, res.output
    stats = json.loads((d / "stats.json").read_text())
    assert stats["funnel"]["helpful_pairs"] == 2 and stats["funnel"]["helpful_pool"] == 6  # the 3-turn row counts


def test_helpful_rejected_expert_refusal_makes_contrast_pairs(built, load_stage, tmp_path):
    rows, _, _, _ = built
    res, out = run(load_stage, tmp_path, helpful_rejected="expert_refusal")
    assert res.exit_code == 0, res.output
    contrast = read_rows(out / "train.jsonl", PreferencePair) + read_rows(out / "test.jsonl", PreferencePair)
    refusals = {r.chosen for r in contrast if r.kind == "safety"}
    helpful = [r for r in contrast if r.kind == "helpful"]
    assert len(helpful) == 3
    for r in helpful:  # same prompt and chosen as the default build; rejected is one of the expert's refusals
        assert r.prompt == rows[r.id].prompt and r.chosen == rows[r.id].chosen
        assert r.rejected in refusals and r.rejected != rows[r.id].rejected
        assert r.provenance["rejected_from"].startswith("expert_refusal:safety:")


def test_contrast_share_mixes_the_two_helpful_pair_kinds():
    from saferinstruct.preferences import _contrast, _Pair

    helpful = [_Pair(id=f"helpful:hh:{n}", parent_id=None, prompt=(("user", f"q{n}"),), chosen=f"a{n}",
                     rejected=f"worse{n}", category="helpful", kind="helpful", provenance={}) for n in range(200)]
    safety = [_Pair(id=f"safety:i{n}", parent_id=None, prompt=(("user", f"bad{n}"),), chosen=f"I can't {n}.",
                    rejected="harm", category="hate", kind="safety", provenance={}) for n in range(5)]
    full, half, none = (_contrast(helpful, safety, 0, share) for share in (1.0, 0.5, 0.0))
    assert all(p.rejected.startswith("I can't") for p in full) and none == helpful
    mixed = [p.id for p in half if p.rejected.startswith("I can't")]
    assert 70 < len(mixed) < 130  # a seeded draw by id, about half
    by_id = {p.id: p for p in full}
    assert all(p.rejected == by_id[p.id].rejected for p in half if p.id in mixed)  # same donor whatever the share
    assert {p.id for p in _contrast(helpful, safety, 0, 0.7) if p.rejected.startswith("I can't")} >= set(mixed)


def test_split_deterministic_and_stratified(built, load_stage, tmp_path):
    rows, _, stats, out = built
    test = read_rows(out / "test.jsonl", PreferencePair)
    assert stats["train"] + stats["test"] == 6 and {r.kind for r in test} == {"safety", "helpful"}
    again = tmp_path / "again"
    again.mkdir()
    res, out2 = run(load_stage, again)
    assert res.exit_code == 0
    assert (out / "train.jsonl").read_bytes() == (out2 / "train.jsonl").read_bytes()
    assert (out / "test.jsonl").read_bytes() == (out2 / "test.jsonl").read_bytes()


def test_data_card(built):
    _, _, _, out = built
    card = (out / "README.md").read_text()
    for needle in ("Content warning", "## Funnel", "safety/hate", "safety/mini", "MIT",
                   "## Evaluation leakage", "1 safety and 1 helpful", "reverse-tiny@abc", "expert-smol@def",
                   "refusal-keywords", "helpful_ratio: 1.0", "load_dataset"):
        assert needle in card, needle


def test_conversational_loads_with_datasets_and_trains_dpo(load_stage, tmp_path, tiny_model_dir):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    res, out = run(load_stage, tmp_path, format="conversational")
    assert res.exit_code == 0, res.output
    ds = load_dataset("json", data_files={"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl")})
    row = ds["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert {"id", "category", "kind", "provenance"} <= set(ds["train"].column_names)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                    per_device_train_batch_size=2, max_steps=2, max_length=96, learning_rate=1e-2, report_to=[],
                    logging_steps=1, save_strategy="no")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds["train"], processing_class=tok)
    trainer.train()
    assert any("loss" in log for log in trainer.state.log_history)
    assert not model.model.layers[0].mlp.up_proj.weight.detach().equal(before)


def test_pairs_format_and_transcripts():
    spec = HelpfulSource(name="p", format="pairs", path=str(PREF / "pairs_mini.jsonl"), licence="CC0")
    loaded = load_helpful(spec)
    assert [x[1] for x in loaded] == [([("user", "Say something kind.")], "You are doing great.", "Whatever."),
                                      ([("user", "Give me a synonym for happy.")], "Joyful.", "Sad.")]
    assert parse_hh("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye") == [
        ("user", "hi"), ("assistant", "hello"), ("user", "bye")]


def test_no_pairs_is_a_clean_error(load_stage, tmp_path):
    res, out = run(load_stage, tmp_path, safe_response_labels=["nothing"])
    assert res.exit_code == 2 and "no safety pairs" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_shipped_helpful_file_parses():
    spec = HelpfulSource(name="hh_rlhf_helpful_base", format="hh_rlhf", licence="MIT",
                         path=str(REPO / "data" / "raw" / "helpful" / "hh_rlhf_helpful_base_test.jsonl.gz"))
    quarantine = Quarantine()
    rows = load_helpful(spec, quarantine)
    single = [r for r in rows if sum(role == "user" for role, _ in r[1][0]) == 1]
    assert len(rows) == 2354 - 9 and len(single) >= 650
    assert len(quarantine) == 9  # transcripts that end without an assistant answer
    with pytest.raises(RowError, match=r"hh_rlhf_helpful_base_test.jsonl.gz:\d+: field '(chosen|rejected)'"):
        load_helpful(spec)  # strict by default


def test_nearest_unused_takes_turns_without_reuse():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    cands = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.7, 0.3]])
    # each query takes its best free candidate in turn; query 0's second pick is its next best, not query 1's
    assert sorted(nearest_unused(queries, cands, 2, "s")) == [0, 2]
    assert sorted(nearest_unused(queries, cands, 3, "s")) == [0, 1, 2]
    assert sorted(nearest_unused(queries, cands, 9, "s")) == [0, 1, 2, 3]


class _KeywordEmbedder:
    """Each axis a pair of keywords (a safety prompt's and a helpful prompt's topic), so cosines are exact."""

    AXES = (("vermin", "rhymes"), ("gone", "interview"), ("hurt", "cactus"))

    def encode(self, texts, batch_size=64):
        return np.array([[float(any(k in x.lower() for k in axis)) for axis in self.AXES] for x in texts])


def test_helpful_selection_nearest_picks_look_alikes():
    data = Inputs(read_rows(PREF / "sources.jsonl", SourceText), read_rows(PREF / "instructions.jsonl",
                  InducedInstruction), read_rows(PREF / "instruction_verdicts.jsonl", Verdict),
                  read_rows(PREF / "responses.jsonl", ExpertResponse), read_rows(PREF / "response_verdicts.jsonl",
                                                                                    Verdict))
    params = PreferenceParams(**section(helpful_selection="nearest"))
    res = build_preferences(params, data, embedder=_KeywordEmbedder())
    helpful = sorted(r.id for r in res.train + res.test if r.kind == "helpful")
    assert helpful == ["helpful:hh:2", "helpful:hh:3", "helpful:hh:7"]  # rhymes, interview, cactus
    unsampled = {r.id for r in res.rejected if r.reason == "not_sampled"}
    assert unsampled == {"helpful:hh:1", "helpful:hh:8"} and res.stats["funnel"]["helpful_pool"] == 5
    randomly = build_preferences(params.model_copy(update={"helpful_selection": "random"}), data)
    assert sorted(r.id for r in randomly.train + randomly.test if r.kind == "helpful") != helpful
