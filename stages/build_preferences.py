"""Stage build_preferences: instructions + safe expert responses + source texts (+ helpful pairs) -> TRL preference
data in data/preferences/{train,test}.jsonl with a data card (README.md) beside it."""

from __future__ import annotations

from pathlib import Path

import click

from saferinstruct.datacard import render
from saferinstruct.io import output_set, read_rows
from saferinstruct.params import load_section
from saferinstruct.preferences import Inputs, PreferenceParams, build_preferences
from saferinstruct.records import ExpertResponse, InducedInstruction, SourceText, Verdict
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--sources", default="data/sources.jsonl", show_default=True)
@click.option("--instructions", default="data/instructions.jsonl", show_default=True)
@click.option("--instruction-verdicts", default="data/instruction_verdicts.jsonl", show_default=True)
@click.option("--responses", default="data/responses.jsonl", show_default=True)
@click.option("--response-verdicts", default="data/response_verdicts.jsonl", show_default=True)
@click.option("--out-dir", default="data/preferences", show_default=True, help="train.jsonl, test.jsonl, README.md")
@click.option("--rejected", "rejected_path", default="data/rejected/build_preferences.jsonl", show_default=True)
@click.option("--stats", "stats_path", default="stats/build_preferences.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(sources: str, instructions: str, instruction_verdicts: str, responses: str, response_verdicts: str,
         out_dir: str, rejected_path: str, stats_path: str, params_path: str) -> None:
    params = load_section("build_preferences", PreferenceParams, params_path)
    data = Inputs(read_rows(sources, SourceText), read_rows(instructions, InducedInstruction, allow_empty=True),
                  read_rows(instruction_verdicts, Verdict, allow_empty=True),
                  read_rows(responses, ExpertResponse, allow_empty=True),
                  read_rows(response_verdicts, Verdict, allow_empty=True))
    with Timer() as t:
        result = build_preferences(params, data)
    folder = Path(out_dir)
    with output_set() as out:
        out.rows(folder / "train.jsonl", result.train)
        out.rows(folder / "test.jsonl", result.test)
        out.text(folder / "README.md", render(result.stats, params, result.models))
        out.rows(rejected_path, result.rejected)
        write_stats(stats_path, {**result.stats, "seconds": t.seconds}, out)
    click.echo(f"build_preferences: {len(result.train)} train, {len(result.test)} test pairs -> {out_dir}, "
               f"{t.seconds}s")


if __name__ == "__main__":
    main()
