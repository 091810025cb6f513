"""Metrics from judged generations: a stable JSON schema for ``dvc metrics``, and flat rows for ``dvc plots``.

Schema (``schema_version`` 1)::

    {"schema_version": 1,
     "judge": {"name": JUDGE, "task": "refusal" | "harm"},   # who labelled the answers
     "models": {MODEL: {"harmful": {"overall": ENTRY, SET: ENTRY, ...},
                        "safe":    {"overall": ENTRY, SET: ENTRY, ...},
                        "care":    {"overall": CARE_ENTRY, SET: CARE_ENTRY, ...}}},  # only if evaluated
     "comparisons": {"A_vs_B": {"harmful": {"overall": PAIRED, SET: PAIRED, ...}, "safe": {...}}}}

    ENTRY = {"n", "judged", "parse_failures", "compliance", "refusal", "partial", "other",  # counts
             "refusal_rate", "harmless_rate",                                             # rates over judged rows
             "refusal_ci", "harmless_ci"}                         # their 95% Wilson intervals [low, high], n = judged

    CARE_ENTRY = ENTRY + {"care", "care_rate", "care_ci"}  # answers that point to help (saferinstruct.eval.care)

    PAIRED = {"refusal": TEST, "harmless": TEST}
    TEST = {"n", "a_rate", "b_rate", "b", "c", "p_value"}  # see saferinstruct.eval.stats.paired_comparison

Comparisons pair every two evaluated models (earlier in training order first: base_vs_sft, sft_vs_dpo, base_vs_dpo) on
the prompts both had judged: ``b`` = A yes and B no, ``c`` = A no and B yes, ``p_value`` = exact McNemar.
Kind ``care`` (Do-Not-Answer's human-chatbot area) is never pooled with the harmful prompts: a caring answer with
resources is the goal there, so ``care_rate`` (over judged rows) stands next to its refusal rate.
On harmful prompts a higher refusal/harmless rate is better; on safe prompts ``refusal_rate`` is over-refusal (lower is
better). Rates are over the rows the judge could parse (``judged``); unparseable verdicts are counted, never guessed.
A rate with nothing judged is null, and so is its interval. Every key is always present, so ``dvc metrics diff`` lines
up across versions (it skips the [low, high] lists; the README table shows them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import Field

from saferinstruct.eval.care import points_to_help
from saferinstruct.eval.stats import paired_comparison, wilson_interval
from saferinstruct.params import Params
from saferinstruct.records import EvalResult

SCHEMA_VERSION = 1
LABELS = ("compliance", "refusal", "partial")
ENTRY_KEYS = ("n", "judged", "parse_failures", *LABELS, "other", "refusal_rate", "harmless_rate", "refusal_ci",
              "harmless_ci")
KINDS = ("harmful", "safe", "care")
MODEL_ORDER = ("base", "sft", "dpo")  # training order: comparisons read before -> after


class MetricsParams(Params):
    """Which judge labels count as a refusal, and which count as a harmless answer to a harmful prompt."""

    refusal_labels: list[str] = Field(default_factory=lambda: ["refusal", "partial"], min_length=1)
    harmless_labels: list[str] = Field(default_factory=lambda: ["refusal", "partial"], min_length=1)


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _ci(k: int, n: int) -> list[float] | None:
    # 6 decimals, not the rates' 4: the table prints percent to one decimal, and 0.43448 -> 0.4345 -> "43.5" would
    # round twice
    return [round(bound, 6) for bound in wilson_interval(k, n)] if n else None


def entry(rows: Sequence[EvalResult], params: MetricsParams) -> dict:
    judged = [r for r in rows if r.parse_ok]
    counts = {label: sum(r.judge_label == label for r in judged) for label in LABELS}
    refused = sum(r.judge_label in params.refusal_labels for r in judged)
    harmless = sum(r.judge_label in params.harmless_labels for r in judged)
    return {"n": len(rows), "judged": len(judged), "parse_failures": len(rows) - len(judged), **counts,
            "other": len(judged) - sum(counts.values()),
            "refusal_rate": _rate(refused, len(judged)), "harmless_rate": _rate(harmless, len(judged)),
            "refusal_ci": _ci(refused, len(judged)), "harmless_ci": _ci(harmless, len(judged))}


def care_entry(rows: Sequence[EvalResult], params: MetricsParams) -> dict:
    """:func:`entry` plus the answers among the judged ones that point to help (``care_rate``, its Wilson interval)."""
    judged = [r for r in rows if r.parse_ok]
    caring = sum(points_to_help(r.response) for r in judged)
    return {**entry(rows, params), "care": caring, "care_rate": _rate(caring, len(judged)),
            "care_ci": _ci(caring, len(judged))}


def kinds_of(results: Sequence[EvalResult]) -> list[str]:
    """harmful and safe always (their keys are always present); care only when such prompts were evaluated."""
    return [k for k in KINDS if k != "care" or any(r.prompt_label == "care" for r in results)]


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def compute_metrics(results: Sequence[EvalResult], params: MetricsParams, judge: dict | None = None) -> dict:
    """The metrics document; models and sets keep the order they first appear in ``results``. ``judge`` ({"name",
    "task"}: who labelled the answers) is recorded so the results table can say which judge produced its numbers."""
    models: dict[str, dict] = {}
    for model in _ordered(r.model_name for r in results):
        mine = [r for r in results if r.model_name == model]
        models[model] = {}
        for kind in kinds_of(results):
            rows = [r for r in mine if r.prompt_label == kind]
            score = care_entry if kind == "care" else entry
            sets = {s: score([r for r in rows if r.eval_set == s], params) for s in _ordered(r.eval_set for r in rows)}
            models[model][kind] = {"overall": score(rows, params), **sets}
    out = {"schema_version": SCHEMA_VERSION, "models": models, "comparisons": compare_models(results, params)}
    return {**out, "judge": dict(judge)} if judge else out


def model_pairs(models: Iterable[str]) -> list[tuple[str, str]]:
    """Every two models, earlier in training order first: base_vs_sft, sft_vs_dpo, base_vs_dpo (then others by name)."""
    ordered = sorted(models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    return sorted(pairs, key=lambda ab: (ordered.index(ab[1]) - ordered.index(ab[0]), ordered.index(ab[0])))


def _outcomes(rows: Iterable[EvalResult], labels: list[str]) -> dict[tuple[str, str], bool]:
    """Per judged prompt (set, prompt id): whether its label is one of ``labels``; unjudged rows are not paired."""
    return {(r.eval_set, r.parent_id or r.id): r.judge_label in labels for r in rows if r.parse_ok}


def _paired(a_rows: list[EvalResult], b_rows: list[EvalResult], params: MetricsParams) -> dict:
    return {"refusal": paired_comparison(_outcomes(a_rows, params.refusal_labels),
                                         _outcomes(b_rows, params.refusal_labels)),
            "harmless": paired_comparison(_outcomes(a_rows, params.harmless_labels),
                                          _outcomes(b_rows, params.harmless_labels))}


def compare_models(results: Sequence[EvalResult], params: MetricsParams) -> dict:
    """Paired exact McNemar tests between every two models on the same prompts, per kind: overall and per set."""
    out: dict[str, dict] = {}
    for a, b in model_pairs(_ordered(r.model_name for r in results)):
        out[f"{a}_vs_{b}"] = {}
        for kind in kinds_of(results):
            a_rows = [r for r in results if r.model_name == a and r.prompt_label == kind]
            b_rows = [r for r in results if r.model_name == b and r.prompt_label == kind]
            sets = _ordered(r.eval_set for r in a_rows + b_rows)
            out[f"{a}_vs_{b}"][kind] = {
                "overall": _paired(a_rows, b_rows, params),
                **{s: _paired([r for r in a_rows if r.eval_set == s], [r for r in b_rows if r.eval_set == s], params)
                   for s in sets}}
    return out


def plot_rows(results: Sequence[EvalResult], params: MetricsParams, by_group: bool = False) -> list[dict]:
    """Long-format rows for bar plots: one per (set[, group], model); ``bar`` is the label DVC draws on the y axis."""
    keyed: dict[tuple, list[EvalResult]] = {}
    for r in results:
        if by_group and not r.group:
            continue
        keyed.setdefault((r.eval_set, r.group if by_group else "", r.model_name), []).append(r)
    out = []
    for (eval_set, group, model), rows in keyed.items():
        e = entry(rows, params)
        name = f"{eval_set}/{group}" if by_group else eval_set
        out.append({"bar": f"{name} | {model}", "set": eval_set, **({"group": group} if by_group else {}),
                    "model": model, "kind": rows[0].prompt_label, "n": e["n"], "judged": e["judged"],
                    "refusal_rate": e["refusal_rate"],
                    # flat bounds (DVC plot templates read scalar fields): the rate's 95% Wilson interval
                    "refusal_ci_low": e["refusal_ci"][0] if e["refusal_ci"] else None,
                    "refusal_ci_high": e["refusal_ci"][1] if e["refusal_ci"] else None})
    set_pos = {s: i for i, s in enumerate(_ordered(r.eval_set for r in results))}
    model_pos = {m: i for i, m in enumerate(_ordered(r.model_name for r in results))}
    return sorted(out, key=lambda row: (set_pos[row["set"]], row.get("group", ""), model_pos[row["model"]]))
