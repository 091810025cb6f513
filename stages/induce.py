"""Stage induce: the reversed model writes k candidate instructions per source text (resumable via cache/induce/)."""

from __future__ import annotations

from pathlib import Path

import click

from saferinstruct.induce import InduceParams, induce, inducer_role
from saferinstruct.io import output_set, read_rows
from saferinstruct.llm.roles import check_role
from saferinstruct.params import load_section
from saferinstruct.records import SourceText
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--sources", "sources_path", default="data/sources.jsonl", show_default=True)
@click.option("--model", "model_dir", default="models/reverse", show_default=True, help="The reversed model.")
@click.option("--out", "out_path", default="data/induced.jsonl", show_default=True)
@click.option("--rejected", "rejected_path", default="data/rejected/induce.jsonl", show_default=True)
@click.option("--cache", "cache_dir", default="cache/induce", show_default=True, help="Call cache (persistent).")
@click.option("--stats", "stats_path", default="stats/induce.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@clean_errors
def main(sources_path: str, model_dir: str, out_path: str, rejected_path: str, cache_dir: str, stats_path: str,
         params_path: str, progress: bool) -> None:
    params = load_section("induce", InduceParams, params_path)
    check_role(inducer_role(params), "induce", model_dir)  # a misspelled backend or option fails before any work
    sources = read_rows(sources_path, SourceText)
    if params.model is None and not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: reversed model not found (run the train_reverse stage first)")
    with Timer() as t:
        result = induce(sources, model_dir, params, cache_dir, progress=progress)
    with output_set() as out:
        out.rows(out_path, result.rows)
        out.rows(rejected_path, result.rejected)
        write_stats(stats_path, {**result.stats, "seconds": t.seconds}, out)
    click.echo(f"induce: {len(result.rows)} candidates for {result.stats['sources_used']} texts "
               f"({result.stats['calls']} generated, {result.stats['cache_hits']} cached, {t.seconds}s)")


if __name__ == "__main__":
    main()
