"""Stage calibrate: the judges against people's labels, as DVC metrics (metrics/calibration.json).

The evaluation's refusal judge (params ``evaluate.judge``) on the human-labelled XSTest completions (data/raw/judge),
per file: agreement, binary agreement (refusal or partial vs compliance), Cohen's kappa, per-class precision/recall.
The instruction judge (params ``judge_instructions``) on labelled prompts (XSTest dev labels, AdvBench = unsafe, Alpaca
validation = safe; a seeded sample per source). A judge change shows in ``dvc metrics diff``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from saferinstruct.eval.calibration import (CalibrateParams, calibration_metrics, load_labelled_prompts,
                                             refusal_judge_spec)
from saferinstruct.io import output_set
from saferinstruct.judging import classifier  # noqa: F401 - registers the offline `embedding_classifier` judge
from saferinstruct.judging import refusal  # noqa: F401 - registers the offline `refusal_keywords` judge
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.judging.base import Judge
from saferinstruct.judging.factory import JudgeSpec, JudgeStageSpec, build_judge
from saferinstruct.llm.cache import create_cache_dir
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats

EVALUATE = "evaluate"  # the refusal judge calibrated is the evaluation's: params evaluate.judge


def _refusal_judge(spec: JudgeSpec, prompt: str, cache_dir: str) -> Judge:
    spec = refusal_judge_spec(spec)  # a harm judge is not comparable with refusal labels: the offline one then
    return build_judge(spec, prompt_path=prompt, cache_dir=Path(cache_dir) / "refusal",
                       secrets=secrets_for(spec.options, os.environ), section="evaluate.judge")


def _named(option: str) -> tuple[str, str]:
    """``gpt4=data/raw/judge/x.csv`` -> ("gpt4", path); a bare path is named by its stem (the metrics' key)."""
    name, sep, path = option.partition("=")
    return (name, path) if sep else (Path(option).stem, option)


@click.command()
@click.option("--labelled", "labelled_paths", multiple=True, required=True,
              help="NAME=PATH (or PATH: named by its stem): human-labelled completions (XSTest layout), once per file.")
@click.option("--xstest", default="data/raw/eval/xstest_prompts_dev.csv", show_default=True)
@click.option("--advbench", default="data/raw/eval/advbench_harmful_behaviors.csv", show_default=True)
@click.option("--alpaca-val", default="data/raw/eval/alpaca_harmless_instructions_val.json", show_default=True)
@click.option("--classifier", "classifier_dir", default="models/safety_classifier", show_default=True)
@click.option("--judge-prompt", default="prompts/eval_refusal.md", show_default=True, help="LLM refusal judges.")
@click.option("--instruction-prompt", default="prompts/judge_instruction.md", show_default=True,
              help="LLM instruction judges.")
@click.option("--cache", "cache_dir", default="cache/calibrate", show_default=True, help="LLM judge call caches.")
@click.option("--metrics", "metrics_path", default="metrics/calibration.json", show_default=True)
@click.option("--stats", "stats_path", default="stats/calibrate.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(labelled_paths: tuple[str, ...], xstest: str, advbench: str, alpaca_val: str, classifier_dir: str,
         judge_prompt: str, instruction_prompt: str, cache_dir: str, metrics_path: str, stats_path: str,
         params_path: str) -> None:
    params = load_section("calibrate", CalibrateParams, params_path)
    instruction_spec = load_section("judge_instructions", JudgeStageSpec, params_path)
    prompts = load_labelled_prompts(xstest, advbench, alpaca_val, params.prompts_per_source, params.seed)
    create_cache_dir(cache_dir)  # a DVC output even when offline judges make no call (tagged, so never empty)
    refusal_judge = _refusal_judge(load_section(f"{EVALUATE}.judge", JudgeSpec, params_path), judge_prompt, cache_dir)
    instruction_judge = build_judge(instruction_spec, instruction_prompt, Path(cache_dir) / "instruction",
                                    secrets_for(instruction_spec.options, os.environ), classifier_dir,
                                    section="judge_instructions")
    try:
        with Timer() as t:
            metrics = calibration_metrics(refusal_judge, dict(_named(p) for p in labelled_paths),
                                          instruction_judge, prompts)
    finally:
        refusal_judge.close()
        instruction_judge.close()
    with output_set() as out:  # both files change, or neither does
        out.json(metrics_path, metrics)
        write_stats(stats_path, {"refusal_judge": refusal_judge.stats(),
                                 "instruction_judge": instruction_judge.stats(), "seconds": t.seconds}, out)
    files = metrics["refusal_judge"]["files"]
    click.echo("calibrate: binary agreement " + ", ".join(
        f"{name} {m['binary_refusal']['agreement']:.3f}" for name, m in files.items())
        + f"; instruction judge agreement {metrics['instruction_judge']['agreement']:.3f}, {t.seconds}s")


if __name__ == "__main__":
    main()
