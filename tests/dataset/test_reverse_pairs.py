"""reverse_pairs: one loader per format, length bounds, dedup, leakage, caps, deterministic split, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner
from conftest import FIXTURES, REPO, stage_args, stage_path

from saferinstruct.hashing import in_holdout
from saferinstruct.reverse_pairs import ReversePairsParams, build_reverse_pairs
from saferinstruct.io import read_rows
from saferinstruct.records import RejectedRow, ReversePair

INS = FIXTURES / "data" / "instructions"


def datasets() -> list[dict]:
    return [
        {"name": "alp", "format": "alpaca", "path": str(INS / "alpaca_mini.json"), "licence": "CC BY-NC 4.0"},
        {"name": "lima", "format": "lima", "path": str(INS / "lima_mini.json"), "licence": "CC BY-NC-SA 4.0"},
        {"name": "si", "format": "selfinstruct", "path": str(INS / "selfinstruct_mini.jsonl"), "licence": "Apache-2.0"},
        {"name": "chat", "format": "messages", "path": str(INS / "sharegpt_mini.jsonl"), "licence": "CC0"},
    ]


def params(**kw) -> ReversePairsParams:
    base = {"val_fraction": 0.25, "min_response_chars": 10, "datasets": datasets(),
            "eval_files": [{"path": str(FIXTURES / "data/eval/eval_prompts.jsonl"), "field": "prompt"}]}
    return ReversePairsParams.model_validate(base | kw)


def test_loaders_and_filters():
    res = build_reverse_pairs(params())
    kept = {r.id: r for r in res.train + res.val}
    assert sorted(kept) == ["alp:15", "alp:2", "alp:7", "chat:1", "chat:2", "lima:2", "si:task_0.0", "si:task_0.1"]
    assert kept["alp:7"].instruction == "Translate the sentence into French.\n\nThe cat sleeps."  # input appended
    assert kept["alp:15"].response.startswith("def add(a, b):\n    return a + b")  # code indentation kept
    assert kept["si:task_0.0"].instruction == "Fix the spelling in the sentence.\n\nI beleive it."
    assert kept["chat:1"].instruction == "Give me a tip for better sleep."  # system turn skipped
    assert kept["chat:2"].response.startswith("Eleven")
    assert kept["lima:2"].licence == "CC BY-NC-SA 4.0" and kept["lima:2"].dataset == "lima"
    reasons = {r.id: r.reason for r in res.rejected}
    assert reasons == {"alp:12": "duplicate", "alp:13": "eval_leak", "alp:14": "response_too_short",
                       "lima:3": "multi_turn", "chat:3": "no_user_assistant_turns"}
    assert res.stats["read"] == 13 and res.stats["kept"] == 8 and res.stats["rejected"]["duplicate"] == 1


def test_split_is_deterministic_and_stable():
    a, b = build_reverse_pairs(params()), build_reverse_pairs(params())
    assert [r.id for r in a.val] == [r.id for r in b.val] and len(a.val) == 2 and len(a.train) == 6
    assert not {r.id for r in a.val} & {r.id for r in a.train}


def _split(ids: list[str], fraction: float, salt) -> set[str]:
    return {i for i in ids if in_holdout(i, fraction, salt)}


def test_rows_never_move_between_splits_when_rows_are_added_or_removed():
    ids = [f"x{i}" for i in range(2000)]
    base = _split(ids, 0.1, 0)
    assert 0.08 <= len(base) / len(ids) <= 0.12  # the fraction is honoured on average
    grown = ids + [f"new{i}" for i in range(500)]
    shrunk = ids[::3]
    for version in (grown, shrunk, list(reversed(ids))):
        held = _split(version, 0.1, 0)
        moved = {i for i in set(version) & set(ids) if (i in held) != (i in base)}
        assert not moved, f"{len(moved)} surviving rows changed split"
    assert _split(ids, 0.1, 1) != base  # the salt (seed) picks another split
    assert not _split(ids, 0.0, 0) and _split(ids, 1.0, 0) == set(ids)


def test_reverse_pairs_split_stable_when_a_dataset_changes():
    """The stage-level view: dropping a dataset leaves every other row in the split it had."""
    full = build_reverse_pairs(params(val_fraction=0.5))
    fewer = build_reverse_pairs(params(val_fraction=0.5, datasets=datasets()[:2]))
    val_full, val_fewer = {r.id for r in full.val}, {r.id for r in fewer.val}
    survivors = {r.id for r in fewer.train + fewer.val}
    assert survivors < {r.id for r in full.train + full.val}
    assert {i for i in survivors if (i in val_full) != (i in val_fewer)} == set()


def test_length_bounds_and_cap():
    res = build_reverse_pairs(params(max_response_chars=60, max_instruction_chars=30))
    reasons = {r.id: r.reason for r in res.rejected}
    assert reasons["alp:2"] == "response_too_long" and reasons["alp:7"] == "instruction_too_long"
    capped = build_reverse_pairs(params(datasets=[datasets()[0] | {"max_pairs": 1}]))
    assert len(capped.train + capped.val) == 1
    assert sum(r.reason == "over_cap" for r in capped.rejected) == 2
    again = build_reverse_pairs(params(datasets=[datasets()[0] | {"max_pairs": 1}]))
    assert [r.id for r in again.train + again.val] == [r.id for r in capped.train + capped.val]


def _run_stage(load_stage, tmp_path: Path, params_path: Path):
    out = {k: stage_path("reverse_pairs", tmp_path, f"--{k}") for k in ("train", "val", "rejected", "stats")}
    args = stage_args("reverse_pairs", tmp_path, params=params_path)
    return CliRunner().invoke(load_stage("reverse_pairs").main, args), out


# The shipped instruction data with the test's own params (the live params.yaml may be tuned without breaking this)
RAW = REPO / "data" / "raw"
EVAL_FILES = [("advbench_harmful_behaviors.csv", "goal", "unsafe"),
              ("alpaca_harmless_instructions_val.json", "instruction", "safe")]
DATASETS = [("alpaca", "alpaca_en_demo.json", 150), ("lima", "lima.json", 50),
            ("selfinstruct", "selfinstruct_user_oriented_instructions.jsonl", 50)]
SHIPPED = {"seed": 0, "val_fraction": 0.1, "min_response_chars": 20, "max_response_chars": 800,
           "min_instruction_chars": 5, "max_instruction_chars": 400,
           "eval_files": [{"path": str(RAW / "eval" / f), "field": fld, "label": lab} for f, fld, lab in EVAL_FILES],
           "datasets": [{"name": n, "format": n, "path": str(RAW / "instructions" / f), "licence": "test",
                         "max_pairs": cap} for n, f, cap in DATASETS]}


def test_default_params_on_shipped_data(load_stage, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"reverse_pairs": SHIPPED}))
    res, out = _run_stage(load_stage, tmp_path, tmp_path / "params.yaml")
    assert res.exit_code == 0, res.output
    train, val = read_rows(out["train"], ReversePair), read_rows(out["val"], ReversePair)
    assert 100 <= len(train) <= 400 and 0.05 <= len(val) / (len(train) + len(val)) <= 0.15
    assert {r.dataset for r in train} == {"alpaca", "lima", "selfinstruct"}
    assert all(20 <= len(r.response) <= 800 for r in train + val)


def test_hh_rlhf_first_question_and_answer(tmp_path):
    path = tmp_path / "hh.jsonl"
    rows = [{"chosen": "\n\nHuman: How do I fold a paper crane?\n\nAssistant: Start with a square sheet and fold it "
                       "diagonally both ways.\n\nHuman: thanks\n\nAssistant: You are welcome.", "rejected": "x"},
            {"chosen": "\n\nAssistant: I speak first here, which no transcript should do.", "rejected": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = build_reverse_pairs(params(val_fraction=0.0, datasets=[
        {"name": "hh", "format": "hh_rlhf", "path": str(path), "licence": "MIT"}]))
    assert [(r.id, r.instruction, r.response) for r in res.train] == [
        ("hh:1", "How do I fold a paper crane?", "Start with a square sheet and fold it diagonally both ways.")]
    assert [(r.id, r.reason) for r in res.rejected] == [("hh:2", "no_user_assistant_turns")]
