"""train_reverse: reversed instruction tuning on the tiny model (few steps), and once on the real SmolLM2 (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _train_helpers import FIX, changed, copy_model, logged_losses, read_json, write_params
from click.testing import CliRunner
from conftest import import_stage, stage_args

from saferinstruct.io import read_rows
from saferinstruct.records import ReversePair
from saferinstruct.train.common import build_sft_trainer, load_tokenizer
from saferinstruct.train.data import reverse_examples
from saferinstruct.train.reverse import ReverseParams


def _run(tmp_path: Path, base: Path, **params) -> tuple[object, Path]:
    out = tmp_path / "models" / "reverse"
    args = stage_args("train_reverse", tmp_path, base=base, train=FIX / "reverse_train.jsonl",
                      val=FIX / "reverse_val.jsonl",
                      params=write_params(tmp_path / "params.yaml", "train_reverse", **params))
    return CliRunner().invoke(import_stage("train_reverse").main, args, catch_exceptions=False), out


def test_full_finetune_logs_loss_changes_every_parameter_and_records_config(tmp_path, tiny_model_dir):
    base = copy_model(tiny_model_dir, tmp_path / "base")
    result, out = _run(tmp_path, base, grad_accum=2, seed=3)
    assert result.exit_code == 0, result.output
    assert len(logged_losses(tmp_path / "dvclive" / "train_reverse")) >= 3  # first step + each of the 3 steps
    assert "loss" in read_json(tmp_path / "dvclive" / "train_reverse" / "metrics.json")["eval"]
    moved = changed(base, out)
    assert all(moved.values()), [k for k, v in moved.items() if not v]
    cfg = read_json(out / "training_config.json")
    assert cfg["params"]["template"] == "paper"
    assert cfg["data"]["train"]["rows"] == 8 and len(cfg["data"]["train"]["sha256"]) == 64
    assert cfg["base_model"]["weights_sha256"] and cfg["versions"]["trl"] == "1.16.0"
    # every declared param reaches the trainer config
    tc = cfg["trainer_config"]
    assert (tc["learning_rate"], tc["max_steps"], tc["per_device_train_batch_size"], tc["gradient_accumulation_steps"],
            tc["max_length"], tc["seed"], tc["use_cpu"], tc["bf16"]) == (1e-3, 3, 2, 2, 256, 3, True, False)
    stats = read_json(tmp_path / "stats" / "train_reverse.json")
    assert stats["rows_used"] == 8 and stats["eval_rows"] == 4 and stats["seconds"] > 0
    assert not (out / "training_args.bin").exists() and not list(out.parent.glob(".reverse.*"))


def test_lora_is_merged_into_a_plain_model_dir(tmp_path, tiny_model_dir):
    base = copy_model(tiny_model_dir, tmp_path / "base")
    result, out = _run(tmp_path, base, lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0,
                                             "target_modules": ["q_proj", "v_proj"]})
    assert result.exit_code == 0, result.output
    assert not list(out.glob("adapter*"))
    moved = changed(base, out)
    targets = {k for k in moved if k.endswith(("q_proj.weight", "v_proj.weight"))}
    assert len(targets) == 4 and all(moved[k] for k in targets)
    assert not any(v for k, v in moved.items() if k not in targets)  # only the adapted weights moved


@pytest.mark.parametrize("template", ["paper", "chat"])
def test_loss_is_only_on_the_instruction(tmp_path, tiny_model_dir, template):
    tok = load_tokenizer(tiny_model_dir)
    pairs = read_rows(FIX / "reverse_train.jsonl", ReversePair)
    rows, _ = reverse_examples(pairs, template, tok, 256)
    p = ReverseParams(batch_size=len(rows), max_length=256, template=template)
    trainer = build_sft_trainer(tiny_model_dir, rows, p, tmp_path / "staging")
    batch = next(iter(trainer.get_train_dataloader()))
    trained = [tok.decode(ids[lab != -100]) for ids, lab in zip(batch["input_ids"], batch["labels"])]
    instructions = {pr.instruction.strip() for pr in pairs}
    for text in trained:
        instruction = next(i for i in instructions if text.startswith(i))
        assert text[len(instruction):].strip() in (tok.eos_token, f"{tok.eos_token}\n".strip())
        assert "Response" not in text
    assert len(trained) == len(instructions)


def test_long_response_is_cut_so_the_instruction_fits(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    pair = ReversePair(id="x", instruction="Write a short poem about the sea.", response="The sea. " * 400,
                       dataset="t", licence="t")
    rows, counts = reverse_examples([pair], "paper", tok, 128)
    assert counts["truncated_response"] == 1
    full = tok(rows[0]["prompt"] + rows[0]["completion"])["input_ids"]
    assert len(full) + 1 <= 128 and rows[0]["completion"] == pair.instruction


def test_bad_input_is_one_line_error(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "x"}\n', encoding="utf-8")
    params = write_params(tmp_path / "params.yaml", "train_reverse", learning_rate=0.1)
    stage = import_stage("train_reverse").main
    result = CliRunner().invoke(stage, ["--params", str(params)])
    assert result.exit_code == 2 and "unknown key 'train_reverse.learning_rate'" in result.output
    params = write_params(tmp_path / "params.yaml", "train_reverse")
    result = CliRunner().invoke(stage, ["--base", str(tiny_model_dir), "--train", str(bad), "--params", str(params),
                                        "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"{bad}:1: field 'response'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_reverse_on_real_smollm2(tmp_path):
    """A few steps of reversed tuning on SmolLM2-135M-Instruct, converted from the bundled GGUF by prepare_base."""
    from saferinstruct.prepare_base import ModelSource, materialise

    base = tmp_path / "base"
    materialise(ModelSource(source="bundled"), base, cache_dir=str(tmp_path / "conversions"))
    result, out = _run(tmp_path, base, lr=5e-5, max_steps=2, batch_size=2, max_length=256)
    assert result.exit_code == 0, result.output
    assert len(logged_losses(tmp_path / "dvclive" / "train_reverse")) >= 2
    moved = changed(base, out)
    assert all(moved.values()), [k for k, v in moved.items() if not v]
    cfg = read_json(out / "training_config.json")
    assert cfg["base_model"]["model_info"]["weights_sha256"]  # the base identity prepare_base recorded
