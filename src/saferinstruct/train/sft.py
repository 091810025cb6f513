"""SFT of the policy on the chosen (safe) responses of the preference data: step one of the paper's alignment recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.io import OutputSet
from saferinstruct.train.common import (TrainParams, build_sft_trainer, checkpointed, data_identity, model_identity,
                                        output_dir, train_and_save)
from saferinstruct.train.data import DataFormat, as_sft, load_preferences


class SftParams(TrainParams):
    format: DataFormat = "conversational"
    max_pairs: int | None = Field(default=None, ge=1)  # a fixed random subset, to size a CPU run (None: all pairs)


def train_sft(base_dir: Path, train_path: Path, out_dir: Path, live_dir: Path, p: SftParams,
              checkpoint_root: Path | None = None, out: OutputSet | None = None) -> dict[str, Any]:
    """Fine-tune ``base_dir`` on prompt -> chosen (loss on the response only); writes ``out_dir``, returns stats.
    ``checkpoint_root``: where resumable checkpoints go (None: no checkpoints). ``out``: the stage's output set, to
    commit the model with its stats (``train_and_save``)."""
    p = checkpointed(p, checkpoint_root)
    rows, counts = load_preferences(train_path, p.format, with_rejected=False, max_pairs=p.max_pairs, seed=p.seed)
    doc = {"stage": "train_sft", "params": p.model_dump(), "base_model": model_identity(base_dir),
           "data": {"train": data_identity(train_path, counts["rows_in"])}}
    trainer = build_sft_trainer(base_dir, as_sft(rows), p, output_dir(out_dir, checkpoint_root, doc))
    metrics = train_and_save(trainer, out_dir, live_dir, base_dir, doc, out=out)
    return {**counts, **metrics}
