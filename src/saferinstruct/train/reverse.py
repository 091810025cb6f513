"""Reversed instruction tuning: learn P(instruction | response) with trl's SFTTrainer (loss on the instruction only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.io import OutputSet, read_rows
from saferinstruct.records import ReversePair
from saferinstruct.templates import ReverseTemplate
from saferinstruct.train.common import (TrainParams, build_sft_trainer, checkpointed, data_identity, load_tokenizer,
                                        model_identity, output_dir, train_and_save)
from saferinstruct.train.data import reverse_examples


class ReverseParams(TrainParams):
    template: ReverseTemplate = "paper"
    eval_rows: int = Field(default=64, ge=0)  # validation rows scored once after training (0: skip)


def train_reverse(base_dir: Path, train_path: Path, val_path: Path | None, out_dir: Path, live_dir: Path,
                  p: ReverseParams, checkpoint_root: Path | None = None, out: OutputSet | None = None
                  ) -> dict[str, Any]:
    """Fine-tune ``base_dir`` on reversed pairs; writes ``out_dir`` and returns stats (``checkpoint_root``, ``out``:
    as ``train_sft``)."""
    p = checkpointed(p, checkpoint_root)
    tokenizer = load_tokenizer(base_dir)
    pairs = read_rows(train_path, ReversePair)
    rows, counts = reverse_examples(pairs, p.template, tokenizer, p.max_length)
    val_rows: list[dict[str, Any]] = []
    if val_path is not None and p.eval_rows:
        val_pairs = read_rows(val_path, ReversePair)[: p.eval_rows]
        val_rows = reverse_examples(val_pairs, p.template, tokenizer, p.max_length)[0]
    data = {"train": data_identity(train_path, len(pairs))}
    if val_path is not None:
        data["val"] = data_identity(val_path, len(val_rows))
    doc = {"stage": "train_reverse", "params": p.model_dump(), "base_model": model_identity(base_dir), "data": data}
    trainer = build_sft_trainer(base_dir, rows, p, output_dir(out_dir, checkpoint_root, doc), val_rows)
    metrics = train_and_save(trainer, out_dir, live_dir, base_dir, doc, evaluate=bool(val_rows), out=out)
    return {"rows_in": len(pairs), **counts, "rows_used": len(rows), "eval_rows": len(val_rows), **metrics}
