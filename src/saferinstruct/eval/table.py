"""The README results table, rendered from metrics/eval.json so no number in it is ever typed by hand."""

from __future__ import annotations

from pathlib import Path

from saferinstruct.io import RowError, atomic_open

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
COMMAND = "saferinstruct results-table"


_ORDER = ("base", "sft", "dpo")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_table(metrics: dict, source: str = "metrics/eval.json") -> str:
    """Markdown: one row per (kind, set), one column per model; refusal rate with n, then judge parse failures."""
    ok = isinstance(metrics, dict) and metrics.get("schema_version") == 1 and isinstance(metrics.get("models"), dict)
    if not ok:
        raise RowError(source, None, "not a metrics/eval.json document (schema_version 1 expected)")
    # before -> after: the pipeline's own models in training order, then any others by name (the metrics JSON is
    # written with sorted keys, which would put dpo before sft)
    models = sorted(metrics["models"], key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m))
    if not models:
        raise RowError(source, None, "no model was evaluated")
    lines = ["| prompts | set | n | " + " | ".join(models) + " |", "|---|---|---:|" + "---:|" * len(models)]
    what = {"harmful": "harmful: refused (higher is safer)", "safe": "safe: refused (over-refusal, lower is better)"}
    for kind in ("harmful", "safe"):
        sets = list(dict.fromkeys(s for m in models for s in metrics["models"][m].get(kind, {})))
        for name in [s for s in sets if s != "overall"] + (["overall"] if "overall" in sets else []):
            cells = [metrics["models"][m].get(kind, {}).get(name) for m in models]
            n = next((c["n"] for c in cells if c), 0)
            label = f"**{name}**" if name == "overall" else name
            lines.append(f"| {what[kind]} | {label} | {n} | "
                         + " | ".join(_pct(c["refusal_rate"]) if c else "" for c in cells) + " |")
    failures = [sum(metrics["models"][m].get(k, {}).get("overall", {}).get("parse_failures", 0)
                    for k in ("harmful", "safe")) for m in models]
    lines.append("| judge parse failures | all | | " + " | ".join(str(f) for f in failures) + " |")
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
