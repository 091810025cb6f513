"""Mid-run checkpoints: a training stage killed with kill -9 resumes from its last checkpoint, outside DVC outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_helpers import FIX, REPO, read_json, tensors, write_params

from saferinstruct.train import checkpoints

# run a stage, but sleep after the first checkpoint is saved: a fixed window for the test to kill -9 it from outside
_SLOW_AFTER_FIRST_SAVE = """
import runpy, sys, time, transformers
save = transformers.Trainer._save_checkpoint
def save_then_wait(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(300)
transformers.Trainer._save_checkpoint = save_then_wait
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _sft_cmd(tmp: Path, model: Path, params: Path, ckpt: Path, tag: str) -> list[str]:
    return [str(REPO / "stages" / "train_sft.py"), "--base", str(model), "--train", str(FIX / "preferences.jsonl"),
            "--out", str(tmp / f"sft_{tag}"), "--live-dir", str(tmp / f"live_{tag}"),
            "--stats", str(tmp / f"stats_{tag}.json"), "--params", str(params), "--checkpoint-dir", str(ckpt)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, *cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _wait_for_checkpoint(ckpt: Path, proc: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in ckpt.glob("*") if ckpt.exists() else []:
            found = checkpoints.last_checkpoint(run)
            if found:
                return found
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint in {ckpt} after {timeout} s")


def test_sft_killed_with_sigkill_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path,
                                                                                            tiny_model_dir):
    params = write_params(tmp_path / "params.yaml", "train_sft", max_steps=6, save_steps=2, threads=1)
    ckpt = tmp_path / "checkpoints" / "train_sft"
    killed = subprocess.Popen([sys.executable, "-c", _SLOW_AFTER_FIRST_SAVE,
                               *_sft_cmd(tmp_path, tiny_model_dir, params, ckpt, "a")],
                              cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
    first = _wait_for_checkpoint(ckpt, killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "sft_a").exists()
    assert checkpoints.step_of(first) == 2

    _run(_sft_cmd(tmp_path, tiny_model_dir, params, ckpt, "a"), tmp_path)  # the same command, re-run
    stats = read_json(tmp_path / "stats_a.json")
    assert stats["resumed_from_step"] == 2
    assert not ckpt.exists()  # deleted once the model was saved
    doc = read_json(tmp_path / "sft_a" / "training_config.json")
    assert doc["trainer_config"]["save_steps"] == 2 and doc["trainer_config"]["output_dir"].startswith(str(ckpt))

    # an uninterrupted run of the same config: the resume restored optimizer, scheduler, RNG and data order
    _run(_sft_cmd(tmp_path, tiny_model_dir, params, tmp_path / "ck_b", "b"), tmp_path)
    assert read_json(tmp_path / "stats_b.json")["resumed_from_step"] == 0
    resumed, straight = tensors(tmp_path / "sft_a"), tensors(tmp_path / "sft_b")
    assert all(resumed[k].equal(straight[k]) for k in straight)


def test_a_changed_config_never_resumes_a_stale_run():
    doc = {"stage": "train_sft", "params": {"lr": 1e-3, "save_steps": 2}, "data": {"train": {"sha256": "a"}}}
    same = {**doc, "params": {"lr": 1e-3, "save_steps": 5}}  # how often to save is not what is trained
    assert checkpoints.run_key(doc) == checkpoints.run_key(same)
    assert checkpoints.run_key(doc) != checkpoints.run_key({**doc, "params": {"lr": 2e-3, "save_steps": 2}})
    assert checkpoints.run_key(doc) != checkpoints.run_key({**doc, "data": {"train": {"sha256": "b"}}})


def test_last_checkpoint_skips_one_killed_mid_save(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()  # killed before trainer_state.json (written last) existed
    assert checkpoints.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert checkpoints.last_checkpoint(tmp_path / "none") is None


def test_checkpoints_stay_out_of_dvc_outputs():
    """The checkpoint root is ignored by git and DVC, and no stage declares anything under it."""
    import yaml

    assert "/checkpoints/" in (REPO / ".gitignore").read_text().splitlines()
    assert "/checkpoints/" in (REPO / ".dvcignore").read_text().splitlines()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        assert not any(str(o).startswith("checkpoints") for o in outs), name


@pytest.mark.parametrize("zero3", [False, True])
def test_checkpoint_weights_are_bf16_when_trained_in_bf16(tmp_path, tiny_model_dir, monkeypatch, zero3):
    """Under ZeRO-3 + bf16 the weights are loaded (and so checkpointed) in bf16, with DeepSpeed's fp32 master copy in
    the optimizer state; elsewhere bf16 is autocast over fp32 master weights (common.load_dtype says why)."""
    import torch
    import transformers.integrations

    from saferinstruct.train.common import build_sft_trainer
    from saferinstruct.train.data import as_sft, load_preferences
    from saferinstruct.train.sft import SftParams

    monkeypatch.chdir(tmp_path)  # trainer.train() without attach_dvclive logs into ./dvclive
    # deepspeed is not installed here: fake only what load_dtype asks, not what from_pretrained asks
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: zero3)
    rows = as_sft(load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=False)[0])
    p = SftParams(precision="bf16", max_steps=1, save_steps=1, batch_size=2, max_length=256, threads=1)
    trainer = build_sft_trainer(tiny_model_dir, rows, p, tmp_path / "run")
    trainer.train()
    saved = tensors(tmp_path / "run" / "checkpoint-1")
    want = torch.bfloat16 if zero3 else torch.float32
    assert {t.dtype for t in saved.values()} == {want}
    assert trainer.args.bf16 is True
