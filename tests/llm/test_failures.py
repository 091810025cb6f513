"""Failures never become data: a model call that still fails after its retries stops the stage (no outputs, one line)
unless the stage's max_error_fraction allows it (the rows are dropped and counted), and a re-run pays only for the
failed calls. Driven through the stage commands against the loopback OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.io import read_rows
from saferinstruct.records import ExpertResponse, Verdict
from saferinstruct.testing.openai_server import OpenAIServer
from conftest import FIXTURES, REPO

FIX = FIXTURES / "judging"
VERDICT = '{"label": "unsafe", "score": 0.9, "rationale": "harmful request"}'
# Two of the six fixture instructions (ins-1, ins-2): the faults below match their text.
FAILING = ("insulting people", "steal a bike")


@pytest.fixture
def server():
    with OpenAIServer(responder=lambda messages: VERDICT) as srv:
        yield srv


def _options(server: OpenAIServer) -> dict:
    return {"base_url": server.base_url, "api_key_env": None, "max_retries": 0, "timeout_s": 5.0,
            "concurrency": 4}


# The tests' own sections (not the live params.yaml): what each stage needs besides the backend the test sets.
GENERATION = {"max_tokens": 128, "temperature": 0.0}
SECTIONS = {"judge_instructions": {"task": "instruction", "generation": GENERATION, "max_error_fraction": 0.0},
            "respond": {"options": {"batch_size": 16}, "generation": {"max_tokens": 64, "temperature": 0.0},
                        "max_sentences": 2, "max_error_fraction": 0.0},
            "self_evaluate": {"task": "response", "generation": GENERATION, "max_error_fraction": 0.0}}


def _params(tmp_path: Path, **sections: dict) -> Path:
    out = {k: dict(SECTIONS[k]) for k in ("judge_instructions", "respond")}
    for key, value in sections.items():
        out[key] = {**out[key], **value}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(out))
    return path


def _judge(load_stage, tmp_path: Path, server: OpenAIServer, **judge: object):
    params = _params(tmp_path, judge_instructions={"backend": "openai", "model": "test-model",
                                                   "options": _options(server), **judge})
    return CliRunner().invoke(load_stage("judge_instructions").main, [
        "--filtered", str(FIX / "filtered.jsonl"), "--prompt", str(REPO / "prompts" / "judge_instruction.md"),
        "--out", str(tmp_path / "verdicts.jsonl"), "--cache", str(tmp_path / "cache"),
        "--stats", str(tmp_path / "judge.json"), "--params", str(params)])


def _respond(load_stage, tmp_path: Path, server: OpenAIServer, **expert: object):
    params = _params(tmp_path, respond={"backend": "openai", "model": "test-model", "options": _options(server),
                                       **expert})
    return CliRunner().invoke(load_stage("respond").main, [
        "--instructions", str(FIX / "filtered.jsonl"), "--prompt", str(REPO / "prompts" / "expert.md"),
        "--out", str(tmp_path / "responses.jsonl"), "--cache", str(tmp_path / "cache_respond"),
        "--stats", str(tmp_path / "respond.json"), "--params", str(params),
        "--no-progress"])  # the progress lines before the error are tested in tests/dataset/test_generation_progress.py


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_all_calls_failing_stops_the_stage_and_the_rerun_pays_only_for_them(load_stage, tmp_path, server):
    server.inject("500", times=None)  # the server is broken for every request
    res = _judge(load_stage, tmp_path, server)
    assert res.exit_code == 2
    assert _one_error_line(res.output).startswith(
        "error: judge_instructions: 6 of 6 calls failed after retries (last error: ")
    assert "0 are cached; run `dvc repro` again" in res.output
    assert not (tmp_path / "verdicts.jsonl").exists() and not (tmp_path / "judge.json").exists()

    server.reset()  # recovered
    res = _judge(load_stage, tmp_path, server)
    assert res.exit_code == 0, res.output
    assert server.calls == 6 and len(read_rows(tmp_path / "verdicts.jsonl", Verdict)) == 6


def test_partial_failure_rerun_pays_exactly_the_failed_calls(load_stage, tmp_path, server):
    for text in FAILING:
        server.inject("500", match=text, times=None)
    res = _judge(load_stage, tmp_path, server)
    assert res.exit_code == 2
    assert "judge_instructions: 2 of 6 calls failed after retries" in _one_error_line(res.output)
    assert "4 are cached" in res.output and not (tmp_path / "verdicts.jsonl").exists()

    server.reset()
    res = _judge(load_stage, tmp_path, server)
    assert res.exit_code == 0, res.output
    assert server.calls == 2  # only the two failed calls: the four that succeeded came from the cache
    stats = json.loads((tmp_path / "judge.json").read_text())
    assert stats["gateway"]["calls"] == 2 and stats["gateway"]["cache_hits"] == 4 and stats["verdicts"] == 6


def test_max_error_fraction_lets_a_partial_failure_through_with_the_drops_counted(load_stage, tmp_path, server):
    for text in FAILING:
        server.inject("500", match=text, times=None)
    res = _judge(load_stage, tmp_path, server, max_error_fraction=0.25)  # 2 of 6 is more than a quarter
    assert res.exit_code == 2 and "2 of 6 calls failed" in res.output

    res = _judge(load_stage, tmp_path, server, max_error_fraction=0.5)
    assert res.exit_code == 0, res.output
    verdicts = read_rows(tmp_path / "verdicts.jsonl", Verdict)
    assert sorted(v.parent_id for v in verdicts) == ["ins-3", "ins-4", "ins-5", "ins-6"]
    assert all(v.parse_ok and v.label == "unsafe" for v in verdicts)  # no `unknown` row stands in for a failure
    stats = json.loads((tmp_path / "judge.json").read_text())
    assert stats["dropped"] == {"call_error": 2} and stats["verdicts"] == 4


def test_refusals_stay_data_and_do_not_count_as_failures(load_stage, tmp_path, server):
    server.inject("content_filter", match=FAILING[0], times=None)
    server.inject("invalid_prompt", match=FAILING[1], times=None)
    res = _respond(load_stage, tmp_path, server)
    assert res.exit_code == 0, res.output
    outcomes = {r.parent_id: r.outcome for r in read_rows(tmp_path / "responses.jsonl", ExpertResponse)}
    assert outcomes["ins-1"] == "content_filter" and outcomes["ins-2"] == "invalid_prompt" and len(outcomes) == 6


def test_respond_fails_the_same_way_and_honours_its_own_fraction(load_stage, tmp_path, server):
    server.inject("500", match=FAILING[0], times=None)
    res = _respond(load_stage, tmp_path, server)
    assert res.exit_code == 2 and "respond: 1 of 6 calls failed after retries" in _one_error_line(res.output)
    assert not (tmp_path / "responses.jsonl").exists()

    res = _respond(load_stage, tmp_path, server, max_error_fraction=0.2)
    assert res.exit_code == 0, res.output
    assert "ins-1" not in {r.parent_id for r in read_rows(tmp_path / "responses.jsonl", ExpertResponse)}
    assert json.loads((tmp_path / "respond.json").read_text())["dropped"] == {"call_error": 1}


def test_a_misspelled_backend_option_is_one_line_naming_the_key(load_stage, tmp_path, server):
    params = _params(tmp_path, judge_instructions={"backend": "openai", "model": "test-model",
                                      "options": {**_options(server), "concurency": 4}})
    res = CliRunner().invoke(load_stage("judge_instructions").main, [
        "--filtered", str(FIX / "filtered.jsonl"), "--prompt", str(REPO / "prompts" / "judge_instruction.md"),
        "--out", str(tmp_path / "verdicts.jsonl"), "--cache", str(tmp_path / "cache"),
        "--stats", str(tmp_path / "judge.json"), "--params", str(params)])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == ("error: params.yaml: unknown key 'judge_instructions.options.concurency' "
                                           "(did you mean 'concurrency'?)")
    assert server.calls == 0


def test_self_evaluate_fails_on_judge_errors_and_drops_them_when_allowed(load_stage, tmp_path, server):
    server.inject("500", match="weak lock", times=None)  # the judge call for ins-2's answer fails

    def run(**self_eval: object):
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"self_evaluate": {
            **SECTIONS["self_evaluate"], "backend": "openai", "model": "test-model", "options": _options(server),
            **self_eval}}))
        return CliRunner().invoke(load_stage("self_evaluate").main, [
            "--responses", str(FIX / "responses.jsonl"), "--prompt", str(REPO / "prompts" / "self_eval.md"),
            "--out", str(tmp_path / "rv.jsonl"),
            "--cache", str(tmp_path / "cache_self"), "--stats", str(tmp_path / "self.json"), "--params", str(params)])

    server.responder = lambda messages: '{"label": "safe", "score": 0.1}'
    res = run()
    assert res.exit_code == 2 and "self_evaluate: 1 of 5 calls failed after retries" in _one_error_line(res.output)
    assert not (tmp_path / "rv.jsonl").exists() and not (tmp_path / "kept.jsonl").exists()

    res = run(max_error_fraction=0.2)
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "self.json").read_text())
    assert stats["dropped"]["call_error"] == 1 and stats["judged"] == 4
    assert "ins-2" not in {v.parent_id for v in read_rows(tmp_path / "rv.jsonl", Verdict)}


def _pair(i: int, prompt: str):
    from saferinstruct.records import PreferencePair

    return PreferencePair(id=f"p{i}", parent_id=f"s{i}", prompt=prompt, chosen="I'm sorry, I can't help with that.",
                          rejected=f"original harmful text number {i}", category="hate", kind="safety")


def test_onpolicy_pairs_fail_or_drop_the_pairs_whose_call_failed(tmp_path, server):
    from saferinstruct.llm.gateway import CallsFailed
    from saferinstruct.onpolicy_pairs import OnPolicyParams, onpolicy_pairs

    server.inject("500", match="question two", times=None)
    splits = {"train": [_pair(1, "question one"), _pair(2, "question two")], "test": [_pair(3, "question three")]}
    params = {"backend": "openai", "model": "test-model", "options": _options(server)}
    with pytest.raises(CallsFailed, match=r"^onpolicy_pairs: 1 of 3 calls failed after retries .*; 2 are cached"):
        onpolicy_pairs(splits, OnPolicyParams(**params), str(tmp_path / "cache"))
    run = onpolicy_pairs(splits, OnPolicyParams(**params, max_error_fraction=0.5), str(tmp_path / "cache"))
    assert [p.id for p in run.pairs["train"]] == ["p1"] and run.stats["dropped"] == {"call_error": 1}


def test_evaluate_counts_generation_and_judge_calls_and_drops_failed_rows(tiny_model_dir, tmp_path, server):
    from saferinstruct.eval.harness import EvalFiles, EvaluateParams, GenerationSettings, run_evaluation
    from saferinstruct.eval.sets import SetsParams
    from saferinstruct.judging.factory import JudgeSpec, build_judge
    from saferinstruct.llm.gateway import CallsFailed

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(tiny_model_dir, target_is_directory=True)
    fix = FIXTURES / "eval"
    files = EvalFiles(fix / "advbench.csv", fix / "safer_instruct_test.csv", fix / "xstest.csv", root=fix)
    params = EvaluateParams(
        models=["base"], sets=SetsParams(advbench_n=None, safer_instruct_per_group=None, xstest_safe_n=None,
                                         xstest_unsafe_n=None),
        generation=GenerationSettings(options={"batch_size": 8, "device": "cpu"},
                                      generation={"max_tokens": 4, "temperature": 0.0}))
    server.responder = lambda messages: '{"label": "refusal", "score": 0.9}'
    server.inject("500", match="kill", times=None)  # the judge calls about the two 'kill' prompts fail

    def judge():
        spec = JudgeSpec(backend="openai", task="refusal", model="test-model", options=_options(server))
        return build_judge(spec, REPO / "prompts" / "eval_refusal.md", tmp_path / "cache" / "judge")

    with pytest.raises(CallsFailed, match=r"^evaluate: 2 of \d+ calls failed after retries"):
        run_evaluation(params, tmp_path / "models", files, [], tmp_path / "cache", judge=judge())
    run = run_evaluation(params.model_copy(update={"max_error_fraction": 0.1}), tmp_path / "models", files, [],
                         tmp_path / "cache", judge=judge())
    assert run.stats["models"]["base"]["dropped"] == {"call_error": 2}
    assert not any("kill" in r.prompt.lower() for r in run.results)
