"""Stage train_reverse: fine-tune the base model on (response -> instruction) pairs to learn P(instruction | response).

Under ``accelerate_config: none`` (the CPU default) it trains in this process; any other value re-runs this same command
under ``accelerate launch`` with configs/accelerate/<name>.yaml (see docs/training.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from saferinstruct.base_pointer import resolve_base
from saferinstruct.io import output_set
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats
from saferinstruct.train.launch import is_main_process, maybe_relaunch
from saferinstruct.train.progress import training_summary
from saferinstruct.train.reverse import ReverseParams, train_reverse

PathOpt = click.Path(path_type=Path)


@click.command()
@click.option("--base", default="models/reverse_base", type=PathOpt, show_default=True,
              help="reversed base model dir, or prepare_base's pointer to the policy base (models/base)")
@click.option("--train", "train_path", default="data/reverse/train.jsonl", type=PathOpt, show_default=True)
@click.option("--val", "val_path", default="data/reverse/val.jsonl", type=PathOpt, show_default=True)
@click.option("--out", default="models/reverse", type=PathOpt, show_default=True)
@click.option("--live-dir", default="dvclive/train_reverse", type=PathOpt, show_default=True)
@click.option("--stats", default="stats/train_reverse.json", type=PathOpt, show_default=True)
@click.option("--params", "params_path", default="params.yaml", type=PathOpt, show_default=True)
@click.option("--checkpoint-dir", default="checkpoints/train_reverse", type=PathOpt, show_default=True,
              help="resumable checkpoints (outside every DVC output; deleted after success)")
@clean_errors
def main(base: Path, train_path: Path, val_path: Path, out: Path, live_dir: Path, stats: Path,
         params_path: Path, checkpoint_dir: Path) -> None:
    p = load_section("train_reverse", ReverseParams, params_path)
    base = resolve_base(base)  # the default pointer -> models/base: the same path string as before
    maybe_relaunch(p.accelerate_config, sys.argv, os.environ)
    with output_set() as staged:  # the model, its curves and the stats file change together, or none does
        with Timer() as timer:
            result = train_reverse(base, train_path, val_path, out, live_dir, p, checkpoint_dir, out=staged)
        if is_main_process(os.environ):
            write_stats(stats, {**result, "seconds": timer.seconds}, staged)
    if is_main_process(os.environ):
        click.echo(training_summary("train_reverse", result, timer.seconds, out))


if __name__ == "__main__":
    main()
