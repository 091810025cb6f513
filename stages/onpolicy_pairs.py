"""Stage onpolicy_pairs: the Safer-Instruct preference data -> the pairs training reads, with the policy's own
answers as helpful chosen / safety rejected sides where they fit (params `onpolicy_pairs`; see
saferinstruct.onpolicy_pairs)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from saferinstruct.io import output_set, read_rows
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.onpolicy_pairs import OnPolicyParams, onpolicy_pairs
from saferinstruct.params import load_section
from saferinstruct.records import PreferencePair
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--preferences", "pref_dir", default="data/preferences", show_default=True,
              help="train.jsonl of build_preferences (its test split is held out: nothing trains on it)")
@click.option("--model", "model_dir", default="models/base", show_default=True,
              help="The policy before alignment (used when onpolicy_pairs.model is null and the backend is local).")
@click.option("--out-dir", default="data/pairs", show_default=True, help="train.jsonl")
@click.option("--cache", "cache_dir", default="cache/onpolicy_pairs", show_default=True, help="Call cache.")
@click.option("--stats", "stats_path", default="stats/onpolicy_pairs.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@clean_errors
def main(pref_dir: str, model_dir: str, out_dir: str, cache_dir: str, stats_path: str, params_path: str,
         progress: bool) -> None:
    params = load_section("onpolicy_pairs", OnPolicyParams, params_path)
    splits = {"train": read_rows(Path(pref_dir) / "train.jsonl", PreferencePair, allow_empty=True)}
    with Timer() as t:
        run = onpolicy_pairs(splits, params, cache_dir, model_dir, secrets_for(params.options, os.environ), progress)
    with output_set() as out:
        for name, rows in run.pairs.items():
            out.rows(Path(out_dir) / f"{name}.jsonl", rows)
        write_stats(stats_path, {**run.stats, "seconds": t.seconds}, out)
    click.echo(f"onpolicy_pairs: replaced {run.stats['replaced']}, kept {run.stats['kept_original']} -> {out_dir}, "
               f"{t.seconds}s")


if __name__ == "__main__":
    main()
