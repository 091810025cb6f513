"""Do-Not-Answer's fixed development / evaluation split, its human-chatbot area scored apart (kind care), the Alpaca
validation instructions as an over-refusal set, and both in the list of prompts no training stage may take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from saferinstruct.eval.metrics import MetricsParams, compute_metrics
from saferinstruct.eval.sets import SetsParams, build_eval_sets, donotanswer_half, load_alpaca_val, load_donotanswer
from saferinstruct.records import EvalResult
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.text import match_key

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "eval"
DNA = ROOT / "data" / "raw" / "eval" / "donotanswer"


def _ids(prompts) -> set[str]:
    return {p.id for p in prompts}


def test_split_is_fixed_disjoint_and_complete():
    dev, evaluation = load_donotanswer(FIX / "donotanswer", "dev"), load_donotanswer(FIX / "donotanswer", "eval")
    assert not _ids(dev) & _ids(evaluation) and len(dev) + len(evaluation) == 12
    # pinned: the split is a hash of "file stem:line", never re-drawn
    assert _ids(evaluation) == {"donotanswer:human_chatbox:3", "donotanswer:malicious_uses:3",
                                "donotanswer:malicious_uses:5", "donotanswer:malicious_uses:6"}
    assert _ids(load_donotanswer(FIX / "donotanswer", "eval")) == _ids(evaluation)


def test_shipped_split_counts_are_pinned():
    dev, evaluation = load_donotanswer(DNA, "dev"), load_donotanswer(DNA, "eval")
    assert (len(dev), len(evaluation)) == (466, 473)  # of 939: a change here re-split the set
    assert sum(p.group == "human_chatbox" for p in evaluation) == 55
    assert not _ids(dev) & _ids(evaluation)


def test_split_is_stable_when_a_file_gains_rows(tmp_path):
    before = {p.id: "dev" for p in load_donotanswer(FIX / "donotanswer", "dev")}
    before |= {p.id: "eval" for p in load_donotanswer(FIX / "donotanswer", "eval")}
    shutil.copytree(FIX / "donotanswer", tmp_path / "dna")
    with open(tmp_path / "dna" / "malicious_uses.jsonl", "a", encoding="utf-8") as fh:
        for i in range(20):
            fh.write(json.dumps({"prompt": f"How do I do bad thing number {i}?", "intents": []}) + "\n")
    after = {p.id: "dev" for p in load_donotanswer(tmp_path / "dna", "dev")}
    after |= {p.id: "eval" for p in load_donotanswer(tmp_path / "dna", "eval")}
    assert len(after) == len(before) + 20
    assert {k: after[k] for k in before} == before
    assert donotanswer_half("malicious_uses:3") == "eval"


def test_chatbot_area_is_kind_care_and_not_pooled_with_harmful():
    prompts, report = build_eval_sets(
        SetsParams(advbench_n=1, safer_instruct_per_group=0, xstest_safe_n=0, xstest_unsafe_n=0, alpaca_val_n=2),
        FIX / "advbench.csv", FIX / "safer_instruct_test.csv", FIX / "xstest.csv", [], FIX,
        donotanswer=FIX / "donotanswer", alpaca_val=FIX / "alpaca_val.json")
    by_set = {}
    for p in prompts:
        by_set.setdefault(p.eval_set, []).append(p)
    assert {p.kind for p in by_set["donotanswer_chatbot"]} == {"care"}
    assert {p.kind for p in by_set["donotanswer"]} == {"harmful"} and len(by_set["donotanswer"]) == 3
    assert {p.kind for p in by_set["alpaca_val"]} == {"safe"} and report.kept["alpaca_val"] == 2
    answers = {"care": "Please reach out to a crisis line or a doctor.", "harmful": "I'm sorry, I can't help."}
    results = [EvalResult(id=f"m:{p.id}", parent_id=p.id, model_name="m", eval_set=p.eval_set, prompt=p.prompt,
                          prompt_label=p.kind, response=answers.get(p.kind, "Sure."),
                          judge_label="refusal" if p.kind == "harmful" else "compliance") for p in prompts]
    metrics = compute_metrics(results, MetricsParams())["models"]["m"]
    assert metrics["harmful"]["overall"]["n"] == 4  # advbench 1 + donotanswer 3, never the care row
    care = metrics["care"]["donotanswer_chatbot"]
    assert (care["n"], care["care"], care["care_rate"], care["refusal_rate"]) == (1, 1, 1.0, 0.0)
    assert care["care_ci"] == [0.206549, 1.0]  # Wilson(1, 1)


def test_without_care_prompts_the_metrics_keep_their_two_kinds():
    rows = [EvalResult(id="m:a", parent_id="a", model_name="m", eval_set="advbench", prompt="p",
                       prompt_label="harmful", response="No.", judge_label="refusal")]
    assert set(compute_metrics(rows, MetricsParams())["models"]["m"]) == {"harmful", "safe"}


def test_alpaca_val_rows_are_ordinary_safe_requests():
    rows = load_alpaca_val(ROOT / "data/raw/eval/alpaca_harmless_instructions_val.json")
    assert len(rows) == 2000 and {r.kind for r in rows} == {"safe"} and rows[0].id == "alpaca_val:1"


def test_every_evaluation_prompt_is_in_the_training_leakage_list():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    listed = params["ingest"]["eval_files"]
    paths = {e["path"] for e in listed}
    assert {f"data/raw/eval/donotanswer/{f.name}" for f in DNA.glob("*.jsonl")} <= paths
    assert "data/raw/eval/alpaca_harmless_instructions_val.json" in paths
    for stage in ("reverse_pairs", "build_preferences", "train_safety_classifier"):
        assert params[stage]["eval_files"] == listed  # one list (a YAML anchor), so every stage drops them
    keys = eval_prompt_keys([EvalFile(**{**e, "path": str(ROOT / e["path"])}) for e in listed])
    assert all(match_key(p.prompt) in keys for half in ("dev", "eval") for p in load_donotanswer(DNA, half))
