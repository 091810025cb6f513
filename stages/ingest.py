"""Stage ingest: raw safety corpora -> data/sources.jsonl (kept) + data/rejected/ingest.jsonl (with reasons)."""

from __future__ import annotations

import click

from saferinstruct.io import output_set
from saferinstruct.params import load_section
from saferinstruct.sources.ingest import IngestParams, ingest
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--out", "out_path", default="data/sources.jsonl", show_default=True)
@click.option("--rejected", "rejected_path", default="data/rejected/ingest.jsonl", show_default=True)
@click.option("--stats", "stats_path", default="stats/ingest.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(out_path: str, rejected_path: str, stats_path: str, params_path: str) -> None:
    params = load_section("ingest", IngestParams, params_path)
    with Timer() as t:
        result = ingest(params)
    with output_set() as out:
        out.rows(out_path, result.kept)
        out.rows(rejected_path, result.rejected)
        write_stats(stats_path, {**result.stats, "seconds": t.seconds}, out)
    click.echo(f"ingest: {result.stats['read']} read, {result.stats['kept']} kept, "
               f"{len(result.rejected)} rejected -> {out_path}, {t.seconds}s")


if __name__ == "__main__":
    main()
