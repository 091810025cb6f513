"""Stage quality_filter: heuristic checks, exact and near duplicates; every dropped row is kept with its reason."""

from __future__ import annotations

import click

from saferinstruct.filters.quality import QualityFilterParams, quality_filter
from saferinstruct.io import output_set, read_rows
from saferinstruct.params import load_section
from saferinstruct.records import InducedInstruction
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--induced", "induced_path", default="data/induced.jsonl", show_default=True)
@click.option("--out", "out_path", default="data/filtered.jsonl", show_default=True)
@click.option("--rejected", "rejected_path", default="data/rejected/quality_filter.jsonl", show_default=True)
@click.option("--stats", "stats_path", default="stats/quality_filter.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(induced_path: str, out_path: str, rejected_path: str, stats_path: str, params_path: str) -> None:
    params = load_section("quality_filter", QualityFilterParams, params_path)
    rows = read_rows(induced_path, InducedInstruction, allow_empty=True)
    with Timer() as t:
        result = quality_filter(rows, params)
    with output_set() as out:
        out.rows(out_path, result.kept)
        out.rows(rejected_path, result.rejected)
        write_stats(stats_path, {**result.stats(), "seconds": t.seconds}, out)
    reasons = ", ".join(f"{r} {n}" for r, n in result.by_reason.most_common())
    click.echo(f"quality_filter: kept {len(result.kept)} of {len(rows)} ({reasons or 'none rejected'}), {t.seconds}s")


if __name__ == "__main__":
    main()
