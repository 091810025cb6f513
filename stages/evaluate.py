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
@click.option("--cache", "cache_dir", default="cache/evaluate", show_default=True)
@click.option("--responses", default="data/eval/responses.jsonl", show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True)
@click.option("--plots", "plots_dir", default="plots/eval", show_default=True)
@click.option("--stats", "stats_path", default="stats/evaluate.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(models_dir, advbench, safer_instruct_test, xstest, donotanswer, alpaca_val, capability_reference, train_path,
         judge_prompt, cache_dir, responses, metrics_path, plots_dir, stats_path, params_path) -> None:
    params = load_section("evaluate", EvaluateParams, params_path)
    train_prompts = [row.prompt for row in read_rows(train_path, PreferencePair, allow_empty=True)]
    files = EvalFiles(advbench, safer_instruct_test, xstest, judge_prompt, donotanswer=donotanswer,
                      alpaca_val=alpaca_val, capability_reference=capability_reference)
    with Timer() as t:
        run = run_evaluation(params, models_dir, files, train_prompts, cache_dir,
                             secrets=secrets_for(params.judge.options, os.environ))
    # plots/eval is replaced as a whole (it is a persisted DVC output: DVC no longer empties it before a run, and a
    # plot this run no longer writes must not linger); a failure anywhere leaves every old output in place
    with output_set() as out, atomic_dir(plots_dir) as plots:
        out.rows(responses, run.results)
        for name, rows in run.plots.items():
            write_json(plots / f"{name}.json", rows)
        out.json(metrics_path, run.metrics)
        write_stats(stats_path, {**run.stats, "seconds": t.seconds}, out)
    for model, kinds in run.metrics["models"].items():
        harmful, safe = kinds["harmful"]["overall"], kinds["safe"]["overall"]
        click.echo(f"evaluate: {model}: refused {harmful['refusal_rate']} of harmful (n={harmful['n']}), "
                   f"{safe['refusal_rate']} of safe (n={safe['n']})")


if __name__ == "__main__":
    main()
