"""The README results table, rendered from metrics/eval.json so no number in it is ever typed by hand."""

from __future__ import annotations

from pathlib import Path

from saferinstruct.eval.metrics import KINDS, MODEL_ORDER, model_pairs
from saferinstruct.io import RowError, atomic_open

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
COMMAND = "saferinstruct results-table"


_WHAT = {"harmful": "harmful: refused (higher is safer)", "safe": "safe: refused (over-refusal, lower is better)"}


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
    lines = ["| prompts | set | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for kind in KINDS:
        sets = list(dict.fromkeys(s for m in models for s in metrics["models"][m].get(kind, {})))
        for name in [s for s in sets if s != "overall"] + (["overall"] if "overall" in sets else []):
            cells = [(m, metrics["models"][m].get(kind, {}).get(name)) for m in models]
            label = f"**{name}**" if name == "overall" else name
            lines.append(f"| {_WHAT[kind]} | {label} | " + " | ".join(
                rate_cell(c, where=f"models.{m}.{kind}.{name}.", source=source) if c else "" for m, c in cells) + " |")
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
    lines = ["| prompts | A → B | n | refused: A → B | only A refused (b) | only B refused (c) | exact McNemar p |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        for a, b in model_pairs(_models(metrics, source)):
            test = comparisons.get(f"{a}_vs_{b}", {}).get(kind, {}).get("overall", {}).get("refusal")
            if test is None:
                raise RowError(source, None, f"no 'comparisons.{a}_vs_{b}.{kind}.overall.refusal': "
                                             "re-run the evaluate stage")
            lines.append(f"| {kind} | {a} → {b} | {test['n']} | {_pct(test['a_rate'])} → {_pct(test['b_rate'])} | "
                         f"{test['b']} | {test['c']} | {p_cell(test['p_value'])} |")
    return lines


def render_table(metrics: dict, source: str = "metrics/eval.json") -> str:
    """Markdown: the rates table (rate [95% Wilson interval] (n judged)), then the paired comparisons table."""
    lines = rates_table(metrics, source)
    compared = len(_models(metrics, source)) > 1
    note = ("_Cells: refusal rate [95% Wilson interval] (n = answers the judge labelled), labelled by the evaluation "
            "judge (params.yaml evaluate.judge).")
    if compared:
        note += " Below: models compared on the same prompts; b, c count the prompts only one of them refused; " \
                "p is the two-sided exact McNemar test."
    lines += ["", note + "_"]
    if compared:
        lines += [""] + comparisons_table(metrics, source)
    lines.append("")
    lines.append(f"_Generated from `{source}` by `{COMMAND}`; do not edit by hand._")
    return "\n".join(lines)


def replace_between_markers(document: str, table: str, name: str = "README.md") -> str:
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise RowError(name, None, f"markers not found; add a line '{START}' and a line '{END}' where the table goes")
    return document[: start + len(START)] + "\n" + table + "\n" + document[end:]


def update_readme(readme: Path | str, metrics: dict, source: str = "metrics/eval.json") -> bool:
    """Rewrite the block between the markers (atomically); returns whether the file changed."""
    readme = Path(readme)
    if not readme.exists():
        raise RowError(readme, None, "file not found")
    old = readme.read_text(encoding="utf-8")
    new = replace_between_markers(old, render_table(metrics, source), str(readme))
    if new != old:
        with atomic_open(readme) as fh:
            fh.write(new)
    return new != old
