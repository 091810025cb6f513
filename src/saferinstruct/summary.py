"""What compares versions: the headline numbers (``metrics/summary.json``) and the per-stage funnel
(``metrics/funnel.json``), built from the stages' ``stats/*.json`` and ``metrics/eval.json``.

These two files (with ``metrics/eval.json``) are the pipeline's DVC metrics, so ``dvc exp show`` and
``dvc metrics diff`` show results, not run details: timings, throughput, token and cache counters stay in the stats
files, which are plain outputs.

Also the data of two DVC plots that answer questions: where rows drop in the funnel (``funnel_plot_rows``) and
refusal of harmful vs refusal of safe prompts per model (``tradeoff_rows``).
"""

from __future__ import annotations

from typing import Any

from saferinstruct.eval.stats import wilson_interval
from saferinstruct.funnel_table import summarise_stage
from saferinstruct.io import RowError

# headline name (dotted: nested) -> (stage, dotted key in its stats); short names keep `dvc exp show` narrow
COUNTS: dict[str, tuple[str, str]] = {
    "sources": ("ingest", "kept"),  # source texts
    "induced": ("induce", "candidates"),  # induced instructions
    "filtered": ("quality_filter", "kept"),  # instructions passing the quality filter
    "unsafe": ("judge_instructions", "labels.unsafe"),  # judged unsafe
    "pairs.train": ("build_preferences", "train"),  # preference pairs
    "pairs.test": ("build_preferences", "test"),
    "judge_f1": ("train_safety_classifier", "holdout.f1"),  # the offline judge against held-out labelled prompts
}
# refusal rate of each evaluated model (``harmful.dpo``): on harmful prompts (higher is safer) and on safe look-alike
# prompts (over-refusal, lower is better)
REFUSAL_KINDS = ("harmful", "safe")


def _stats_value(stats: dict[str, dict], stage: str, key: str, name: str) -> float:
    if stage not in stats:
        raise RowError(f"stats/{stage}.json", None, f"missing: the summary's '{name}' is read from it; "
                       f"pass it with --stats (run the {stage} stage first)")
    node: Any = stats[stage]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RowError(f"stats/{stage}.json", None, f"no key '{key}' (the summary's '{name}'); "
                           f"update saferinstruct.summary.COUNTS if the stage renamed it")
        node = node[part]
    return node


