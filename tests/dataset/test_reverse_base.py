"""The reversed base and the policy base are independent params (the paper reverse-tuned one model and aligned another):
by default the reversed base is the policy base with no second copy; with its own source, train_reverse trains it
while the policy stages keep models/base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import FIXTURES, dvc_stages, stage_args, stage_path

from saferinstruct.base_pointer import POINTER_FILE, resolve_base
from saferinstruct.errors import InputError

TINY_TRAIN = {"lr": 1e-3, "max_steps": 1, "batch_size": 2, "max_length": 128, "logging_steps": 1, "threads": 1}
POLICY_STAGES = ("train_sft", "onpolicy_pairs", "respond", "evaluate")  # every stage that reads the policy base


def _prepare(load_stage, root: Path, policy: Path, reverse: Path | None = None) -> dict:
    section = {"policy": {"source": "local", "path": str(policy)}}
    if reverse is not None:
        section["reverse"] = {"source": "local", "path": str(reverse)}
    doc = {"prepare_base": section, "train_reverse": {**TINY_TRAIN, "eval_rows": 1}, "train_sft": TINY_TRAIN}
    (root / "params.yaml").write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(load_stage("prepare_base").main, stage_args("prepare_base", root))
    assert res.exit_code == 0, res.output
    return json.loads(stage_path("prepare_base", root, "--stats").read_text())


def _trained_from(load_stage, root: Path, stage: str, **inputs) -> dict:
    """Run a training stage with dvc.yaml's arguments; the identity of the base it recorded training from."""
    res = CliRunner().invoke(load_stage(stage).main, stage_args(stage, root, **inputs))
    assert res.exit_code == 0, res.output
    config = json.loads((stage_path(stage, root, "--out") / "training_config.json").read_text())
    return config["base_model"]


def test_default_reverse_base_is_the_policy_folder_and_writes_no_copy(load_stage, tmp_path, tiny_model_dir,
                                                                      monkeypatch):
    stats = _prepare(load_stage, tmp_path, tiny_model_dir)
    reverse_dir = stage_path("prepare_base", tmp_path, "--reverse-out")
    assert stage_path("train_reverse", tmp_path, "--base") == reverse_dir  # what dvc.yaml hands train_reverse
    assert [p.name for p in reverse_dir.iterdir()] == [POINTER_FILE]  # no weights, no tokenizer: nothing copied
    assert reverse_dir.joinpath(POINTER_FILE).stat().st_size < 1000
    assert stats["reverse"] == {"same_as": "policy"}
    monkeypatch.chdir(tmp_path)
    # the very path string train_reverse used before (so its recorded base identity, and its outputs, are unchanged)
    assert str(resolve_base(Path("models/reverse_base"))) == "models/base"
    assert resolve_base(Path("models/base")) == Path("models/base")  # a real model folder is itself


def test_pointer_bytes_follow_the_policy_base(load_stage, tmp_path, tiny_model_dir, varied_model_dir):
    """train_reverse depends on models/reverse_base alone, so the pointer must change whenever models/base does."""
    pointer = stage_path("prepare_base", tmp_path, "--reverse-out") / POINTER_FILE
    _prepare(load_stage, tmp_path, tiny_model_dir)
    first = pointer.read_bytes()
    _prepare(load_stage, tmp_path, tiny_model_dir)
    assert pointer.read_bytes() == first  # a re-run with the same base: same bytes, no needless re-training
    _prepare(load_stage, tmp_path, varied_model_dir)
    assert pointer.read_bytes() != first


def test_stale_or_missing_policy_base_is_a_clean_error(load_stage, tmp_path, tiny_model_dir, varied_model_dir):
    _prepare(load_stage, tmp_path, tiny_model_dir)
    reverse_dir = stage_path("prepare_base", tmp_path, "--reverse-out")
    info = stage_path("prepare_base", tmp_path, "--out") / "model_info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "weights_sha256": "0" * 64}))
    with pytest.raises(InputError, match="changed since prepare_base wrote this pointer"):
        resolve_base(reverse_dir)
    info.unlink()
    with pytest.raises(InputError, match="holds no model"):
        resolve_base(reverse_dir)


def test_own_reverse_base_trains_the_reverse_model_and_the_policy_stays(load_stage, tmp_path, tiny_model_dir,
                                                                       varied_model_dir):
    stats = _prepare(load_stage, tmp_path, tiny_model_dir, reverse=varied_model_dir)
    assert stats["reverse"]["source"] == "local" and stats["reverse"]["weights_sha256"] != stats["weights_sha256"]
    reverse = _trained_from(load_stage, tmp_path, "train_reverse", train=FIXTURES / "train" / "reverse_train.jsonl",
                            val=FIXTURES / "train" / "reverse_val.jsonl")
    policy = _trained_from(load_stage, tmp_path, "train_sft", train=FIXTURES / "train" / "preferences.jsonl")
    assert reverse["path"] == str(stage_path("prepare_base", tmp_path, "--reverse-out"))
    assert reverse["model_info"]["source"]["path"] == str(varied_model_dir)
    assert reverse["model_info"]["weights_sha256"] == stats["reverse"]["weights_sha256"]
    assert policy["path"] == str(stage_path("prepare_base", tmp_path, "--out"))
    assert policy["model_info"]["source"]["path"] == str(tiny_model_dir)
    assert policy["model_info"]["weights_sha256"] == stats["weights_sha256"]


def _reads(stage: dict, folder: str) -> bool:
    return f" {folder} " in f" {stage['cmd']} " or folder in stage.get("deps", [])


def test_dvc_wires_the_reverse_base_to_train_reverse_only():
    stages = dvc_stages()
    assert _reads(stages["train_reverse"], "models/reverse_base")
    assert not _reads(stages["train_reverse"], "models/base")  # an own reversed base ignores policy changes
    for name in POLICY_STAGES:
        assert _reads(stages[name], "models/base") and not _reads(stages[name], "models/reverse_base"), name
    assert "models/reverse_base" in stages["prepare_base"]["outs"]


@pytest.mark.parametrize(("params", "message"), [
    ("prepare_base:\n  source: hub\n", "moved under prepare_base.policy"),
    ("prepare_base:\n  reverse:\n    same_as: policy\n    source: hub\n", "same_as: policy takes no other keys"),
    ("prepare_base:\n  reverse:\n    sorce: hub\n", "unknown key 'prepare_base.reverse.sorce' (did you mean"),
    ("prepare_base:\n  reverse:\n    source: hub\n    hub_id: a/b\n", "pinned revision"),
])
def test_bad_role_params_are_one_clean_line(load_stage, tmp_path, params, message):
    (tmp_path / "params.yaml").write_text(params)
    res = CliRunner().invoke(load_stage("prepare_base").main, stage_args("prepare_base", tmp_path))
    assert res.exit_code == 2 and res.output.startswith("error: ") and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "models").exists()
