"""One summary row per stage from its ``stats/<stage>.json``, and the funnel table ``saferinstruct stats`` prints.

Stages write their own stats shapes (``rows_in``/``kept``, ``read``/``rejected`` per reason, ``in``/``responses``,
model calls at the top, under ``gateway`` or per model...), so each column is read from the first key that a stage
uses for it, in the order listed below. A column no key answers is shown as ``-``, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Keys (dotted paths; a tuple is summed) read for rows in and rows kept, first match wins. A dict value counts as
# the sum of its numbers (e.g. ``pairs: {train, test}``).
IN_KEYS: tuple = ("rows_in", "in", "read", "sources_in", "rows_read", "sets.read", "prompts")
KEPT_KEYS: tuple = ("kept", "rows_trained", "rows_used", "responses", "candidates", "verdicts", "pairs",
                    "kept_per_file", "sets.kept", ("train", "test"))
DROP_TOTAL_KEYS = ("rejected", "dropped")  # a number here is the stage's own total
REASON_KEYS = ("rejected", "dropped", "by_reason")  # a dict here: count per drop reason (nested dicts: dotted)
DROP_PREFIX = "dropped_"  # top-level ``dropped_empty: 3`` is reason ``empty``

COLUMNS = ("stage", "in", "kept", "dropped", "top drop reasons", "calls", "hits", "cost", "secs")
MIN_REASONS_WIDTH = 16
MAX_STAGE_WIDTH = 24


@dataclass
class StageRow:
    stage: str
    rows_in: float | None = None
    kept: float | None = None
    dropped: float | None = None
    reasons: dict[str, float] = field(default_factory=dict)  # largest first, zero counts left out
    calls: float | None = None
    cache_hits: float | None = None
    cost_usd: float | None = None
    seconds: float | None = None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def numeric_leaves(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as dotted keys."""
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for k, v in data.items():
            out.update(numeric_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data} if _is_number(data) else {}


def _at(stats: dict, path: str) -> Any:
    node: Any = stats
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _count(stats: dict, key: str | tuple) -> float | None:
    if isinstance(key, tuple):
        parts = [_count(stats, k) for k in key]
        return None if any(p is None for p in parts) else sum(parts)
    value = _at(stats, key)
    if _is_number(value):
        return value
    numbers = numeric_leaves(value).values() if isinstance(value, dict) else ()
    return sum(numbers) if numbers else None


def _first(stats: dict, keys: Sequence) -> float | None:
    return next((n for n in (_count(stats, k) for k in keys) if n is not None), None)


def _reasons(stats: dict) -> dict[str, float]:
    found: dict[str, float] = {}
    for key in REASON_KEYS:
        if isinstance(stats.get(key), dict):
            found.update(numeric_leaves(stats[key]))
    for key, value in stats.items():
        if key.startswith(DROP_PREFIX) and _is_number(value):
            found[key[len(DROP_PREFIX):]] = value
    return dict(sorted(((k, v) for k, v in found.items() if v), key=lambda kv: (-kv[1], kv[0])))


def _total(stats: dict, name: str) -> float | None:
    """Sum of every ``name`` leaf at any depth (``calls`` at the top, under ``gateway``, per model)."""
    values = [v for k, v in numeric_leaves(stats).items() if k.rsplit(".", 1)[-1] == name]
    return sum(values) if values else None


def summarise_stage(stage: str, stats: dict) -> StageRow:
    """The funnel row of one stage's stats document."""
    rows_in, kept, reasons = _first(stats, IN_KEYS), _first(stats, KEPT_KEYS), _reasons(stats)
    dropped = next((stats[k] for k in DROP_TOTAL_KEYS if _is_number(stats.get(k))), None)
    if dropped is None and reasons:
        dropped = sum(reasons.values())
    if dropped is None and rows_in is not None and kept is not None:
        dropped = rows_in - kept
    seconds = stats.get("seconds") if _is_number(stats.get("seconds")) else None
    return StageRow(stage, rows_in, kept, dropped, reasons, _total(stats, "calls"), _total(stats, "cache_hits"),
                    _total(stats, "cost_usd"), seconds)


def _count_text(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _cost_text(x: float | None) -> str:
    if x is None:
        return "-"
    return "$0" if x == 0 else ("<$0.01" if x < 0.01 else f"${x:,.2f}")


def _seconds_text(x: float | None) -> str:
    return "-" if x is None else (f"{x:.1f}" if x < 100 else f"{x:,.0f}")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def reasons_cell(reasons: dict[str, float], width: int) -> str:
    """As many ``reason count`` items as fit in ``width``, largest first, then ``+N more``."""
    items = [(name, _count_text(n)) for name, n in reasons.items()]
    for shown in range(len(items), 0, -1):
        left = len(items) - shown
        text = ", ".join(f"{name} {n}" for name, n in items[:shown]) + (f", +{left} more" if left else "")
        if len(text) <= width:
            return text
    if not items:
        return ""
    name, n = items[0]  # not even the largest fits: cut its name, keep its count
    more = f" +{len(items) - 1}" if len(items) > 1 else ""
    return f"{_cut(name, width - len(n) - 1 - len(more))} {n}{more}"


def _cells(row: StageRow) -> list[str]:
    return [row.stage, _count_text(row.rows_in), _count_text(row.kept), _count_text(row.dropped), "",
            _count_text(row.calls), _count_text(row.cache_hits), _cost_text(row.cost_usd), _seconds_text(row.seconds)]


def _totals(rows: list[StageRow]) -> str:
    def add(attr: str) -> float | None:
        values = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return sum(values) if values else None

    return (f"total: {_count_text(add('calls'))} model calls, {_count_text(add('cache_hits'))} cache hits, "
            f"{_cost_text(add('cost_usd'))}, {_seconds_text(add('seconds'))} s")


def render_funnel_table(rows: list[StageRow], width: int = 100) -> str:
    """Fixed-width table, one line per stage; the reasons column takes the width the others leave."""
    if not rows:
        return "(no stats/*.json)"
    body = [_cells(r) for r in rows]
    for cells in body:
        cells[0] = _cut(cells[0], MAX_STAGE_WIDTH)
    widths = [max(len(COLUMNS[i]), *(len(c[i]) for c in body)) for i in range(len(COLUMNS))]
    reasons_at = COLUMNS.index("top drop reasons")
    # two spaces around the text columns, one between right-aligned numbers: the room goes to the reasons
    gaps = ["  " if i in (1, reasons_at, reasons_at + 1) else " " for i in range(1, len(COLUMNS))]
    fixed = sum(widths) - widths[reasons_at] + sum(map(len, gaps))
    widths[reasons_at] = max(MIN_REASONS_WIDTH, width - fixed)
    for cells, row in zip(body, rows):
        cells[reasons_at] = reasons_cell(row.reasons, widths[reasons_at])

    def join(parts: list[str]) -> str:
        return (parts[0] + "".join(gap + part for gap, part in zip(gaps, parts[1:]))).rstrip()

    def line(cells: list[str]) -> str:
        return join([c.ljust(w) if i in (0, reasons_at) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))])

    rule = join(["-" * w for w in widths])
    return "\n".join([line(list(COLUMNS)), rule, *(line(c) for c in body), _totals(rows)])
