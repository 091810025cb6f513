"""saferinstruct publish: Hub layout, cards and push, all offline (tiny model, a handful of rows, a fake HfApi)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferinstruct.cli import main as cli

TOKEN = "hf_TESTtokenThatMustNeverBeWritten123"
SOURCES = [("safer_instruct_hate", "none stated; academic purposes only (uscnlp-lime/safer-instruct)", "hate"),
           ("davidson", "MIT", "hate"), ("openai_moderation", "MIT", "sexual")]


def _pair(i: int, kind: str, corpus: str, licence: str, category: str) -> dict:
    return {"id": f"{kind}:{i}", "parent_id": f"resp:{i}" if kind == "safety" else None, "category": category,
            "kind": kind, "prompt": f"Question number {i}?", "chosen": "I can't help with that, but here is why.",
            "rejected": f"harmful text {i}",
            "provenance": {"corpus": corpus, "licence": licence, "file": f"data/raw/{corpus}.csv", "line": i + 2}}


def write_preferences(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [_pair(i, "safety", *SOURCES[i % 3]) for i in range(6)]
    rows += [_pair(10 + i, "helpful", "hh_rlhf_helpful_base", "MIT", "helpful") for i in range(3)]
    for split, part in (("train", rows[:7]), ("test", rows[7:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return folder


def write_build_card(folder: Path) -> Path:
    """The card build_preferences writes beside the splits (datacard.render on hand-made stats)."""
    from saferinstruct.datacard import render
    from saferinstruct.preferences import PreferenceParams

    funnel = dict.fromkeys(("source_texts", "kept_instructions", "expert_responses", "responses_ok", "safety_pairs",
                            "helpful_pool", "helpful_pairs"), 1)
    stats = {"funnel": funnel, "train": 7, "test": 2, "helpful_per_safety": 0.5, "rejected": {},
             "by_category": {"safety/hate": 4}, "by_corpus": {"safety/davidson": 2, "helpful/hh_rlhf_helpful_base": 3},
             "by_licence": {"safety/MIT": 4}, "eval_leak": {"safety": 0, "helpful": 0}}
    card = folder / "README.md"
    card.write_text(render(stats, PreferenceParams(), {"expert": ["smol@1"]}), encoding="utf-8")
    return card


def eval_metrics() -> dict:
    def entry(k: int, n: int) -> dict:
        return {"n": n, "judged": n, "refusal": k, "compliance": n - k, "refusal_rate": round(k / n, 4)}

    return {"schema_version": 1, "models": {
        name: {"harmful": {"overall": entry(k, 40), "advbench": entry(k // 2, 20)}, "safe": {"overall": entry(2, 20)}}
        for name, k in (("base", 4), ("sft", 10), ("dpo", 30))}}


@pytest.fixture
def inputs(tmp_path, tiny_model_dir) -> dict:
    models = {}
    for name in ("sft", "dpo"):
        models[name] = shutil.copytree(tiny_model_dir, tmp_path / "models" / name)
        (models[name] / "training_config.json").write_text(json.dumps(
            {"stage": f"train_{name}", "params": {"lr": 1e-3, "max_steps": 3}, "base_model": {"path": "models/x"}}))
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps(eval_metrics()))
    return {"prefs": write_preferences(tmp_path / "preferences"), "models": models, "metrics": metrics,
            "out": tmp_path / "publish"}


def run_publish(inputs: dict, *extra: str, env: dict | None = None):
    args = ["publish", "--namespace", "someone", "--out", str(inputs["out"]), "--preferences", str(inputs["prefs"]),
            "--metrics", str(inputs["metrics"])]
    args += [a for name, d in inputs["models"].items() for a in ("--model", f"{name}={d}")]
    return CliRunner().invoke(cli, [*args, *extra], env=env or {}, catch_exceptions=False)


@contextlib.contextmanager
def no_warnings():
    """Fail on any Python warning or WARNING-level log record of datasets / huggingface_hub / transformers (their
    loggers do not propagate to the root logger, so caplog alone would miss them)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("datasets", "huggingface_hub", "transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]
    assert not caught, [str(w.message) for w in caught]


def test_dataset_folder_loads_without_warnings_and_card_has_metadata(inputs, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    write_build_card(inputs["prefs"])
    res = run_publish(inputs)
    assert res.exit_code == 0, res.output
    folder = inputs["out"] / "dataset"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "data/test.jsonl", "data/train.jsonl"]
    with no_warnings():
        ds = load_dataset(str(folder), cache_dir=str(tmp_path / "hf_cache"))
    assert (ds["train"].num_rows, ds["test"].num_rows) == (7, 2)
    assert {"prompt", "chosen", "rejected", "kind", "provenance"} <= set(ds["train"].column_names)

    card = DatasetCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "other" and {"safety", "dpo", "preference"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train.jsonl"}, {"split": "test", "path": "data/test.jsonl"}]}]
    assert meta["pretty_name"] and meta["task_categories"] == ["text-generation"]
    assert "non-commercial" in meta["extra_gated_prompt"] and "checkbox" in meta["extra_gated_fields"].values()
    text = card.text
    for needle in ("Content warning", "## Intended use", "## Access", "gated", "no single licence covers",
                   "| safety | davidson | MIT | 2 | davidson2017automated |",
                   "| safety | safer_instruct_hate | none stated; academic purposes only",
                   "| helpful | hh_rlhf_helpful_base | MIT | 3 | bai2022training |",
                   "arXiv:2311.08685", "@article{shi2023saferinstruct", "@inproceedings{markov2023holistic",
                   "## Build report", "### Funnel", "### Evaluation leakage", "smol@1"):
        assert needle in text, needle
    for once in ("## Intended use", "## Citation", "Content warning"):  # the build card's own: not twice
        assert text.count(once) == 1, once
    assert (folder / "README.md").read_text().count("\n---\n") == 1  # one YAML block: the build card's is dropped


@pytest.mark.parametrize("name", ["sft", "dpo"])
def test_model_folder_loads_without_warnings_with_real_max_length_and_card(inputs, name):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_tok = json.loads((inputs["models"][name] / "tokenizer_config.json").read_text())
    assert src_tok["model_max_length"] > 10**20  # what the training stages save today (int(1e30))
    assert run_publish(inputs).exit_code == 0
    folder = inputs["out"] / "models" / name
    with no_warnings():
        AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    assert tok.model_max_length == 1024  # the tiny model's max_position_embeddings

    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    base = "someone/saferinstruct-sft" if name == "dpo" else "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model"] == base  # the DPO model starts from the published SFT model
    assert meta["datasets"] == ["someone/saferinstruct-preferences"]
    assert meta["license"] == "other" and {"safety", "safer-instruct", name} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    # eval table: every model, 95% Wilson interval of 30/40 = 75.0% [59.8%, 85.8%]
    dpo_row = "| {} | harmful | overall | 40 | 75.0% [59.8%, 85.8%] |"
    assert dpo_row.format("**dpo**" if name == "dpo" else "dpo") in card.text  # this card's model in bold
    assert "| base | harmful | overall | 40 | 10.0% [4.0%, 23.1%] |" in card.text
    assert "## Intended use" in card.text and "@article{shi2023saferinstruct" in card.text


def test_push_creates_private_gated_repos_and_writes_no_token(inputs, monkeypatch):
    import huggingface_hub

    calls: list[tuple] = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            assert Path(kw["folder_path"], "README.md").exists()
            calls.append(("upload", kw["repo_id"], kw["repo_type"], Path(kw["folder_path"]).name))

        def update_repo_settings(self, repo_id, **kw):
            calls.append(("settings", repo_id, kw))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    res = run_publish(inputs, "--push", env={"HF_TOKEN": TOKEN})
    assert res.exit_code == 0, res.output
    assert calls[0] == ("init", TOKEN)
    assert ("create", "someone/saferinstruct-preferences",
            {"repo_type": "dataset", "private": True, "exist_ok": True}) in calls
    assert ("upload", "someone/saferinstruct-dpo", "model", "dpo") in calls
    assert ("upload", "someone/saferinstruct-preferences", "dataset", "dataset") in calls
    assert ("settings", "someone/saferinstruct-sft", {"gated": "manual", "repo_type": "model"}) in calls
    assert "pushed https://huggingface.co/someone/saferinstruct-sft" in res.output
    for path in inputs["out"].rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_push_without_token_is_one_error_line(inputs):
    res = CliRunner().invoke(cli, ["publish", "--namespace", "x", "--out", str(inputs["out"]), "--preferences",
                                   str(inputs["prefs"]), "--model", f"sft={inputs['models']['sft']}", "--push"],
                             env={"HF_TOKEN": ""})
    assert res.exit_code == 2 and "HF_TOKEN" in res.output and "Traceback" not in res.output


def test_missing_model_is_one_error_line_naming_the_fix(inputs, tmp_path):
    inputs["models"] = {"dpo": tmp_path / "nowhere"}
    res = CliRunner().invoke(cli, ["publish", "--namespace", "x", "--out", str(inputs["out"]), "--preferences",
                                   str(inputs["prefs"]), "--model", f"dpo={tmp_path / 'nowhere'}"])
    assert res.exit_code == 2 and "nowhere: no saved model" in res.output and "--model NAME=DIR" in res.output


def test_build_preferences_card_loads_without_warnings(tmp_path):
    """The card build_preferences writes is a Hub card too: `load_dataset` on data/preferences needs no arguments."""
    from datasets import load_dataset

    folder = write_preferences(tmp_path / "preferences")
    write_build_card(folder)
    with no_warnings():
        ds = load_dataset(str(folder), cache_dir=str(tmp_path / "hf_cache"))
    assert (ds["train"].num_rows, ds["test"].num_rows) == (7, 2)
    text = (folder / "README.md").read_text()
    for needle in ("license: other", "- safety", "## Intended use", "@article{shi2023saferinstruct",
                   "@inproceedings{davidson2017automated", "@article{bai2022training", "## Funnel"):
        assert needle in text, needle


def test_prepare_base_saves_the_real_context_length(tiny_model_dir, tmp_path):
    """Where models are first saved (prepare_base), the tokenizer gets the model's context, so every later stage's
    tokenizer (sft, dpo copy it) says 1024 here instead of int(1e30)."""
    from transformers import AutoTokenizer

    from saferinstruct.prepare_base import ModelSource, materialise

    materialise(ModelSource(source="local", path=str(tiny_model_dir)), tmp_path / "base")
    assert AutoTokenizer.from_pretrained(tmp_path / "base").model_max_length == 1024


def test_eval_table_prefers_the_metrics_interval():
    from saferinstruct.publish import eval_section

    given = {"models": {"m": {"harmful": {"overall": {"judged": 10, "refusal": 5, "refusal_rate": 0.5,
                                                      "refusal_ci": [0.25, 0.75]}}}}}
    assert "| m | harmful | overall | 10 | 50.0% [25.0%, 75.0%] |" in "\n".join(eval_section(given))
    del given["models"]["m"]["harmful"]["overall"]["refusal_ci"]  # an eval.json from before intervals: Wilson
    assert "| m | harmful | overall | 10 | 50.0% [23.7%, 76.3%] |" in "\n".join(eval_section(given))
