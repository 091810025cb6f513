"""The README results table, rendered from metrics/eval.json so no number in it is ever typed by hand."""

from __future__ import annotations

from pathlib import Path

from saferinstruct.eval.metrics import KINDS, MODEL_ORDER, model_pairs
from saferinstruct.io import RowError, atomic_open

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
COMMAND = "saferinstruct results-table"


_WHAT = {"harmful": "harmful: refused (higher is safer)", "safe": "safe: refused (over-refusal, lower is better)",
         "care": "personal risk: refused (a caring answer is the goal)"}
_CARE = "personal risk: pointed to help (care_rate, higher is better)"
# With a harm judge (task harm) the cells are harmless_rate: answers the judge found harmless, not refusals.
_WHAT_HARM = {"harmful": "harmful: harmless answers (higher is safer)",
              "safe": "safe: harmless answers (no over-refusal measure)",
              "care": "personal risk: harmless answers"}


def judge_of(metrics: dict) -> tuple[str | None, str]:
    """(judge name, task) recorded in metrics/eval.json; (None, "refusal") for metrics from before it was recorded."""
    judge = metrics.get("judge") if isinstance(metrics.get("judge"), dict) else {}
    return judge.get("name"), judge.get("task", "refusal")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def rate_cell(entry: dict, rate: str = "refusal_rate", where: str = "", source: str = "metrics/eval.json") -> str:
    """``54.4% [47.9, 60.8] (n=226)``: the rate, its 95% Wilson interval and the rows it is over (judged)."""
    ci_key = rate.replace("_rate", "_ci")
    if ci_key not in entry:
        raise RowError(source, None, f"no '{where}{ci_key}' (metrics from before intervals were added): "
                                     "re-run the evaluate stage")
    n = entry.get("judged", entry["n"])
    if entry[rate] is None:
        return f"n/a (n={n})"
    low, high = entry[ci_key]
    return f"{_pct(entry[rate])} [{100 * low:.1f}, {100 * high:.1f}] (n={n})"


def p_cell(p: float) -> str:
    """Three significant digits (0.0625, 0.0312), "<0.001" below that, "1.0" for no evidence of a difference."""
    return "<0.001" if p < 0.001 else "1.0" if p >= 1 else f"{p:.3g}"


def _models(metrics: dict, source: str) -> list[str]:
    ok = isinstance(metrics, dict) and metrics.get("schema_version") == 1 and isinstance(metrics.get("models"), dict)
    if not ok:
        raise RowError(source, None, "not a metrics/eval.json document (schema_version 1 expected)")
    # before -> after: the pipeline's own models in training order, then any others by name (the metrics JSON is
    # written with sorted keys, which would put dpo before sft)
    models = sorted(metrics["models"],
                    key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))
    if not models:
        raise RowError(source, None, "no model was evaluated")
    return models


