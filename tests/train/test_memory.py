"""Peak memory of the training stages: the DPO reference model is really freed, defaults train in micro-batches."""

from __future__ import annotations

import gc
import weakref

import yaml
from _train_helpers import FIX, REPO

from saferinstruct.train import dpo
from saferinstruct.train.data import load_preferences


def test_reference_model_is_freed_before_training(tmp_path, tiny_model_dir):
    """accelerate's prepare_model keeps the reference model in its model list: clearing trainer.ref_model alone
    held its weights (0.5 GB at 135M fp32) through the whole training run."""
    rows = load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=True)[0]
    p = dpo.DpoParams(max_steps=1, max_length=256, threads=1)
    trainer = dpo.build_dpo_trainer(tiny_model_dir, tiny_model_dir, rows, p, tmp_path / "run", stored=None)
    ref = weakref.ref(trainer.ref_model)
    dpo._drop_reference(trainer)
    gc.collect()
    assert trainer.ref_model is None and ref() is None


def test_default_training_batches_are_micro_batches():
    """Batch 8 at once peaked at 12.7 GB RSS in train_dpo (logits of 16 x 256 tokens x 49k vocab, several copies);
    the same 8 per step in micro-batches stays under 6 GB (docs/training.md, "Peak memory")."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage, most in (("train_sft", 4), ("train_dpo", 2)):
        sec = params[stage]
        assert sec["batch_size"] <= most and sec["batch_size"] * sec["grad_accum"] == 8, stage
    assert params["train_dpo"]["ref_batch_size"] <= 4
