"""The development set's fixed helpful questions: rebuilt exactly by their tool, held out from every training stage."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from conftest import REPO

from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.text import match_key

DEV_FILE = REPO / "data/raw/dev/hh_helpful_dev.jsonl"


def _tool(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tools"))  # as when run: it imports its sibling dev_eval
    spec = importlib.util.spec_from_file_location("make_dev_helpful", REPO / "tools/make_dev_helpful.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_file_is_what_the_tool_writes(monkeypatch):
    tool = _tool(monkeypatch)
    rows = [json.loads(line) for line in DEV_FILE.read_text().splitlines()]
    assert rows == tool.helpful_dev_rows(REPO / tool.SOURCE, 100)
    assert len({match_key(r["prompt"]) for r in rows}) == 100
    assert all(15 < len(r["prompt"]) < 200 for r in rows)
    # a larger set keeps the first 100: the ranking is by hash, not by the cut
    assert {r["id"] for r in rows} < {r["id"] for r in tool.helpful_dev_rows(REPO / tool.SOURCE, 150)}


@pytest.mark.parametrize("section", ["ingest", "reverse_pairs", "train_safety_classifier", "build_preferences"])
def test_every_training_stage_holds_the_questions_out(section, monkeypatch):
    monkeypatch.chdir(REPO)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    keys = eval_prompt_keys([EvalFile.model_validate(e) for e in params[section]["eval_files"]])
    assert all(match_key(json.loads(line)["prompt"]) in keys for line in DEV_FILE.read_text().splitlines())
