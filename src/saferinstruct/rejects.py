"""The one reject-and-count helper: a dropped row becomes a :class:`~saferinstruct.records.RejectedRow` (for the
stage's ``data/rejected/<stage>.jsonl``) and one count under (group, reason) for its stats, so the rejects file and
the stats' rejected counts can never disagree.

One id style for every stage: a reject's ``id`` is the dropped row's own id (the one it had, or would have had if
kept: ``<corpus>:<line>``, ``<source id>:<candidate>``); ``parent_id`` is the row it came from where there is one, as
on every record (None for raw input)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from saferinstruct.records import Record, RejectedRow


class Rejects:
    """Rejected rows of one stage, counted per group (a corpus, a dataset, a pair kind) and reason."""

    def __init__(self, stage: str, groups: Iterable[str] = ()):
        self.stage = stage
        self.rows: list[RejectedRow] = []
        self.counts: dict[str, Counter] = {g: Counter() for g in groups}

    def add(self, group: str, row_id: str, reason: str, detail: str = "", row: dict[str, Any] | None = None,
            parent_id: str | None = None) -> None:
        self.counts.setdefault(group, Counter())[reason] += 1
        self.rows.append(RejectedRow(id=row_id, parent_id=parent_id, stage=self.stage, reason=reason, detail=detail,
                                     row=row or {}))

    def add_record(self, group: str, record: Record, reason: str, detail: str = "",
                   row: dict[str, Any] | None = None) -> None:
        """A dropped row that is already a record: its own id and parent_id; ``row`` defaults to the whole record."""
        self.add(group, record.id, reason, detail, record.model_dump(mode="json") if row is None else row,
                 parent_id=record.parent_id)

    def of(self, group: str) -> dict[str, int]:
        """Counts per reason for ``group``, sorted by reason (empty when nothing of it was rejected)."""
        return dict(sorted(self.counts.get(group, Counter()).items()))

    def total(self) -> Counter:
        return sum(self.counts.values(), Counter())
