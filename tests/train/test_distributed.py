"""The scale path: accelerate configs chosen by params, and DPO in 2 processes on CPU (torchrun, gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _train_helpers import FIX, REPO, copy_model, read_json, write_params

from saferinstruct.params import ParamsError
from saferinstruct.train import ref_cache
from saferinstruct.train.common import load_tokenizer
from saferinstruct.train.dpo import DpoParams, build_dpo_trainer
from saferinstruct.train.launch import CONFIG_DIR, accelerate_command

CONFIGS = {"single_gpu": "NO", "multi_gpu_ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}


@pytest.mark.parametrize("name,kind", CONFIGS.items())
def test_every_named_config_exists_and_launches_the_stage(name, kind):
    doc = yaml.safe_load((REPO / CONFIG_DIR / f"{name}.yaml").read_text())
    assert doc["distributed_type"] == kind and doc["use_cpu"] is False
    cmd = accelerate_command(name, ["stages/train_dpo.py", "--beta-x"], False, gpus=4, config_dir=REPO / CONFIG_DIR)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[cmd.index("--num_processes") + 1] == ("1" if name == "single_gpu" else "4")
    assert cmd[-2:] == ["stages/train_dpo.py", "--beta-x"]


def test_cpu_default_and_relaunched_processes_run_in_place():
    assert accelerate_command("none", ["x.py"], False, gpus=0) is None
    assert accelerate_command("fsdp", ["x.py"], True, gpus=8) is None  # already under a launcher: never loop
    with pytest.raises(ParamsError, match="needs a GPU"):
        accelerate_command("fsdp", ["x.py"], False, gpus=0, config_dir=REPO / CONFIG_DIR)
    with pytest.raises(ParamsError, match="not found"):
        accelerate_command("zero9", ["x.py"], False, gpus=1, config_dir=REPO / CONFIG_DIR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dpo_in_two_cpu_processes_matches_single_process_reference(tmp_path, tiny_model_dir):
    policy = copy_model(tiny_model_dir, tmp_path / "sft")
    params = write_params(tmp_path / "params.yaml", "train_dpo", ref_batch_size=2, max_steps=2)
    cache = tmp_path / "ref_logprobs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(REPO / "stages" / "train_dpo.py"), "--policy", str(policy), "--ref", str(policy),
           "--train", str(FIX / "preferences.jsonl"), "--out", str(tmp_path / "dpo"), "--ref-cache", str(cache),
           "--live-dir", str(tmp_path / "dvclive"), "--stats", str(tmp_path / "stats.json"), "--params", str(params)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    device = read_json(tmp_path / "dpo" / "training_config.json")["device"]
    assert device["num_processes"] == 2 and device["distributed_type"].endswith("MULTI_CPU")
    stats = read_json(tmp_path / "stats.json")
    assert stats["ref_cache_hit"] is False and stats["rows_trained"] == 8

    # the 2-process reference pass (sharded batches, gathered) stored the same values a single process computes
    p = DpoParams(max_length=256, ref_batch_size=3)
    rows = _rows()
    trainer = build_dpo_trainer(policy, policy, rows, p, tmp_path / "staging", stored=None)
    stored = ref_cache.load(cache, ref_cache.make_key(policy, rows, p.max_length))
    assert stored is not None and stored.ids == trainer.computed.ids
    assert stored.chosen == pytest.approx(trainer.computed.chosen, abs=1e-3)
    assert stored.rejected == pytest.approx(trainer.computed.rejected, abs=1e-3)
    assert load_tokenizer(tmp_path / "dpo").eos_token == load_tokenizer(policy).eos_token


def _rows():
    from saferinstruct.train.data import load_preferences

    return load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=True)[0]
