"""Stage train_dpo: DPO of the SFT model against an explicit reference model, with stored reference log-probs.

The reference log-probs live in --ref-cache (a persistent DVC output) under a key of reference weights + data +
max_length, so a beta sweep (`dvc exp run -S train_dpo.beta=0.2`) reuses them. Under ``accelerate_config: none`` (the
CPU default) it trains in this process; any other value re-runs this command under ``accelerate launch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from saferinstruct.io import output_set
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats
from saferinstruct.train.dpo import DpoParams, train_dpo
from saferinstruct.train.launch import is_main_process, maybe_relaunch
from saferinstruct.train.progress import training_summary

PathOpt = click.Path(path_type=Path)


@click.command()
@click.option("--policy", default="models/sft", type=PathOpt, show_default=True, help="model to train")
@click.option("--ref", "ref_dir", default="models/sft", type=PathOpt, show_default=True, help="reference model")
@click.option("--train", "train_path", default="data/pairs/train.jsonl", type=PathOpt, show_default=True)
@click.option("--ref-cache", default="models/ref_logprobs", type=PathOpt, show_default=True)
@click.option("--out", default="models/dpo", type=PathOpt, show_default=True)
@click.option("--live-dir", default="dvclive/train_dpo", type=PathOpt, show_default=True)
@click.option("--stats", default="stats/train_dpo.json", type=PathOpt, show_default=True)
@click.option("--params", "params_path", default="params.yaml", type=PathOpt, show_default=True)
@click.option("--checkpoint-dir", default="checkpoints/train_dpo", type=PathOpt, show_default=True,
              help="resumable checkpoints (outside every DVC output; deleted after success)")
@clean_errors
def main(policy: Path, ref_dir: Path, train_path: Path, ref_cache: Path, out: Path, live_dir: Path, stats: Path,
         params_path: Path,
         checkpoint_dir: Path) -> None:
    p = load_section("train_dpo", DpoParams, params_path)
    maybe_relaunch(p.accelerate_config, sys.argv, os.environ)
    with output_set() as staged:  # the model, its curves and the stats file change together, or none does
        with Timer() as timer:
            result = train_dpo(policy, ref_dir, train_path, out, ref_cache, live_dir, p, checkpoint_dir, out=staged)
        if is_main_process(os.environ):
            write_stats(stats, {**result, "seconds": timer.seconds}, staged)
    if is_main_process(os.environ):
        click.echo(training_summary("train_dpo", result, timer.seconds, out))


if __name__ == "__main__":
    main()
