"""Helpers shared by the training tests (tiny model, few steps, offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from conftest import FIXTURES, REPO  # noqa: F401  (REPO re-exported for the training tests)

FIX = FIXTURES / "train"
# a few steps at a learning rate large enough that every float32 weight moves
TINY = {"lr": 1e-3, "max_steps": 3, "batch_size": 2, "max_length": 256, "logging_steps": 1}


def write_params(path: Path, section: str, **values) -> Path:
    path.write_text(yaml.safe_dump({section: {**TINY, **values}}), encoding="utf-8")
    return path


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def changed(before_dir: Path, after_dir: Path) -> dict[str, bool]:
    """Per tensor: did training change it?"""
    import torch

    before, after = tensors(before_dir), tensors(after_dir)
    assert before.keys() == after.keys()
    return {k: not torch.equal(before[k], after[k]) for k in before}


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def logged_losses(live_dir: Path, name: str = "loss") -> list[float]:
    """The per-step values DVCLive wrote for a metric (plots/metrics/<name>.tsv)."""
    lines = (Path(live_dir) / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[1]) for line in lines]
