"""ZeRO-3-friendly loading: every model is created after the trainer config (which registers a DeepSpeed ZeRO-3
config under `accelerate launch`), in the training dtype; the DPO reference model the same way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from _train_helpers import FIX

from saferinstruct.train import common, dpo
from saferinstruct.train.data import as_sft, load_preferences


@pytest.fixture
def events(monkeypatch):
    """Record config creation (trl's configs build TrainingArguments in __post_init__) and every model load."""
    import torch
    import transformers.integrations
    from transformers import TrainingArguments

    log: list = []
    zero3 = {"on": False}
    config_init = TrainingArguments.__post_init__

    def record_config(self):
        config_init(self)
        log.append("config")

    def record_load(model_dir, dtype=None):
        log.append(("load", transformers.integrations.is_deepspeed_zero3_enabled(), dtype or torch.float32))
        return real_load(model_dir, torch.float32)  # really fp32: deepspeed is absent, only the choice is checked

    real_load = common.load_model
    monkeypatch.setattr(TrainingArguments, "__post_init__", record_config)
    monkeypatch.setattr(common, "load_model", record_load)
    monkeypatch.setattr(dpo, "load_model", record_load)
    # what HfTrainerDeepSpeedConfig / accelerate's DeepSpeedPlugin register when the config is built under ZeRO-3
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: zero3["on"])
    return SimpleNamespace(log=log, zero3=zero3)


def _zero3_after_config(events, monkeypatch):
    """Make ZeRO-3 'registered' exactly when a config is built, as under `accelerate launch` with DeepSpeed."""
    from transformers import TrainingArguments

    built = TrainingArguments.__post_init__  # the recording wrapper from the fixture

    def register(self):
        built(self)
        events.zero3["on"] = True

    monkeypatch.setattr(TrainingArguments, "__post_init__", register)


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("float32", "float32")])
def test_sft_loads_the_model_after_its_config_in_the_training_dtype(events, monkeypatch, tmp_path, tiny_model_dir,
                                                                   precision, dtype):
    import torch

    from saferinstruct.train.sft import SftParams

    _zero3_after_config(events, monkeypatch)
    rows = as_sft(load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=False)[0])
    common.build_sft_trainer(tiny_model_dir, rows, SftParams(precision=precision, max_steps=1), tmp_path / "run")
    assert events.log == ["config", ("load", True, getattr(torch, dtype))]


def test_dpo_loads_policy_and_reference_after_the_config_in_the_training_dtype(events, monkeypatch, tmp_path,
                                                                               tiny_model_dir):
    import torch

    _zero3_after_config(events, monkeypatch)
    rows = load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=True)[0]
    p = dpo.DpoParams(precision="bf16", max_steps=1, max_length=256)
    dpo.build_dpo_trainer(tiny_model_dir, tiny_model_dir, rows, p, tmp_path / "run", stored=None)
    assert events.log[0] == "config"
    assert events.log[1:] == [("load", True, torch.bfloat16)] * 2  # policy, then reference: both partitioned at load


def test_without_zero3_bf16_keeps_fp32_master_weights(events, tmp_path):
    """bf16 without DeepSpeed is autocast over fp32 weights: a bf16 master copy would lose small updates."""
    import torch

    p = dpo.DpoParams(precision="bf16")
    assert common.load_dtype(p) is torch.float32
    events.zero3["on"] = True
    assert common.load_dtype(p) is torch.bfloat16
    assert common.load_dtype(dpo.DpoParams(precision="float32")) is torch.float32
