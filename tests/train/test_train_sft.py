"""train_sft: SFT of the policy on the chosen side of the preference data (tiny model, few steps)."""

from __future__ import annotations

import json
from pathlib import Path

from _train_helpers import FIX, changed, copy_model, logged_losses, read_json, write_params
from click.testing import CliRunner
from conftest import import_stage, stage_args

from saferinstruct.errors import WriteError
from saferinstruct.train.common import build_sft_trainer, load_tokenizer
from saferinstruct.train.data import as_sft, load_preferences
from saferinstruct.train.sft import SftParams


def _run(tmp_path: Path, base: Path, data: Path = FIX / "preferences.jsonl", stage=None, **params):
    out = tmp_path / "models" / "sft"
    args = stage_args("train_sft", tmp_path, base=base, train=data,
                      params=write_params(tmp_path / "params.yaml", "train_sft", **params))
    return CliRunner().invoke((stage or import_stage("train_sft")).main, args, catch_exceptions=False), out


def test_sft_logs_loss_and_changes_every_parameter(tmp_path, tiny_model_dir):
    base = copy_model(tiny_model_dir, tmp_path / "base")
    result, out = _run(tmp_path, base)
    assert result.exit_code == 0, result.output
    losses = logged_losses(tmp_path / "dvclive" / "train_sft")
    assert len(losses) >= 3 and all(loss > 0 for loss in losses)
    moved = changed(base, out)
    assert all(moved.values()), [k for k, v in moved.items() if not v]
    cfg = read_json(out / "training_config.json")
    assert cfg["stage"] == "train_sft" and cfg["params"]["format"] == "conversational"
    assert cfg["base_model"]["path"] == str(base) and cfg["data"]["train"]["rows"] == 8
    stats = read_json(tmp_path / "stats" / "train_sft.json")
    assert (stats["rows_in"], stats["rows_used"], stats["dropped_empty"]) == (8, 8, 0)
    assert stats["steps"] == 3 and stats["final_loss"] == round(losses[-1], 6)
    # progress lines (stderr is no terminal here), not the trainer's raw log dicts; one closing line
    lines = result.output.splitlines()
    assert any(line.startswith("train_sft: step 1/3 loss ") and "left" in line for line in lines), lines
    assert not any(line.startswith("{'loss'") for line in lines), lines
    # stdout's last line (progress goes to stderr, whose interleaving with stdout a runner need not keep)
    assert result.stdout.splitlines()[-1] == f"train_sft: 3 steps, final loss {stats['final_loss']:.4g}, {stats['seconds']}s -> {out}"


def test_a_failed_stats_write_leaves_the_old_model_curves_and_stats(tmp_path, tiny_model_dir, monkeypatch):
    base = copy_model(tiny_model_dir, tmp_path / "base")
    old_model = copy_model(tiny_model_dir, tmp_path / "models" / "sft")
    (old_model / "marker").write_text("the last good model")
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "train_sft.json").write_text('{"old": true}')
    stage = import_stage("train_sft")

    def failing_write_stats(path, stats, out=None):
        raise WriteError(path, "disk full")

    monkeypatch.setattr(stage, "write_stats", failing_write_stats)
    result, out = _run(tmp_path, base, stage=stage)
    assert result.exit_code == 2 and "disk full" in result.output
    assert (out / "marker").read_text() == "the last good model" and not any(changed(tiny_model_dir, out).values())
    assert (tmp_path / "stats" / "train_sft.json").read_text() == '{"old": true}'
    assert not (tmp_path / "dvclive" / "train_sft").exists()  # the new curves went with the new model
    leftovers = [p.name for d in (tmp_path / "models", tmp_path / "dvclive") if d.exists() for p in d.iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_loss_is_only_on_the_chosen_response(tmp_path, tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows, _ = load_preferences(FIX / "preferences.jsonl", "conversational", with_rejected=False)
    trainer = build_sft_trainer(tiny_model_dir, as_sft(rows), SftParams(batch_size=8, max_length=512),
                                tmp_path / "staging")
    batch = next(iter(trainer.get_train_dataloader()))
    trained = sorted(tok.decode(ids[lab != -100]) for ids, lab in zip(batch["input_ids"], batch["labels"]))
    expected = sorted(f"{r['chosen'][0]['content']}{tok.eos_token}\n" for r in rows)
    assert trained == expected  # the chosen answer and its end-of-turn, nothing of the prompt, nothing rejected


def test_plain_format_and_a_fixed_subset(tmp_path, tiny_model_dir):
    base = copy_model(tiny_model_dir, tmp_path / "base")
    result, out = _run(tmp_path, base, data=FIX / "preferences_plain.jsonl", format="plain", max_pairs=5, seed=7)
    assert result.exit_code == 0, result.output
    stats = read_json(tmp_path / "stats" / "train_sft.json")
    assert (stats["rows_used"], stats["dropped_max_pairs"]) == (5, 3)
    a, _ = load_preferences(FIX / "preferences.jsonl", "plain", with_rejected=True, max_pairs=5, seed=7)
    b, _ = load_preferences(FIX / "preferences_plain.jsonl", "plain", with_rejected=True, max_pairs=5, seed=7)
    assert a == b  # either input shape gives the same rows; the subset depends on the seed only
    c, _ = load_preferences(FIX / "preferences_plain.jsonl", "plain", with_rejected=True, max_pairs=5, seed=8)
    assert [r["id"] for r in c] != [r["id"] for r in a]


def test_empty_sides_are_dropped_and_counted(tmp_path):
    rows = [json.loads(line) for line in (FIX / "preferences_plain.jsonl").read_text(encoding="utf-8").splitlines()]
    rows[3]["rejected"] = "  "
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]), encoding="utf-8")
    _, counts = load_preferences(data, "conversational", with_rejected=True)
    assert counts == {"rows_in": 4, "dropped_empty": 1, "rows_used": 3}
    shaped, counts = load_preferences(data, "conversational", with_rejected=False)  # SFT needs no rejected side
    assert counts["dropped_empty"] == 0 and len(shaped) == 4
    assert shaped[3]["chosen"] == [{"role": "assistant", "content": rows[3]["chosen"]}]


def test_a_bad_preference_row_is_a_one_line_error(tmp_path, tiny_model_dir):
    data = tmp_path / "p.jsonl"
    data.write_text('{"id": "a", "prompt": "hi", "chosen": "hello"}\n', encoding="utf-8")
    result, out = _run(tmp_path, tiny_model_dir, data=data)
    assert result.exit_code == 2 and f"{data}:1: field 'rejected'" in result.output and not out.exists()


def test_precision_bf16_trains_in_mixed_precision_on_cpu_and_saves_float32(tmp_path, tiny_model_dir, monkeypatch):
    import saferinstruct.train.common as common
    from saferinstruct.train.common import trainer_kwargs, use_bf16

    monkeypatch.setattr(common, "on_gpu", lambda: False)  # the CPU case, also on a machine with a GPU
    assert not use_bf16(SftParams()) and not use_bf16(SftParams(precision="float32"))  # auto on CPU: float32
    assert trainer_kwargs(SftParams(precision="bf16"), tmp_path)["bf16"] is True
    base = copy_model(tiny_model_dir, tmp_path / "base")
    result, out = _run(tmp_path, base, precision="bf16")
    assert result.exit_code == 0, result.output
    assert read_json(out / "training_config.json")["device"]["bf16"] is True
    from safetensors.torch import load_file

    assert {str(t.dtype) for t in load_file(str(out / "model.safetensors")).values()} == {"torch.float32"}
