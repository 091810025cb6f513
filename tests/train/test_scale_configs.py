"""FSDP and multi-node: what runs here on CPU, and what is validated through accelerate's own parsing.

FSDP: torch 2.13's FSDP2 (``fully_shard``) trains on CPU over gloo (the first test), but accelerate 1.15 never builds an
FSDP run without a GPU-like device: with ``use_cpu`` it turns the config into plain multi-CPU DDP, without it the
processes do not even join a process group (``DistributedType.NO``), so the stage path is validated by config only.
Multi-node: two launchers on loopback, one per "node", run the training stage together as configs/slurm/train.sbatch
starts it on a cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _train_helpers import FIX, REPO, read_json, write_params

ACCEL = REPO / "configs" / "accelerate"

_FSDP2_STEP = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM
dist.init_process_group("gloo")
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
for block in model.model.layers:  # TRANSFORMER_BASED_WRAP: one unit per decoder block, as configs/accelerate/fsdp.yaml
    fully_shard(block)
fully_shard(model)
shard = next(model.parameters())
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.arange(32).reshape(2, 16) % 300
before = model(input_ids=x, labels=x).loss
before.backward(); opt.step(); opt.zero_grad()
after = model(input_ids=x, labels=x).loss
full = shard.full_tensor().shape
result = f"{shard.to_local().shape[0]} {full[0]} {before.item() > after.item()}"
open(f"rank{dist.get_rank()}.txt", "w").write(result)  # one file per rank: stdout lines of two ranks interleave
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}


def test_fsdp2_shards_and_trains_in_two_cpu_processes(tmp_path, tiny_model_dir):
    script = tmp_path / "fsdp2_step.py"
    script.write_text(_FSDP2_STEP)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script), str(tiny_model_dir)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        local, full, improved = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert int(local) * 2 == int(full)  # each rank holds half of every sharded parameter
        assert improved == "True"  # one optimizer step over the shards lowered the loss


def _launch(config: Path, extra: list[str]):
    """(torchrun arguments, process environment) accelerate's launcher derives from ``config`` (nothing started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), *extra, "train.py"])
    args, *_ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    return args, env


@pytest.mark.parametrize("name", ["fsdp", "multi_node_fsdp"])
def test_fsdp_configs_parse_into_the_intended_fsdp2_plugin(name, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = _launch(ACCEL / f"{name}.yaml", [])[1]
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.cpu_ram_efficient_loading is True
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"


@pytest.mark.parametrize("name,kind", [("multi_node_ddp", "MULTI_GPU"), ("multi_node_fsdp", "FSDP")])
def test_multi_node_configs_take_rank_and_address_from_the_command_line(name, kind):
    doc = yaml.safe_load((ACCEL / f"{name}.yaml").read_text())
    assert doc["distributed_type"] == kind and doc["num_machines"] > 1 and doc["rdzv_backend"] == "static"
    args, _ = _launch(ACCEL / f"{name}.yaml", ["--num_machines", "4", "--num_processes", "32", "--machine_rank", "3",
                                               "--main_process_ip", "10.0.0.7", "--main_process_port", "29555",
                                               "--same_network"])  # as the sbatch: the yaml's value is not applied
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 3)
    assert (args.master_addr, args.master_port) == ("10.0.0.7", "29555")


def test_sbatch_example_launches_a_dvc_stage_on_every_node():
    text = (REPO / "configs" / "slurm" / "train.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "configs" / "slurm" / "train.sbatch")]).returncode == 0
    for needle in ("scontrol show hostnames", "--machine_rank \"$SLURM_NODEID\"", "srun", "multi_node_ddp.yaml",
                   'yaml.safe_load(open("dvc.yaml"))["stages"]'):
        assert needle in text, needle


def test_sft_runs_across_two_nodes_on_loopback(tmp_path, tiny_model_dir):
    """Two launchers, machine_rank 0 and 1, one process each: the flags configs/slurm/train.sbatch passes, on CPU."""
    params = write_params(tmp_path / "params.yaml", "train_sft", max_steps=2, save_steps=0, threads=1)
    port = str(_free_port())
    stage = [str(REPO / "stages" / "train_sft.py"), "--base", str(tiny_model_dir), "--train",
             str(FIX / "preferences.jsonl"), "--out", str(tmp_path / "sft"), "--live-dir", str(tmp_path / "live"),
             "--stats", str(tmp_path / "stats.json"), "--params", str(params)]
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                               str(ACCEL / "multi_node_ddp.yaml"), "--mixed_precision", "no", "--same_network",
                               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                               "--main_process_ip", "127.0.0.1", "--main_process_port", port, *stage],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    device = read_json(tmp_path / "sft" / "training_config.json")["device"]
    assert device["num_processes"] == 2 and device["distributed_type"].endswith("MULTI_CPU")
