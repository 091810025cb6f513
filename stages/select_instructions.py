"""Stage select_instructions: keep the instructions judged unsafe to answer (thresholds only: no model call)."""

from __future__ import annotations

import click

from saferinstruct.io import output_set, read_rows
from saferinstruct.params import load_section
from saferinstruct.records import InducedInstruction, Verdict
from saferinstruct.select_instructions import SelectParams, select_instructions
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--filtered", "filtered_path", default="data/filtered.jsonl", show_default=True)
@click.option("--verdicts", "verdicts_path", default="data/instruction_verdicts.jsonl", show_default=True)
@click.option("--out", "out_path", default="data/instructions.jsonl", show_default=True)
@click.option("--rejected", "rejected_path", default="data/rejected/select_instructions.jsonl", show_default=True)
@click.option("--stats", "stats_path", default="stats/select_instructions.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(filtered_path: str, verdicts_path: str, out_path: str, rejected_path: str, stats_path: str,
         params_path: str) -> None:
    params = load_section("select_instructions", SelectParams, params_path)
    instructions = read_rows(filtered_path, InducedInstruction)
    verdicts = read_rows(verdicts_path, Verdict, allow_empty=True)
    with Timer() as t:
        selection = select_instructions(instructions, verdicts, params)
    with output_set() as out:
        out.rows(out_path, selection.kept)
        out.rows(rejected_path, selection.rejected)
        write_stats(stats_path, selection.stats, out)
    click.echo(f"select_instructions: kept {len(selection.kept)} of {len(instructions)} {selection.stats['dropped']}, "
               f"{t.seconds}s")


if __name__ == "__main__":
    main()
