"""What compares versions: the headline numbers (``metrics/summary.json``) and the per-stage funnel
(``metrics/funnel.json``), built from the stages' ``stats/*.json`` and ``metrics/eval.json``.

These two files (with ``metrics/eval.json``) are the pipeline's DVC metrics, so ``dvc exp show`` and
``dvc metrics diff`` show results, not run details: timings, throughput, token and cache counters stay in the stats
files, which are plain outputs.
"""

from __future__ import annotations

from typing import Any

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


def headline(stats: dict[str, dict], eval_metrics: dict) -> dict[str, Any]:
    """About a dozen numbers: funnel counts, total model cost, refusal rates of every model (base included)."""
    out: dict[str, Any] = {}
    for name, (stage, key) in COUNTS.items():
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _stats_value(stats, stage, key, name)
    costs = [cells["cost_usd"] for cells in funnel(stats).values() if "cost_usd" in cells]
    out["cost_usd"] = round(sum(costs), 6)
    return out | refusal_rates(eval_metrics)


def flat_names(doc: dict, prefix: str = "") -> list[str]:
    """Dotted names of a document's leaves, as `dvc exp show` names its columns."""
    names: list[str] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        names += flat_names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names
