"""Stage respond: the expert writes the preferred (safe) response to each selected instruction (params `respond`)."""

from __future__ import annotations

import os

import click

from saferinstruct.respond import ExpertParams, respond
from saferinstruct.io import output_set, read_rows
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.params import load_section
from saferinstruct.records import InducedInstruction
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--instructions", "instructions_path", default="data/instructions.jsonl", show_default=True)
@click.option("--model", "model_dir", default="models/base", show_default=True,
              help="Local expert model (used when respond.model is null and the backend runs a local model).")
@click.option("--prompt", "prompt_path", default="prompts/expert.md", show_default=True)
@click.option("--out", "out_path", default="data/responses.jsonl", show_default=True)
@click.option("--cache", "cache_dir", default="cache/respond", show_default=True, help="Call cache (persistent).")
@click.option("--stats", "stats_path", default="stats/respond.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@clean_errors
def main(instructions_path: str, model_dir: str, prompt_path: str, out_path: str, cache_dir: str, stats_path: str,
         params_path: str, progress: bool) -> None:
    params = load_section("respond", ExpertParams, params_path)
    instructions = read_rows(instructions_path, InducedInstruction, allow_empty=True)
    with Timer() as t:
        run = respond(instructions, prompt_path, params, cache_dir, model_dir, secrets_for(params.options, os.environ),
                      progress)
    with output_set() as out:
        out.rows(out_path, run.rows)
        write_stats(stats_path, {**run.stats, "seconds": t.seconds}, out)
    click.echo(f"respond: {len(run.rows)} responses {run.stats['outcomes']}, {t.seconds}s")


if __name__ == "__main__":
    main()
