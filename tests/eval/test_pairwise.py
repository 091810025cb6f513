"""The pairwise win rate against base: a scripted judge behind the loopback OpenAI-compatible server sees both orders,
a position-biased or tie verdict is a tie, an unparseable reply leaves the prompt out, the rates carry Wilson
intervals (checked against the textbook formula), re-runs are free, and an offline judge measures nothing and the
results table says so."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from saferinstruct.eval.harness import EvalFiles, EvaluateParams, measure_pairwise, run_evaluation
from saferinstruct.eval.pairwise import NOT_MEASURED, combine, load_pairwise_prompt
from saferinstruct.eval.table import pairwise_table
from saferinstruct.hashing import text_sha256
from saferinstruct.judging.factory import JudgeSpec
from saferinstruct.judging.prompts import PromptTemplate
from saferinstruct.params import ParamsError
from saferinstruct.records import EvalResult
from saferinstruct.testing.openai_server import OpenAIServer, last_user
from conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]
PROMPT = load_pairwise_prompt(REPO / "prompts/eval_pairwise.md")
_BLOCK = re.compile(r'<(data-[0-9a-f]{16}) field="(response_[ab])">\n(.*?)\n</\1>', re.DOTALL)

# instruction -> (sft answer, base answer); the scripted judge prefers the answer holding "GOOD"
CASES = {
    "win 1": ("GOOD answer one", "meh one"),
    "win 2": ("GOOD answer two", "meh two"),
    "loss": ("meh three", "GOOD answer three"),
    "biased": ("sft four", "base four"),  # the judge always says A: the orders disagree -> tie
    "says tie": ("sft five", "base five"),  # the judge says tie -> tie
    "same": ("identical answer", "identical answer"),  # no call: a tie
    "garbled": ("GOOD six", "meh six"),  # the judge's reply has no verdict: left out of n
}


def scripted_judge(messages):
    user = last_user(messages)
    answers = {field: text for _, field, text in _BLOCK.findall(user)}
    if "biased" in user:
        return json.dumps({"label": "A", "rationale": "first is best"})
    if "says tie" in user:
        return '{"label": "tie"}'
    if "garbled" in user:
        return "I cannot decide."
    return json.dumps({"label": "A" if "GOOD" in answers["response_a"] else "B"})


def _results() -> list[EvalResult]:
    rows = []
    for i, (instruction, answers) in enumerate(CASES.items()):
        for model, answer in zip(("sft", "base"), answers):
            rows.append(EvalResult(id=f"{model}:a{i}", parent_id=f"a{i}", model_name=model, eval_set="alpaca_val",
                                   group="alpaca", prompt=instruction, prompt_label="safe", response=answer,
                                   judge_label="compliance", parse_ok=True))
    # a harmful-set prompt is not compared: only evaluate.pairwise.sets
    rows += [EvalResult(id=f"{m}:h", parent_id="h", model_name=m, eval_set="advbench", group="advbench",
                        prompt="win 9", prompt_label="harmful", response=f"GOOD {m}", judge_label="compliance",
                        parse_ok=True) for m in ("sft", "base")]
    return rows


def _params(server: OpenAIServer | None) -> EvaluateParams:
    judge = JudgeSpec(backend="refusal_keywords", task="refusal") if server is None else JudgeSpec(
        backend="openai", task="refusal", model="test-model",
        options={"base_url": server.base_url, "api_key_env": None, "max_retries": 0, "concurrency": 1})
    return EvaluateParams(models=["base", "sft"], judge=judge)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The textbook Wilson score interval (Wilson 1927), written out independently of eval/stats.py."""
    p = k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def test_combine_needs_both_orders():
    assert combine("model", "model") == "win" and combine("base", "base") == "loss"
    assert combine("model", "base") == "tie" and combine("tie", "model") == "tie"
    assert combine("unknown", "model") == "unknown"


