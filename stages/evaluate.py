"""Stage evaluate: base / SFT / DPO answer held-out harmful and safe look-alike prompts; the judge labels each answer;
metrics/eval.json (DVC metrics), plots/eval/*.json (DVC plots) and every judged answer are written."""

from __future__ import annotations

import os

import click

from saferinstruct.eval.harness import EvalFiles, EvaluateParams, run_evaluation
from saferinstruct.io import atomic_dir, output_set, read_rows, write_json
from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.params import load_section
from saferinstruct.records import PreferencePair
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--models-dir", default="models", show_default=True, help="Holds base/, sft/, dpo/.")
@click.option("--advbench", default="data/raw/eval/advbench_harmful_behaviors.csv", show_default=True)
@click.option("--safer-instruct-test", default="data/raw/eval/safer_instruct_test_set.csv", show_default=True)
@click.option("--xstest", default="data/raw/eval/xstest_prompts_dev.csv", show_default=True)
@click.option("--donotanswer", default="data/raw/eval/donotanswer", show_default=True,
              help="Do-Not-Answer's risk-area files; only their fixed evaluation half is used.")
@click.option("--alpaca-val", default="data/raw/eval/alpaca_harmless_instructions_val.json", show_default=True,
              help="Ordinary instructions: refusing them is over-refusal.")
@click.option("--capability-reference", default="data/raw/capability/alpaca_libre_reference.jsonl",
              show_default=True, help="Reference answers no stage trains on, for the capability NLL.")
@click.option("--train", "train_path", default="data/pairs/train.jsonl", show_default=True,
              help="Training prompts: evaluation prompts sharing their normalised text are dropped.")
@click.option("--judge-prompt", default="prompts/eval_refusal.md", show_default=True, help="Used by LLM judges.")
@click.option("--pairwise-prompt", default="prompts/eval_pairwise.md", show_default=True,
              help="LLM judges only: which of two answers is better (the win rate against base).")
@click.option("--cache", "cache_dir", default="cache/evaluate", show_default=True)
@click.option("--responses", default="data/eval/responses.jsonl", show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True)
@click.option("--plots", "plots_dir", default="plots/eval", show_default=True)
@click.option("--stats", "stats_path", default="stats/evaluate.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@clean_errors
def main(models_dir, advbench, safer_instruct_test, xstest, donotanswer, alpaca_val, capability_reference, train_path,
         judge_prompt, pairwise_prompt, cache_dir, responses, metrics_path, plots_dir, stats_path, params_path,
         progress) -> None:
    params = load_section("evaluate", EvaluateParams, params_path)
    train_prompts = [row.prompt for row in read_rows(train_path, PreferencePair, allow_empty=True)]
    files = EvalFiles(advbench, safer_instruct_test, xstest, judge_prompt, donotanswer=donotanswer,
                      alpaca_val=alpaca_val, capability_reference=capability_reference,
                      pairwise_prompt=pairwise_prompt)
    with Timer() as t:
        run = run_evaluation(params, models_dir, files, train_prompts, cache_dir,
                             secrets=secrets_for(params.judge.options, os.environ), progress=progress)
    # plots/eval is replaced as a whole (it is a persisted DVC output: DVC no longer empties it before a run, and a
    # plot this run no longer writes must not linger); a failure anywhere leaves every old output in place
    with output_set() as out, atomic_dir(plots_dir) as plots:
        out.rows(responses, run.results)
        for name, rows in run.plots.items():
            write_json(plots / f"{name}.json", rows)
        out.json(metrics_path, run.metrics)
        write_stats(stats_path, {**run.stats, "seconds": t.seconds}, out)
    click.echo(f"evaluate: {summary_line(run.metrics)}, {t.seconds}s")


def summary_line(metrics: dict) -> str:
    """``refused harmful / safe: base 0.127 / 0.017; sft ... (n=346 / 180)``: every model on the stage's one line."""
    parts = []
    for model, kinds in metrics["models"].items():
        harmful, safe = kinds["harmful"]["overall"], kinds["safe"]["overall"]
        parts.append(f"{model} {_rate(harmful['refusal_rate'])} / {_rate(safe['refusal_rate'])}")
    first = next(iter(metrics["models"].values()), None)
    sizes = f" (n={first['harmful']['overall']['n']} / {first['safe']['overall']['n']})" if first else ""
    return f"refused harmful / safe: {'; '.join(parts)}{sizes}"


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.3f}"  # None: nothing judged in that set


if __name__ == "__main__":
    main()
