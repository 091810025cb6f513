"""Same machine, same command: training writes a byte-identical model directory (weights, tokenizer and
training_config.json), so DVC sees the same output hash, downstream stages are skipped, and every call-cache key made
from the model's weights stays valid. Each run is a fresh process, as `dvc repro` runs a stage. What can and cannot be
identical across machines, and the measured figures: docs/training.md ("Determinism")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _train_helpers import FIX, REPO, read_json, write_params
from dvc_helpers import files_under


def _train_in_fresh_process(work: Path, base: Path) -> dict[str, bytes]:
    """train_reverse as `dvc repro` runs it (same paths every time: they are recorded in training_config.json)."""
    out = work / "models" / "reverse"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVCLIVE_OPEN": "false"}
    subprocess.run([sys.executable, str(REPO / "stages" / "train_reverse.py"), "--base", str(base),
                    "--train", str(FIX / "reverse_train.jsonl"), "--val", str(FIX / "reverse_val.jsonl"),
                    "--out", str(out), "--live-dir", str(work / "dvclive"), "--stats", str(work / "stats.json"),
                    "--params", str(work / "params.yaml")], cwd=work, env=env, check=True, capture_output=True,
                   timeout=300)
    return files_under(out)


def test_two_runs_in_fresh_processes_write_byte_identical_model_dirs(tmp_path, tiny_model_dir):
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    write_params(tmp_path / "params.yaml", "train_reverse", warmup_ratio=0.3, seed=7, threads=1)
    first = _train_in_fresh_process(tmp_path, base)
    second = _train_in_fresh_process(tmp_path, base)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []  # weights and training_config.json alike
    recorded = read_json(tmp_path / "models" / "reverse" / "training_config.json")
    assert "train_loss" in recorded["train_metrics"]  # results stay; wall-clock figures live in stats/ only
    assert not [k for k in recorded["train_metrics"] if k.endswith(("_runtime", "_per_second"))]
    assert "train_runtime" in read_json(tmp_path / "stats.json")
    assert recorded["params"]["threads"] == 1


def test_threads_param_sets_torch_intra_op_threads(tmp_path):
    import torch

    from saferinstruct.train.common import trainer_kwargs
    from saferinstruct.train.reverse import ReverseParams

    before = torch.get_num_threads()
    try:
        trainer_kwargs(ReverseParams(threads=3), tmp_path)
        assert torch.get_num_threads() == 3
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)