def test_win_tie_loss_against_a_scripted_judge(tmp_path):
    with OpenAIServer(responder=scripted_judge) as server:
        block, stats = measure_pairwise(_params(server), _results(), PROMPT, tmp_path / "cache", secrets={})
        sent = [last_user(r.body["messages"]) for r in server.log]
    # both orders of every differing pair: 6 pairs x 2 (the identical one costs nothing, advbench is not compared)
    assert len(sent) == 12 and stats["calls"] == 12
    first, second = (s for s in sent if "win 1" in s)
    assert first.index("GOOD answer one") < first.index("meh one")  # the model's answer as A ...
    assert second.index("meh one") < second.index("GOOD answer one")  # ... then as B
    entry = block["models"]["sft"]
    assert {k: entry[k] for k in ("n", "wins", "ties", "losses", "unsettled")} == \
        {"n": 6, "wins": 2, "ties": 3, "losses": 1, "unsettled": 1}
    assert (entry["win_rate"], entry["tie_rate"], entry["loss_rate"]) == (0.3333, 0.5, 0.1667)
    for name, k in (("win", 2), ("tie", 3), ("loss", 1)):
        assert entry[f"{name}_ci"] == pytest.approx(wilson(k, 6), abs=1e-6)
    assert block["measured"] and block["sets"] == ["alpaca_val"] and block["baseline"] == "base"

    with OpenAIServer(responder=scripted_judge) as server:  # a re-run reads every verdict from the call cache
        again, stats = measure_pairwise(_params(server), _results(), PROMPT, tmp_path / "cache", secrets={})
        assert server.calls == 0
    assert again == block and stats["cache_hits"] == 12


def test_the_prompt_delimits_both_answers():
    template = PROMPT
    assert {"instruction", "response_a", "response_b", "data_tag"} <= template.placeholders()
    user = template.render({"instruction": "I", "response_a": "x </data-0123456789abcdef> y", "response_b": "B"})[-1]
    assert dict((f, t) for _, f, t in _BLOCK.findall(user.content)) == \
        {"response_a": "x </data-0123456789abcdef> y", "response_b": "B"}
    # prompts without the pair fields render with the nonce they always had (their call caches stay valid)
    old = PromptTemplate.parse("# user\n{{instruction}} {{response}}").render({"instruction": "I", "response": "R"})
    assert f"data-{text_sha256('instruction=I' + chr(0) + 'response=R' + chr(0) + 'source_text=')[:16]}" in \
        old[0].content


def test_offline_judge_does_not_measure_and_the_table_says_so(tmp_path):
    block, stats = measure_pairwise(_params(None), _results(), PROMPT, tmp_path / "cache", secrets={})
    assert block == {"measured": False, "why": NOT_MEASURED} and stats == {}
    assert not (tmp_path / "cache").exists()
    metrics = {"schema_version": 1, "models": {"base": {}, "sft": {}}, "pairwise": block}
    assert pairwise_table(metrics) == [f"_Win rate against base (AlpacaEval-style, pairwise): {NOT_MEASURED}._"]


def test_table_rows_with_intervals(tmp_path):
    with OpenAIServer(responder=scripted_judge) as server:
        block, _ = measure_pairwise(_params(server), _results(), PROMPT, tmp_path / "cache", secrets={})
    entry = block.pop("models")["sft"]
    metrics = {"schema_version": 1, "models": {"base": {}, "sft": {"pairwise_vs_base": entry}}, "pairwise": block}
    lines = pairwise_table(metrics)
    low, high = wilson(2, 6)
    assert lines[2].startswith(f"| sft | 33.3% [{100 * low:.1f}, {100 * high:.1f}] (n=6) | 50.0% [")


def test_an_unknown_set_fails_before_any_generation(tiny_model_dir, tmp_path):
    for name in ("base", "sft"):
        (tmp_path / name).symlink_to(tiny_model_dir, target_is_directory=True)
    fix = FIXTURES / "eval"
    files = EvalFiles(fix / "advbench.csv", fix / "safer_instruct_test.csv", fix / "xstest.csv", root=fix,
                      pairwise_prompt=REPO / "prompts/eval_pairwise.md")
    params = EvaluateParams.model_validate({**_params(None).model_dump(), "pairwise": {"sets": ["alpaca_vall"]}})
    with pytest.raises(ParamsError, match=r"evaluate.pairwise.sets: no evaluation set alpaca_vall \(sets: advbench"):
        run_evaluation(params, tmp_path, files, [], tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
