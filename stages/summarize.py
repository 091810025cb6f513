"""Stage summarize: the headline numbers (metrics/summary.json) and the per-stage funnel (metrics/funnel.json) from
every stage's stats and the evaluation metrics: what `dvc exp show` / `make compare` put side by side; and the data
of the funnel and refusal trade-off plots (plots/funnel.json, plots/tradeoff.json) that `dvc plots show` draws."""

from __future__ import annotations

from pathlib import Path

import click

from saferinstruct.io import RowError, output_set, read_json
from saferinstruct.stageutil import Timer, clean_errors
from saferinstruct.summary import flat_names, funnel, funnel_plot_rows, headline, tradeoff_rows


def _read_stats(paths: tuple[str, ...]) -> dict[str, dict]:
    """Stage name (the file's stem) -> its stats document."""
    out: dict[str, dict] = {}
    for path in paths:
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise RowError(path, None, "a stats file holds one JSON object; re-run its stage")
        out[Path(path).stem] = doc
    return out


@click.command()
@click.option("--stats", "stats_paths", multiple=True, required=True, help="stats/<stage>.json, once per stage.")
@click.option("--eval-metrics", default="metrics/eval.json", show_default=True)
@click.option("--calibration", default=None, help="metrics/calibration.json: the judge's agreement with people.")
@click.option("--summary", "summary_path", default="metrics/summary.json", show_default=True)
@click.option("--funnel", "funnel_path", default="metrics/funnel.json", show_default=True)
@click.option("--funnel-plot", default="plots/funnel.json", show_default=True,
              help="Plot data: rows kept and dropped per reason, per stage.")
@click.option("--tradeoff-plot", default="plots/tradeoff.json", show_default=True,
              help="Plot data: refusal of harmful vs safe prompts per model, with 95% intervals.")
@clean_errors
def main(stats_paths: tuple[str, ...], eval_metrics: str, calibration: str | None, summary_path: str,
         funnel_path: str, funnel_plot: str, tradeoff_plot: str) -> None:
    stats = _read_stats(stats_paths)
    evaluation = read_json(eval_metrics)
    if not isinstance(evaluation, dict):
        raise RowError(eval_metrics, None, "expected the evaluate stage's JSON object; re-run evaluate")
    agreement = read_json(calibration) if calibration else None
    with Timer() as t:
        summary, stages = headline(stats, evaluation, agreement), funnel(stats)
    with output_set() as out:  # all files change together, or none
        out.json(summary_path, summary)
        out.json(funnel_path, stages)
        out.json(funnel_plot, funnel_plot_rows(stats))
        out.json(tradeoff_plot, tradeoff_rows(evaluation, eval_metrics))
    click.echo(f"summarize: {len(flat_names(summary))} headline numbers, funnel of {len(stages)} stages, {t.seconds}s")


if __name__ == "__main__":
    main()
