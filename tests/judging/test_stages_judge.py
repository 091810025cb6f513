"""Stage commands (CliRunner): train_safety_classifier -> judge_instructions -> select_instructions -> respond ->
self_evaluate on small fixtures; cache properties of the judge stage; clean errors on bad input and config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.io import read_rows
from saferinstruct.records import ExpertResponse, InducedInstruction, Verdict
from conftest import FIXTURES, REPO, stage_args

FIX = FIXTURES / "judging"
JSON_UNSAFE = '{{"label": "unsafe", "score": 0.9, "rationale": "r {h}"}}'


# The tests' own sections (not the live params.yaml): the offline chain's judges and selection rule
GENERATION = {"max_tokens": 128, "temperature": 0.0}
SECTIONS = {
    "train_safety_classifier": {"holdout_fraction": 0.2, "seed": 0, "l2": 0.001, "threshold": 0.5, "max_length": 128,
                                "batch_size": 64, "max_per_file": 1000, "eval_sample": 200, "eval_files": []},
    "judge_instructions": {"backend": "embedding_classifier", "task": "instruction", "generation": GENERATION},
    "select_instructions": {"label": "unsafe", "min_score": 0.6, "keep_unparsed": False},
    "respond": {"backend": "transformers", "options": {"batch_size": 16},
                "generation": {"max_tokens": 64, "temperature": 0.0}, "max_sentences": 2},
    "self_evaluate": {"backend": "safe_response", "task": "response", "generation": GENERATION},
}


def _params(tmp_path: Path, **overrides: dict) -> Path:
    sections = {k: dict(v) for k, v in SECTIONS.items()}
    for key, value in overrides.items():
        sections[key] = {**sections[key], **value}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def _invoke(load_stage, name: str, args: list[str]):
    return CliRunner().invoke(load_stage(name).main, args)


def _judge(load_stage, tmp_path: Path, params: Path, filtered: Path = FIX / "filtered.jsonl", cache: str = "cache"):
    return _invoke(load_stage, "judge_instructions", stage_args(
        "judge_instructions", tmp_path, params=params, filtered=filtered, classifier=tmp_path / "clf",
        out=tmp_path / "verdicts.jsonl", cache=tmp_path / cache, stats=tmp_path / "judge.json"))


def _stats(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / name).read_text())


def test_offline_chain(load_stage, tmp_path):
    """The embedded default path: classifier head trained by its stage, offline judge, selection, expert (fake here),
    offline self-evaluation: every stage writes its outputs and funnel stats."""
    evals = [{"path": str(FIX / "eval.csv"), "field": "prompt", "label": "safe"}]
    params = _params(tmp_path, train_safety_classifier={"max_per_file": None, "eval_sample": 5, "eval_files": evals},
                     respond={"backend": "fake", "options": {"template": "I'm sorry, but I can't help with that."}})
    res = _invoke(load_stage, "train_safety_classifier", [
        "--unsafe", str(FIX / "unsafe.csv"), "--safe", str(FIX / "safe.json"),
        "--out", str(tmp_path / "clf"), "--stats", str(tmp_path / "clf.json"), "--params", str(params)])
    assert res.exit_code == 0, res.output
    clf = _stats(tmp_path, "clf.json")
    assert clf["dropped"]["label_conflict"] == 2 and clf["holdout"]["n"] > 0 and "eval.csv" in clf["eval_measured"]
    assert (tmp_path / "clf" / "head.safetensors").is_file() and (tmp_path / "clf" / "config.json").is_file()

    assert _judge(load_stage, tmp_path, params).exit_code == 0
    verdicts = {v.parent_id: v for v in read_rows(tmp_path / "verdicts.jsonl", Verdict)}
    assert len(verdicts) == 6 and all(0.0 <= v.score <= 1.0 and v.judge == "embedding_classifier"
                                      for v in verdicts.values())
    assert verdicts["ins-1"].label == "unsafe" and verdicts["ins-3"].label == "safe"
    assert (tmp_path / "cache").is_dir() and _stats(tmp_path, "judge.json")["in"] == 6

    res = _invoke(load_stage, "select_instructions", [
        "--filtered", str(FIX / "filtered.jsonl"), "--verdicts", str(tmp_path / "verdicts.jsonl"),
        "--out", str(tmp_path / "instructions.jsonl"), "--rejected", str(tmp_path / "rej.jsonl"),
        "--stats", str(tmp_path / "select.json"), "--params", str(params)])
    assert res.exit_code == 0, res.output
    kept = read_rows(tmp_path / "instructions.jsonl", InducedInstruction)
    assert "ins-1" in {r.id for r in kept} and "ins-3" not in {r.id for r in kept}

    res = _invoke(load_stage, "respond", [
        "--instructions", str(tmp_path / "instructions.jsonl"), "--model", str(tmp_path / "unused"),
        "--prompt", str(REPO / "prompts" / "expert.md"), "--out", str(tmp_path / "responses.jsonl"),
        "--cache", str(tmp_path / "cache_respond"), "--stats", str(tmp_path / "respond.json"), "--params", str(params)])
    assert res.exit_code == 0, res.output
    assert len(read_rows(tmp_path / "responses.jsonl", ExpertResponse)) == len(kept)
    assert _stats(tmp_path, "respond.json")["gateway"]["calls"] == len(kept)

    res = _self_evaluate(load_stage, tmp_path, params, tmp_path / "responses.jsonl")
    assert res.exit_code == 0, res.output
    assert _stats(tmp_path, "self.json")["kept"] == len(kept)


def _self_evaluate(load_stage, tmp_path: Path, params: Path, responses: Path):
    return _invoke(load_stage, "self_evaluate", stage_args(
        "self_evaluate", tmp_path, params=params, responses=responses, out=tmp_path / "rverdicts.jsonl",
        cache=tmp_path / "cache_self", stats=tmp_path / "self.json"))


def test_self_evaluate_keeps_only_clean_refusals(load_stage, tmp_path):
    res = _self_evaluate(load_stage, tmp_path, _params(tmp_path), FIX / "responses.jsonl")
    assert res.exit_code == 0, res.output
    verdicts = read_rows(tmp_path / "rverdicts.jsonl", Verdict)
    assert [v.parent_id for v in verdicts if v.label == "safe"] == ["ins-1:expert", "ins-5:expert"]
    stats = _stats(tmp_path, "self.json")
    assert stats["dropped"] == {"empty_response": 1, "judged_unsafe": 3, "outcome_content_filter": 1}
    assert stats["in"] == 7 and stats["judged"] == 5 and stats["kept"] == 2
    assert len(read_rows(tmp_path / "rverdicts.jsonl", Verdict)) == 5


SAFE_SCORED = '{{"label": "safe", "score": 0.7, "rationale": "a polite refusal"}}'


@pytest.mark.parametrize("threshold,kept", [(None, 5), (0.8, 5), (0.7, 0), (0.5, 0)])
def test_self_evaluate_threshold_drops_scored_answers(load_stage, tmp_path, threshold, kept):
    """A scored verdict (P(unsafe) 0.7) at or above self_evaluate.threshold is not kept, and is written as unsafe so
    that build_preferences (which reads labels) drops the answer too; null: the label alone decides."""
    params = _params(tmp_path, self_evaluate={"backend": "fake", "options": {"template": SAFE_SCORED},
                                              "threshold": threshold})
    res = _self_evaluate(load_stage, tmp_path, params, FIX / "responses.jsonl")
    assert res.exit_code == 0, res.output
    stats = _stats(tmp_path, "self.json")
    verdicts = read_rows(tmp_path / "rverdicts.jsonl", Verdict)
    assert stats["judged"] == 5 and stats["kept"] == kept and len(verdicts) == 5
    assert stats["dropped"].get("above_threshold", 0) == 5 - kept
    assert {v.label for v in verdicts} == {"safe" if kept else "unsafe"} and {v.score for v in verdicts} == {0.7}
    if not kept:
        assert verdicts[0].rationale == f"P(unsafe)=0.7 >= threshold {threshold}; judge label safe: a polite refusal"


def test_llm_judge_stage_cache_properties(load_stage, tmp_path):
    """Crash half way then re-run: total calls == items. Unchanged re-run: no call. One changed row: one call."""
    crash = _params(tmp_path, judge_instructions={"backend": "fake",
                                                  "options": {"template": JSON_UNSAFE, "crash_after": 3}})
    res = _judge(load_stage, tmp_path, crash)
    assert res.exit_code != 0 and not (tmp_path / "verdicts.jsonl").exists()
    params = _params(tmp_path, judge_instructions={"backend": "fake", "options": {"template": JSON_UNSAFE}})
    assert _judge(load_stage, tmp_path, params).exit_code == 0
    first = _stats(tmp_path, "judge.json")
    assert first["gateway"]["calls"] == 3 and first["gateway"]["cache_hits"] == 3  # 3 paid before the crash
    assert first["labels"] == {"unsafe": 6} and first["parse_failures"] == 0
    assert _judge(load_stage, tmp_path, params).exit_code == 0
    assert _stats(tmp_path, "judge.json")["gateway"]["calls"] == 0

    rows = (FIX / "filtered.jsonl").read_text().splitlines()
    changed = json.loads(rows[2])
    changed["instruction"] = "Write a short poem about the moon."
    edited = tmp_path / "filtered.jsonl"
    edited.write_text("\n".join(rows[:2] + [json.dumps(changed)] + rows[3:]) + "\n")
    assert _judge(load_stage, tmp_path, params, filtered=edited).exit_code == 0
    assert _stats(tmp_path, "judge.json")["gateway"] == {**_stats(tmp_path, "judge.json")["gateway"], "calls": 1,
                                                         "cache_hits": 5}


def test_judge_parse_failures_are_counted_not_fatal(load_stage, tmp_path):
    params = _params(tmp_path, judge_instructions={"backend": "fake", "options": {"template": "no idea, sorry ({n})"}})
    res = _judge(load_stage, tmp_path, params)
    assert res.exit_code == 0, res.output
    assert _stats(tmp_path, "judge.json")["parse_failures"] == 6
    assert {v.parse_ok for v in read_rows(tmp_path / "verdicts.jsonl", Verdict)} == {False}


def test_judge_budget_stops_cleanly(load_stage, tmp_path):
    params = _params(tmp_path, judge_instructions={"backend": "fake", "options": {"template": JSON_UNSAFE},
                                      "prices": {"prompt": 1e6, "completion": 0.0}, "budget_usd": 1.0})
    res = _judge(load_stage, tmp_path, params)
    assert res.exit_code == 2 and "error: budget of $1.00 reached" in res.output
    assert not (tmp_path / "verdicts.jsonl").exists()


def test_bad_input_is_a_one_line_error(load_stage, tmp_path):
    bad = tmp_path / "filtered.jsonl"
    shutil.copy(FIX / "filtered.jsonl", bad)
    with open(bad, "a") as fh:
        fh.write('{"id": "x", "instruction": 3}\n')
    params = _params(tmp_path, judge_instructions={"backend": "fake", "options": {"template": JSON_UNSAFE}})
    res = _judge(load_stage, tmp_path, params, filtered=bad)
    assert res.exit_code == 2 and "filtered.jsonl:7: field" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "verdicts.jsonl").exists()


@pytest.mark.parametrize("section,override,message", [
    ("judge_instructions", {"backend": "fake", "tresh": 1}, "unknown key 'judge_instructions.tresh'"),
    ("judge_instructions", {"backend": "embedding_classifier", "task": "response"},
     "does task 'instruction', not 'response'"),
    ("judge_instructions", {"backend": "no_such_backend"}, "unknown backend 'no_such_backend'"),
])
def test_bad_config_is_a_one_line_error(load_stage, tmp_path, section, override, message):
    res = _judge(load_stage, tmp_path, _params(tmp_path, **{section: override}))
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output


def test_select_threshold_change(load_stage, tmp_path):
    verdicts = tmp_path / "verdicts.jsonl"
    rows = [Verdict(id=f"ins-{i}:instruction", parent_id=f"ins-{i}", label="unsafe", score=0.1 * i + 0.35,
                    parse_ok=True, raw="", judge="j", cache_key="k").model_dump_json() for i in range(1, 7)]
    verdicts.write_text("\n".join(rows) + "\n")

    def kept(min_score: float) -> list[str]:
        params = _params(tmp_path, select_instructions={"min_score": min_score})
        res = _invoke(load_stage, "select_instructions", [
            "--filtered", str(FIX / "filtered.jsonl"), "--verdicts", str(verdicts),
            "--out", str(tmp_path / "out.jsonl"), "--rejected", str(tmp_path / "rej.jsonl"),
            "--stats", str(tmp_path / "select.json"), "--params", str(params)])
        assert res.exit_code == 0, res.output
        return [r.id for r in read_rows(tmp_path / "out.jsonl", InducedInstruction, allow_empty=True)]

    assert kept(0.5) == ["ins-2", "ins-3", "ins-4", "ins-5", "ins-6"]
    assert kept(0.8) == ["ins-5", "ins-6"]
    assert _stats(tmp_path, "select.json")["dropped"] == {"below_min_score": 4}
