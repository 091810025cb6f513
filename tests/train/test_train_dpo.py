"""train_dpo: DPO with an explicit reference model and stored reference log-probs (tiny model, few steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_helpers import FIX, TINY, changed, copy_model, logged_losses, read_json, write_params
from click.testing import CliRunner
from conftest import import_stage, stage_args, stage_path
from safetensors.torch import load_file, save_file

import saferinstruct.train.dpo as dpo_mod


def _run(tmp_path: Path, policy: Path, ref: Path, data: Path = FIX / "preferences.jsonl", **params):
    out, live = stage_path("train_dpo", tmp_path, "--out"), stage_path("train_dpo", tmp_path, "--live-dir")
    args = stage_args("train_dpo", tmp_path, policy=policy, ref=ref, train=data,
                      params=write_params(tmp_path / "params.yaml", "train_dpo", **params))
    result = CliRunner().invoke(import_stage("train_dpo").main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _run.output, _run.stdout = result.output, result.stdout  # the last run's stdout + stderr, and stdout alone
    return read_json(stage_path("train_dpo", tmp_path, "--stats")), out, live


def _first(live: Path, metric: str) -> float:
    return logged_losses(live, metric)[0]


def test_dpo_logs_loss_changes_every_parameter_and_records_the_reference(tmp_path, tiny_model_dir):
    policy = copy_model(tiny_model_dir, tmp_path / "sft")
    stats, out, live = _run(tmp_path, policy, policy, beta=0.3)
    assert len(logged_losses(live)) >= 3 and len(logged_losses(live, "rewards/margins")) >= 3
    moved = changed(policy, out)
    assert all(moved.values()), [k for k, v in moved.items() if not v]
    cfg = read_json(out / "training_config.json")
    assert cfg["trainer_config"]["beta"] == 0.3 and cfg["trainer_config"]["precompute_ref_log_probs"] is True
    assert cfg["reference_model"]["weights_sha256"] == cfg["ref_logprobs"]["key"]["ref_weights_sha256"]
    assert (stats["rows_used"], stats["rows_trained"], stats["ref_cache_hit"]) == (8, 8, False)
    # the reference pass reports its pairs, trl's deprecated-property warning is not shown, one closing line
    assert "train_dpo: reference log-probs: 8/8 pairs" in _run.output and "Warning" not in _run.output
    closing = _run.stdout.splitlines()[-1]  # stdout's last line (progress lines go to stderr)
    assert closing.startswith(f"train_dpo: {stats['steps']} steps, final loss ")


def test_ref_logprob_cache_hit_then_invalidated_by_data_and_by_reference(tmp_path, tiny_model_dir, monkeypatch):
    policy = copy_model(tiny_model_dir, tmp_path / "sft")
    loads: list[str] = []
    real_load = dpo_mod.load_model
    monkeypatch.setattr(dpo_mod, "load_model", lambda d, *a: loads.append(Path(d).name) or real_load(d, *a))
    cache = tmp_path / "models" / "ref_logprobs"

    stats, _, live = _run(tmp_path, policy, policy, beta=0.1)
    assert stats["ref_cache_hit"] is False and loads == ["sft", "sft"] and len(list(cache.glob("*.json"))) == 1
    assert abs(_first(live, "rewards/chosen")) < 1e-5  # step 0: policy == reference, so stored logps are exact

    loads.clear()
    stats, _, live = _run(tmp_path, policy, policy, beta=0.5, lr=5e-4)  # a sweep: only beta / lr change
    assert stats["ref_cache_hit"] is True and loads == ["sft"]  # the reference model is not even loaded
    assert abs(_first(live, "rewards/chosen")) < 1e-5 and len(list(cache.glob("*.json"))) == 1

    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join((FIX / "preferences.jsonl").read_text(encoding="utf-8").splitlines(True)[:6]))
    stats, _, _ = _run(tmp_path, policy, policy, data=fewer)
    assert stats["ref_cache_hit"] is False and stats["rows_trained"] == 6

    ref = copy_model(policy, tmp_path / "ref")
    weights = load_file(str(ref / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.5
    save_file(weights, str(ref / "model.safetensors"), metadata={"format": "pt"})
    stats, _, live = _run(tmp_path, policy, ref)
    assert stats["ref_cache_hit"] is False and len(list(cache.glob("*.json"))) == 3
    assert abs(_first(live, "rewards/chosen")) > 1e-3  # the explicit reference, not the policy, was used
    stats, _, _ = _run(tmp_path, policy, ref, max_length=TINY["max_length"] // 2)
    assert stats["ref_cache_hit"] is False and len(list(cache.glob("*.json"))) == 4


def test_fixture_loads_with_datasets_and_trains_with_plain_dpotrainer(tmp_path, tiny_model_dir):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from saferinstruct.train.common import load_model

    ds = load_dataset("json", data_files=str(FIX / "preferences.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names) and ds[0]["prompt"][0]["role"] == "user"
    model, tok = load_model(tiny_model_dir)
    ref, _ = load_model(tiny_model_dir)
    args = DPOConfig(output_dir=str(tmp_path / "o"), max_steps=1, per_device_train_batch_size=2, use_cpu=True,
                     bf16=False, gradient_checkpointing=False, report_to=[], max_length=256, save_strategy="no")
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    before = {k: v.clone() for k, v in model.named_parameters()}
    trainer.train()
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters())


def test_loss_type_sft_adds_the_chosen_nll(tmp_path, tiny_model_dir):
    policy = copy_model(tiny_model_dir, tmp_path / "sft")
    for name in ("dpo", "rpo"):
        (tmp_path / name).mkdir()
    _, _, live = _run(tmp_path / "dpo", policy, policy, logging_steps=1)
    _, out, rpo_live = _run(tmp_path / "rpo", policy, policy, logging_steps=1, loss_type=["sigmoid", "sft"],
                            loss_weights=[1.0, 0.5])
    # step 1: policy == reference, so the sigmoid term is ln 2; the SFT term adds half the chosen side's NLL
    assert abs(_first(live, "loss") - 0.6931) < 0.01
    assert _first(rpo_live, "loss") > 0.6931 + 0.5
    cfg = read_json(out / "training_config.json")["trainer_config"]
    assert cfg["loss_type"] == ["sigmoid", "sft"] and cfg["loss_weights"] == [1.0, 0.5]


def test_loss_weights_must_match_loss_type():
    with pytest.raises(ValueError, match="loss_weights has 1 values for 2 loss_type"):
        dpo_mod.DpoParams(loss_type=["sigmoid", "sft"], loss_weights=[1.0])


def test_reference_pass_longest_first_gives_each_row_its_own_logps(tmp_path, tiny_model_dir):
    """The reference pass runs over the pairs longest first (less padding); every row still gets the log-probs an
    unpadded pass of that row alone gives, in the rows' own order."""
    from saferinstruct.train.data import load_preferences
    from saferinstruct.train.dpo import DpoParams, build_dpo_trainer, longest_first, unsort

    assert unsort([30.0, 10.0, 20.0], [2, 0, 1]) == [10.0, 20.0, 30.0]
    policy = copy_model(tiny_model_dir, tmp_path / "sft")
    rows = load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=True)[0]
    trainer = build_dpo_trainer(policy, policy, rows, DpoParams(max_length=256, ref_batch_size=3),
                                tmp_path / "staging", stored=None)
    data = trainer.train_dataset
    order = longest_first(data)
    assert order != sorted(order)  # the fixture's pairs are not already longest first: the mapping is exercised
    assert trainer.computed.ids == list(data["id"])
    with torch.inference_mode():  # the policy is still the untrained copy of the reference
        for i in range(len(data)):
            chosen, rejected = trainer.compute_ref_log_probs(trainer.model, trainer.data_collator([data[i]]))
            assert trainer.computed.chosen[i] == pytest.approx(chosen.item(), abs=1e-4)
            assert trainer.computed.rejected[i] == pytest.approx(rejected.item(), abs=1e-4)
            assert data[i]["ref_chosen_logps"] == pytest.approx(chosen.item(), abs=1e-4)