def rates_table(metrics: dict, source: str = "metrics/eval.json") -> list[str]:
    """One row per (kind, set), one column per model: refusal rate [95% CI] (n)."""
    models = _models(metrics, source)
    judge_name, task = judge_of(metrics)
    what, rate = (_WHAT_HARM, "harmless_rate") if task == "harm" else (_WHAT, "refusal_rate")
    first = f"prompts (judge: {judge_name}, task {task})" if judge_name else "prompts"
    lines = [f"| {first} | set | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for kind in KINDS:
        sets = list(dict.fromkeys(s for m in models for s in metrics["models"][m].get(kind, {})))
        for name in [s for s in sets if s != "overall"] + (["overall"] if "overall" in sets else []):
            cells = [(m, metrics["models"][m].get(kind, {}).get(name)) for m in models]
            label = f"**{name}**" if name == "overall" else name
            lines.append(f"| {what[kind]} | {label} | " + " | ".join(
                rate_cell(c, rate, where=f"models.{m}.{kind}.{name}.", source=source) if c else ""
                for m, c in cells) + " |")
            if kind == "care":  # the goal there: answers that point to help, next to the refusal rate
                lines.append(f"| {_CARE} | {label} | " + " | ".join(
                    rate_cell(c, "care_rate", where=f"models.{m}.{kind}.{name}.", source=source) if c else ""
                    for m, c in cells) + " |")
    failures = [sum(metrics["models"][m].get(k, {}).get("overall", {}).get("parse_failures", 0) for k in KINDS)
                for m in models]
    lines.append("| judge parse failures | all | " + " | ".join(str(f) for f in failures) + " |")
    return lines


def comparisons_table(metrics: dict, source: str = "metrics/eval.json") -> list[str]:
    """One row per (kind, model pair) on all prompts of the kind: paired refusal rates, discordant counts, exact
    McNemar p."""
    comparisons = metrics.get("comparisons")
    if not isinstance(comparisons, dict):
        raise RowError(source, None, "no 'comparisons' (metrics from before paired tests were added): "
                                     "re-run the evaluate stage")
    outcome, verb = ("harmless", "harmless") if judge_of(metrics)[1] == "harm" else ("refusal", "refused")
    lines = [f"| prompts | A → B | n | {verb}: A → B | only A {verb} (b) | only B {verb} (c) | exact McNemar p |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        if kind == "care" and not any(kind in c for c in comparisons.values()):
            continue  # no care prompts were evaluated
        for a, b in model_pairs(_models(metrics, source)):
            test = comparisons.get(f"{a}_vs_{b}", {}).get(kind, {}).get("overall", {}).get(outcome)
            if test is None:
                raise RowError(source, None, f"no 'comparisons.{a}_vs_{b}.{kind}.overall.{outcome}': "
                                             "re-run the evaluate stage")
            lines.append(f"| {kind} | {a} → {b} | {test['n']} | {_pct(test['a_rate'])} → {_pct(test['b_rate'])} | "
                         f"{test['b']} | {test['c']} | {p_cell(test['p_value'])} |")
    return lines


def _mean_cell(value: float | None, ci: list[float] | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def capability_table(metrics: dict, source: str = "metrics/eval.json") -> list[str]:
    """Capability kept, one row per model: reference-answer NLL [95% bootstrap CI], its paired difference to base,
    and the answered rate of ordinary instructions [95% Wilson CI] (n)."""
    cap = metrics["capability"]
    if not isinstance(cap, dict) or not isinstance(cap.get("models"), dict):
        raise RowError(source, None, "'capability' has no 'models': re-run the evaluate stage")
    n = cap.get("reference", {}).get("n", "?")
    lines = [f"| model | answer NLL per token, lower is better (n={n}) | NLL − base | ordinary instructions answered |",
             "|---|---:|---:|---:|"]
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    for m in sorted(cap["models"], key=lambda m: (order.get(m, len(order)), m)):
        e = cap["models"][m]
        answered = ("n/a" if e["answered_rate"] is None else
                    f"{_pct(e['answered_rate'])} [{100 * e['answered_ci'][0]:.1f}, {100 * e['answered_ci'][1]:.1f}] "
                    f"(n={e['answered_n']})")
        lines.append(f"| {m} | {_mean_cell(e['nll_mean'], e['nll_ci'])} | "
                     f"{_mean_cell(e['nll_diff_to_base'], e['nll_diff_ci'], signed=True) if m != 'base' else '—'} | "
                     f"{answered} |")
    lines += ["", "_Capability kept: mean NLL per answer token of held-out reference answers (teacher-forced on the "
                  "chat-templated instruction; 95% bootstrap interval over rows; NLL − base is paired on the same "
                  "rows), and 1 − the refusal rate on Alpaca validation instructions._"]
    return lines


def pairwise_table(metrics: dict, source: str = "metrics/eval.json") -> list[str]:
    """Win / tie / loss rates against base [95% Wilson CI] (n), one row per model; or the line saying why they were
    not measured (an offline judge)."""
    block = metrics["pairwise"]
    if not block.get("measured"):
        return [f"_Win rate against base (AlpacaEval-style, pairwise): {block.get('why', 'not measured')}._"]
    lines = ["| model | wins against base | ties | losses |", "|---|---:|---:|---:|"]
    for m in _models(metrics, source):
        e = metrics["models"][m].get("pairwise_vs_base")
        if e is not None:
            lines.append(f"| {m} | " + " | ".join(rate_cell(e, f"{k}_rate", f"models.{m}.pairwise_vs_base.", source)
                                                  for k in ("win", "tie", "loss")) + " |")
    sets = ", ".join(block.get("sets", []))
    lines += ["", f"_Pairwise against base on {sets} (held-out ordinary instructions), judged by "
                  f"`{block.get('judge')}` in both orders: a win is the model preferred in both, a loss base in both, a tie anything else "
                  "(n = prompts with both orders settled)._"]
    return lines


def render_table(metrics: dict, source: str = "metrics/eval.json") -> str:
    """Markdown: the rates table (rate [95% Wilson interval] (n judged)), then the paired comparisons table."""
    lines = rates_table(metrics, source)
    compared = len(_models(metrics, source)) > 1
    name, task = judge_of(metrics)
    rate, verb = ("harmless rate", "found harmless") if task == "harm" else ("refusal rate", "refused")
    judge = f"`{name}` (task {task}, params.yaml evaluate.judge)" if name else "(params.yaml evaluate.judge)"
    note = (f"_Cells: {rate} [95% Wilson interval] (n = answers the judge labelled), labelled by the evaluation "
            f"judge {judge}.")
    if compared:
        note += f" Below: models compared on the same prompts; b, c count the prompts only one of them {verb}; " \
                "p is the two-sided exact McNemar test."
    lines += ["", note + "_"]
    if compared:
        lines += [""] + comparisons_table(metrics, source)
    if "capability" in metrics:
        lines += [""] + capability_table(metrics, source)
    if "pairwise" in metrics:
        lines += [""] + pairwise_table(metrics, source)
    lines.append("")
    lines.append(f"_Generated from `{source}` by `{COMMAND}`; do not edit by hand._")
    return "\n".join(lines)


def markers(block: str | None = None) -> tuple[str, str]:
    """The README lines around a results table: the default run's, or a named block's (e.g. profile ``full``)."""
    if block is None:
        return START, END
    return f"<!-- results-table:{block}:start -->", f"<!-- results-table:{block}:end -->"


def replace_between_markers(document: str, table: str, name: str = "README.md", block: str | None = None) -> str:
    first, last = markers(block)
    start, end = document.find(first), document.find(last)
    if start < 0 or end < start:
        raise RowError(name, None, f"markers not found; add a line '{first}' and a line '{last}' where the table goes")
    return document[: start + len(first)] + "\n" + table + "\n" + document[end:]


def update_readme(readme: Path | str, metrics: dict, source: str = "metrics/eval.json", block: str | None = None) -> bool:
    """Rewrite the block between the markers (atomically); returns whether the file changed."""
    readme = Path(readme)
    if not readme.exists():
        raise RowError(readme, None, "file not found")
    old = readme.read_text(encoding="utf-8")
    new = replace_between_markers(old, render_table(metrics, source), str(readme), block)
    if new != old:
        with atomic_open(readme) as fh:
            fh.write(new)
    return new != old
