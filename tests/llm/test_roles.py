"""Model roles: one params shape (backend, model, revision, options, generation) opened by one function. Moving the
params into that shape keeps every cache key; a typo in any role's backend or option is the same one-line error; the
expert judges itself by default, except the embedded local expert, which the offline rule replaces."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.eval.harness import EvaluateParams, generate
from saferinstruct.eval.sets import EvalPrompt
from saferinstruct.induce import InduceParams, build_request, make_inducer
from saferinstruct.io import read_rows
from saferinstruct.judging import safe_response  # noqa: F401 - registers the offline rule
from saferinstruct.judging.factory import SelfEvalSpec, build_judge, self_eval_spec
from saferinstruct.llm.base import ChatRequest, GenerationParams, Message, make_backend
from saferinstruct.llm.gateway import Gateway
from saferinstruct.params import load_section
from saferinstruct.records import Verdict
from saferinstruct.respond import ExpertParams
from saferinstruct.templates import reverse_prompt
from saferinstruct.testing.openai_server import OpenAIServer
from conftest import FIXTURES, REPO, import_stage, stage_args

JUDGING = FIXTURES / "judging"


# --- the cache keys survive the move into the role shape ----------------------------------------------------------

# The committed params before the role shape (induce flat; evaluate.generation.backend_options / params).
OLD_INDUCE = {"template": "paper", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "batch_size": 16,
              "seed": 0, "max_input_tokens": 1024, "dtype": "float32", "device": "auto"}
OLD_EVALUATE = {"backend_options": {"batch_size": 16, "dtype": "float32", "device": "auto"},
                "params": {"max_tokens": 40, "temperature": 0.0, "top_p": 1.0, "seed": 0}}


def test_induce_keys_equal_the_old_layouts(tiny_model_dir):
    """The request and backend the old flat `induce` built (as its make_inducer/build_request did) and the ones the
    role built from the committed params.yaml have the same cache key."""
    o = OLD_INDUCE
    old_backend = make_backend("transformers", {"model_path": str(tiny_model_dir), "batch_size": o["batch_size"],
                                                "dtype": o["dtype"], "device": o["device"],
                                                "max_input_tokens": o["max_input_tokens"], "chat_template": False})
    old_request = ChatRequest(messages=(Message(role="user", content=reverse_prompt("a text")),), sample_index=1,
                              params=GenerationParams(max_tokens=o["max_new_tokens"], temperature=o["temperature"],
                                                      top_p=o["top_p"], seed=o["seed"], stop=["###"]))
    params = load_section("induce", InduceParams, REPO / "params.yaml")
    new = make_inducer(tiny_model_dir, params)
    assert new.key(build_request("a text", 1, params)) == Gateway(old_backend).key(old_request)


def test_evaluate_generation_hits_the_old_layouts_cache(tiny_model_dir, tmp_path):
    """Answers cached through the old `evaluate.generation` layout are all hits for the new one: no generation."""
    prompts = [EvalPrompt(id=f"p{i}", eval_set="advbench", group="g", prompt=f"Say {i}.", kind="harmful")
               for i in range(2)]
    settings = load_section("evaluate", EvaluateParams, REPO / "params.yaml").generation
    # the layout is what changed, not the values: the old layout's token cap is the committed one (the quick profile's)
    old_params = {**OLD_EVALUATE["params"], "max_tokens": settings.generation.max_tokens}
    old = Gateway(make_backend("transformers", {**OLD_EVALUATE["backend_options"], "model_path": str(tiny_model_dir),
                                                "device": "cpu"}), cache_dir=tmp_path)
    old.complete([ChatRequest.chat(p.prompt, params=GenerationParams(**old_params)) for p in prompts])
    settings = settings.model_copy(update={"options": {**settings.options, "device": "cpu"}})  # device is unkeyed
    _, stats = generate(tiny_model_dir, prompts, settings, tmp_path, progress=False)
    assert (stats["cache_hits"], stats["calls"]) == (2, 0)


# --- one error for a typo, in every role --------------------------------------------------------------------------

def _inputs(root):
    """Input files the stages read before they open their role (empty where a stage allows it)."""
    (root / "data" / "preferences").mkdir(parents=True)
    shutil.copy(FIXTURES / "train" / "preferences.jsonl", root / "data" / "preferences" / "train.jsonl")
    (root / "data" / "instructions.jsonl").write_text("")
    (root / "train.jsonl").write_text("")
    for name in ("base", "sft", "dpo", "reverse"):
        (root / "models" / name).mkdir(parents=True)
    return {"induce": {"sources": FIXTURES / "induce" / "sources.jsonl"},
            "respond": {}, "onpolicy_pairs": {},
            "judge_instructions": {"filtered": JUDGING / "filtered.jsonl"},
            "self_evaluate": {"responses": JUDGING / "responses.jsonl"},
            "evaluate": {"train": root / "train.jsonl"}}


def _nested(section: str, value: dict) -> dict:
    head, _, rest = section.partition(".")
    return {head: _nested(rest, value) if rest else value}


# (stage, role section, the role's params with a typo, what the one-line error says)
TYPOS = [
    ("induce", "induce", {"backend": "transformer"}, "'induce.backend': unknown backend 'transformer' "
                                                     "(did you mean 'transformers'?)"),
    ("respond", "respond", {"backend": "opnai", "model": "m"}, "'respond.backend': unknown backend 'opnai' "
                                                               "(did you mean 'openai'?)"),
    ("onpolicy_pairs", "onpolicy_pairs", {"backend": "transformer"},
     "'onpolicy_pairs.backend': unknown backend 'transformer' (did you mean 'transformers'?)"),
    ("judge_instructions", "judge_instructions", {"backend": "opnai", "model": "m"},
     "'judge_instructions.backend': unknown backend 'opnai' (did you mean 'openai'?)"),
    ("self_evaluate", "self_evaluate", {"backend": "safe_respons"},
     "'self_evaluate.backend': unknown backend 'safe_respons' (did you mean 'safe_response'?)"),
    ("self_evaluate", "respond", {"backend": "opnai", "model": "m"},  # the expert, judging itself
     "'respond.backend': unknown backend 'opnai' (did you mean 'openai'?)"),
    ("evaluate", "evaluate.generation", {"backend": "transformer"},
     "'evaluate.generation.backend': unknown backend 'transformer' (did you mean 'transformers'?)"),
    ("evaluate", "evaluate.judge", {"backend": "refusal_keyword", "task": "refusal"},
     "'evaluate.judge.backend': unknown backend 'refusal_keyword' (did you mean 'refusal_keywords'?)"),
    # a misspelled option, for a local and an API backend
    ("induce", "induce", {"options": {"batch_sise": 4}},
     "unknown key 'induce.options.batch_sise' (did you mean 'batch_size'?)"),
    ("respond", "respond", {"options": {"batch_sise": 4}},
     "unknown key 'respond.options.batch_sise' (did you mean 'batch_size'?)"),
    ("onpolicy_pairs", "onpolicy_pairs", {"options": {"batch_sise": 4}},
     "unknown key 'onpolicy_pairs.options.batch_sise' (did you mean 'batch_size'?)"),
    ("judge_instructions", "judge_instructions", {"backend": "openai", "model": "m", "options": {"concurency": 2}},
     "unknown key 'judge_instructions.options.concurency' (did you mean 'concurrency'?)"),
    ("self_evaluate", "self_evaluate", {"backend": "openai", "model": "m", "options": {"concurency": 2}},
     "unknown key 'self_evaluate.options.concurency' (did you mean 'concurrency'?)"),
    ("evaluate", "evaluate.generation", {"options": {"batch_sise": 4}},
     "unknown key 'evaluate.generation.options.batch_sise' (did you mean 'batch_size'?)"),
    ("evaluate", "evaluate.judge", {"backend": "openai", "task": "refusal", "model": "m",
                                    "options": {"concurency": 2}},
     "unknown key 'evaluate.judge.options.concurency' (did you mean 'concurrency'?)"),
]


@pytest.mark.parametrize("stage,section,role,message", TYPOS, ids=[f"{t[1]}:{i}" for i, t in enumerate(TYPOS)])
def test_a_typo_in_any_role_is_one_line_naming_the_key(tmp_path, stage, section, role, message):
    inputs = _inputs(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({stage.split(".")[0]: {}, **_nested(section, role)}))
    args = stage_args(stage, tmp_path, params=params, **inputs[stage])
    res = CliRunner().invoke(import_stage(stage).main, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: params.yaml: {message}"), res.output


# --- self-evaluation: the expert judges itself -------------------------------------------------------------------

def test_default_config_self_evaluates_with_the_offline_rule():
    """The committed params: the expert is the embedded local model, so the safe_response rule judges."""
    spec = self_eval_spec(load_section("self_evaluate", SelfEvalSpec, REPO / "params.yaml"),
                          load_section("respond", ExpertParams, REPO / "params.yaml"))
    assert spec.backend == "safe_response"
    assert build_judge(spec, section="self_evaluate").name == "safe_response"
    # a local expert on a model of its own (not models/base) is an LLM: it judges itself
    own = ExpertParams(backend="transformers", model="models/bigger")
    assert (self_eval_spec(SelfEvalSpec(), own).backend, self_eval_spec(SelfEvalSpec(), own).model) == \
        ("transformers", "models/bigger")


def test_an_llm_expert_judges_its_own_answers(tmp_path):
    """respond on an OpenAI-compatible server: self_evaluate (default backend expert) asks the same server and model,
    with the self-evaluation prompt and its own generation settings, and the expert's prices."""
    with OpenAIServer(model="expert-7b", responder=lambda messages: '{"label": "safe", "score": 0.1}') as server:
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({
            "respond": {"backend": "openai", "model": "expert-7b",
                        "options": {"base_url": server.base_url, "api_key_env": None, "max_retries": 0},
                        "prices": {"prompt": 2.0, "completion": 4.0}},
            "self_evaluate": {"generation": {"max_tokens": 50, "temperature": 0.0}}}))
        args = stage_args("self_evaluate", tmp_path, params=params, responses=JUDGING / "responses.jsonl")
        res = CliRunner().invoke(import_stage("self_evaluate").main, args)
        assert res.exit_code == 0, res.output
        assert server.calls > 0 and {r.model for r in server.log} == {"expert-7b"}
        assert all(r.body["max_tokens"] == 50 for r in server.log)
    verdicts = read_rows(tmp_path / "data" / "response_verdicts.jsonl", Verdict)
    assert len(verdicts) == server.calls
    assert all(v.judge.startswith("llm:openai:") and "expert-7b" in v.judge and v.label == "safe" for v in verdicts)
    stats = json.loads((tmp_path / "stats" / "self_evaluate.json").read_text())
    assert stats["gateway"]["cost_usd"] > 0  # the expert's prices
