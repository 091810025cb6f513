"""Stage self_evaluate: the judge rates each expert response (params `self_evaluate`); only those judged safe stay.
By default (``backend: expert``) the judge is the expert itself (params `respond`), or the offline safe_response rule
when the expert is the embedded local model (see saferinstruct.judging.factory.self_eval_spec)."""

from __future__ import annotations

import os

import click

from saferinstruct.io import output_set, read_rows
from saferinstruct.judging import safe_response  # noqa: F401 - registers the offline `safe_response` judge
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.judging.factory import EXPERT, SelfEvalSpec, build_judge, check_judge, self_eval_spec
from saferinstruct.judging.judge_rows import self_evaluate
from saferinstruct.llm.cache import create_cache_dir
from saferinstruct.params import load_section
from saferinstruct.records import ExpertResponse
from saferinstruct.respond import ExpertParams
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--responses", "responses_path", default="data/responses.jsonl", show_default=True)
@click.option("--prompt", "prompt_path", default="prompts/self_eval.md", show_default=True,
              help="Prompt file for an LLM judge.")
@click.option("--out", "out_path", default="data/response_verdicts.jsonl", show_default=True)
@click.option("--cache", "cache_dir", default="cache/self_evaluate", show_default=True,
              help="Call cache (persistent).")
@click.option("--stats", "stats_path", default="stats/self_evaluate.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(responses_path: str, prompt_path: str, out_path: str, cache_dir: str, stats_path: str,
         params_path: str) -> None:
    spec = load_section("self_evaluate", SelfEvalSpec, params_path)
    if spec.backend == EXPERT:  # the expert judges itself: its role is params `respond`
        spec = self_eval_spec(spec, load_section("respond", ExpertParams, params_path))
    check_judge(spec, "self_evaluate")  # a misspelled backend or option fails before any work
    responses = read_rows(responses_path, ExpertResponse, allow_empty=True)
    create_cache_dir(cache_dir)  # a DVC output even when an offline judge makes no call
    judge = build_judge(spec, prompt_path, cache_dir, secrets_for(spec.options, os.environ), section="self_evaluate")
    try:
        with Timer() as t:
            result = self_evaluate(responses, judge, max_error_fraction=spec.max_error_fraction,
                                   threshold=spec.threshold)
    finally:
        judge.close()
    with output_set() as out:
        out.rows(out_path, result.verdicts)
        write_stats(stats_path, {**result.stats, "seconds": t.seconds}, out)
    click.echo(f"self_evaluate: kept {len(result.kept)} of {len(responses)} {result.stats['dropped']}, {t.seconds}s")


if __name__ == "__main__":
    main()
