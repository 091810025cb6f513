"""Stage reverse_pairs: instruction datasets -> data/reverse/{train,val}.jsonl (response -> instruction pairs)."""

from __future__ import annotations

import click

from saferinstruct.reverse_pairs import ReversePairsParams, build_reverse_pairs
from saferinstruct.io import output_set
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--train", "train_path", default="data/reverse/train.jsonl", show_default=True)
@click.option("--val", "val_path", default="data/reverse/val.jsonl", show_default=True)
@click.option("--rejected", "rejected_path", default="data/rejected/reverse_pairs.jsonl", show_default=True)
@click.option("--stats", "stats_path", default="stats/reverse_pairs.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(train_path: str, val_path: str, rejected_path: str, stats_path: str, params_path: str) -> None:
    params = load_section("reverse_pairs", ReversePairsParams, params_path)
    with Timer() as t:
        result = build_reverse_pairs(params)
    with output_set() as out:
        out.rows(train_path, result.train)
        out.rows(val_path, result.val)
        out.rows(rejected_path, result.rejected)
        write_stats(stats_path, {**result.stats, "seconds": t.seconds}, out)
    click.echo(f"reverse_pairs: {result.stats['read']} read, {len(result.train)} train, {len(result.val)} val, "
               f"{len(result.rejected)} rejected, {t.seconds}s")


if __name__ == "__main__":
    main()
