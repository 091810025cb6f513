"""Stage train_sft: SFT of the base model on the chosen (safe) responses of the preference data.

Under ``accelerate_config: none`` (the CPU default) it trains in this process; any other value re-runs this same command
under ``accelerate launch`` with configs/accelerate/<name>.yaml (see docs/training.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from saferinstruct.io import output_set
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats
from saferinstruct.train.launch import is_main_process, maybe_relaunch
from saferinstruct.train.progress import training_summary
from saferinstruct.train.sft import SftParams, train_sft

PathOpt = click.Path(path_type=Path)


@click.command()
@click.option("--base", default="models/base", type=PathOpt, show_default=True, help="base model dir")
@click.option("--train", "train_path", default="data/pairs/train.jsonl", type=PathOpt, show_default=True)
@click.option("--out", default="models/sft", type=PathOpt, show_default=True)
@click.option("--live-dir", default="dvclive/train_sft", type=PathOpt, show_default=True)
@click.option("--stats", default="stats/train_sft.json", type=PathOpt, show_default=True)
@click.option("--params", "params_path", default="params.yaml", type=PathOpt, show_default=True)
@click.option("--checkpoint-dir", default="checkpoints/train_sft", type=PathOpt, show_default=True,
              help="resumable checkpoints (outside every DVC output; deleted after success)")
@clean_errors
def main(base: Path, train_path: Path, out: Path, live_dir: Path, stats: Path, params_path: Path,
         checkpoint_dir: Path) -> None:
    p = load_section("train_sft", SftParams, params_path)
    maybe_relaunch(p.accelerate_config, sys.argv, os.environ)
    with output_set() as staged:  # the model, its curves and the stats file change together, or none does
        with Timer() as timer:
            result = train_sft(base, train_path, out, live_dir, p, checkpoint_dir, out=staged)
        if is_main_process(os.environ):
            write_stats(stats, {**result, "seconds": timer.seconds}, staged)
    if is_main_process(os.environ):
        click.echo(training_summary("train_sft", result, timer.seconds, out))


if __name__ == "__main__":
    main()
