"""Stage judge_instructions: a typed verdict per filtered instruction from the configured judge (params
`judge_instructions`)."""

from __future__ import annotations

import os

import click

from saferinstruct.io import output_set, read_rows
from saferinstruct.judging import classifier  # noqa: F401 - registers the offline `embedding_classifier` judge
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.judging.factory import JudgeStageSpec, build_judge
from saferinstruct.judging.judge_rows import judge_instructions
from saferinstruct.llm.cache import create_cache_dir
from saferinstruct.params import load_section
from saferinstruct.records import InducedInstruction
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--filtered", "filtered_path", default="data/filtered.jsonl", show_default=True)
@click.option("--classifier", "classifier_dir", default="models/safety_classifier", show_default=True,
              help="Trained head for the embedding_classifier judge.")
@click.option("--prompt", "prompt_path", default="prompts/judge_instruction.md", show_default=True,
              help="Prompt file for an LLM judge.")
@click.option("--out", "out_path", default="data/instruction_verdicts.jsonl", show_default=True)
@click.option("--cache", "cache_dir", default="cache/judge_instructions", show_default=True,
              help="Call cache (persistent).")
@click.option("--stats", "stats_path", default="stats/judge_instructions.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(filtered_path: str, classifier_dir: str, prompt_path: str, out_path: str, cache_dir: str, stats_path: str,
         params_path: str) -> None:
    spec = load_section("judge_instructions", JudgeStageSpec, params_path)
    rows = read_rows(filtered_path, InducedInstruction)
    create_cache_dir(cache_dir)  # a DVC output even when an offline judge makes no call
    judge = build_judge(spec, prompt_path, cache_dir, secrets_for(spec.options, os.environ), classifier_dir,
                        section="judge_instructions")
    try:
        with Timer() as t:
            verdicts, stats = judge_instructions(rows, judge, spec.max_error_fraction)
    finally:
        judge.close()
    with output_set() as out:
        out.rows(out_path, verdicts)
        write_stats(stats_path, {**stats, "seconds": t.seconds}, out)
    click.echo(f"judge_instructions: {len(verdicts)} verdicts {stats['labels']}, "
               f"{stats['parse_failures']} parse failures, {t.seconds}s")


if __name__ == "__main__":
    main()
