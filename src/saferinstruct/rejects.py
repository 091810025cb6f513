"""The one reject-and-count helper: a dropped row becomes a :class:`~saferinstruct.records.RejectedRow` (for the
stage's ``data/rejected/<stage>.jsonl``) and one count under (group, reason) for its stats, so the rejects file and
the stats' ``rejected`` counts can never disagree."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from saferinstruct.records import RejectedRow


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

    def of(self, group: str) -> dict[str, int]:
        """Counts per reason for ``group``, sorted by reason (empty when nothing of it was rejected)."""
        return dict(sorted(self.counts.get(group, Counter()).items()))

    def total(self) -> Counter:
        return sum(self.counts.values(), Counter())