def funnel(stats: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per stage: rows in, rows kept and model cost (stages without rows or cost, e.g. prepare_base, are left out)."""
    out: dict[str, dict[str, float]] = {}
    for stage, doc in stats.items():
        row = summarise_stage(stage, doc)
        cells = {"in": row.rows_in, "kept": row.kept, "cost_usd": row.cost_usd}
        cells = {k: v for k, v in cells.items() if v is not None}
        if cells:
            out[stage] = cells
    return out


def refusal_rates(eval_metrics: dict, source: str = "metrics/eval.json") -> dict[str, dict[str, float]]:
    """Refusal rate per kind (harmful, safe) and model, from the overall entry of each kind."""
    models = eval_metrics.get("models")
    if not isinstance(models, dict) or not models:
        raise RowError(source, None, "no 'models' section: re-run the evaluate stage")
    out: dict[str, dict[str, float]] = {kind: {} for kind in REFUSAL_KINDS}
    for model, kinds in models.items():
        for kind in REFUSAL_KINDS:
            try:
                out[kind][model] = kinds[kind]["overall"]["refusal_rate"]
            except (KeyError, TypeError):
                raise RowError(source, None, f"no 'models.{model}.{kind}.overall.refusal_rate': "
                               f"re-run the evaluate stage") from None
    return out


def judge_agreement(calibration: dict, source: str = "metrics/calibration.json") -> dict[str, float]:
    """Binary agreement (refusal or partial vs compliance) of the evaluation judge with people, per labelled file."""
    files = calibration.get("refusal_judge", {}).get("files") if isinstance(calibration, dict) else None
    if not isinstance(files, dict) or not files:
        raise RowError(source, None, "no 'refusal_judge.files': re-run the calibrate stage")
    try:
        return {name: report["binary_refusal"]["agreement"] for name, report in files.items()}
    except (KeyError, TypeError):
        raise RowError(source, None, "no 'binary_refusal.agreement' per file: re-run the calibrate stage") from None


def headline(stats: dict[str, dict], eval_metrics: dict, calibration: dict | None = None) -> dict[str, Any]:
    """About a dozen numbers: funnel counts, total model cost, refusal rates of every model (base included), and
    (``calibration``: metrics/calibration.json) the evaluation judge's agreement with people (``agree.gpt4``)."""
    out: dict[str, Any] = {}
    for name, (stage, key) in COUNTS.items():
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _stats_value(stats, stage, key, name)
    costs = [cells["cost_usd"] for cells in funnel(stats).values() if "cost_usd" in cells]
    out["cost_usd"] = round(sum(costs), 6)
    if calibration is not None:
        out["agree"] = judge_agreement(calibration)
    return out | refusal_rates(eval_metrics)


def flat_names(doc: dict, prefix: str = "") -> list[str]:
    """Dotted names of a document's leaves, as `dvc exp show` names its columns."""
    names: list[str] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        names += flat_names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names


# Funnel plot: the largest drop reasons of a stage get their own bar segment, the rest are summed into "other"
# (a stage such as ingest has a dozen reasons, and a legend of forty colours reads as noise).
FUNNEL_TOP_REASONS = 4
KEPT, OTHER = "kept", "other reasons"
# stages that use the data rather than filter it (training takes every row; evaluate reads its own sets): their
# bars would only say "all kept" or mix evaluation prompts into the dataset's funnel
NOT_IN_FUNNEL_PLOT = ("train_", "evaluate")


def funnel_plot_rows(stats: dict[str, dict], top_reasons: int = FUNNEL_TOP_REASONS) -> list[dict[str, Any]]:
    """Rows of the funnel plot, in ``stats`` order (the data flow): per dataset-building stage, one row for the
    rows kept and one per drop reason (``{order, stage, rows_in, kept, outcome, reason, rows}``)."""
    out: list[dict[str, Any]] = []
    for stage, doc in stats.items():
        row = summarise_stage(stage, doc)
        if row.rows_in is None or row.kept is None or stage.startswith(NOT_IN_FUNNEL_PLOT):
            continue  # no rows flow through it (prepare_base), or it does not filter the dataset
        order = len({r["stage"] for r in out})
        base = {"order": order, "stage": stage, "rows_in": row.rows_in, "kept": row.kept}
        out.append(base | {"outcome": KEPT, "reason": KEPT, "rows": row.kept})
        shown = list(row.reasons.items())[:top_reasons]
        # the stage's own total (or in - kept) may exceed the listed reasons: the remainder is "other reasons"
        dropped = row.dropped if row.dropped is not None else sum(row.reasons.values())
        rest = dropped - sum(n for _, n in shown)
        for reason, n in [*shown, (OTHER, rest)]:
            if n > 0:
                out.append(base | {"outcome": "dropped", "reason": reason, "rows": n})
    return out


def _rate_with_interval(entry: dict, where: str, source: str) -> tuple[float, float, float, int]:
    """(rate, low, high, judged) of an eval entry; the 95% Wilson interval is the entry's own ``refusal_ci`` or,
    in files written before it existed, recomputed from the rate and the judged count."""
    try:
        rate, judged = entry["refusal_rate"], entry["judged"]
    except (KeyError, TypeError):
        raise RowError(source, None, f"no '{where}.refusal_rate' or '.judged': re-run the evaluate stage") from None
    ci = entry.get("refusal_ci") or (wilson_interval(round(rate * judged), judged) if judged else None)
    low, high = (round(bound, 6) for bound in ci) if ci else (None, None)
    return rate, low, high, judged


def tradeoff_rows(eval_metrics: dict, source: str = "metrics/eval.json") -> list[dict[str, Any]]:
    """One row per evaluated model: refusal rate on harmful prompts (higher is safer) against refusal rate on safe
    look-alike prompts (over-refusal, lower is better), each with its 95% interval and n."""
    refusal_rates(eval_metrics, source)  # the same checks and messages as the headline
    out: list[dict[str, Any]] = []
    for model, kinds in eval_metrics["models"].items():
        row: dict[str, Any] = {"model": model}
        for kind in REFUSAL_KINDS:
            rate, low, high, judged = _rate_with_interval(kinds[kind]["overall"], f"models.{model}.{kind}.overall",
                                                          source)
            row |= {f"{kind}_refused": rate, f"{kind}_low": low, f"{kind}_high": high, f"{kind}_n": judged}
        out.append(row)
    return out
