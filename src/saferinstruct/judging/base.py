"""The judge interface every stage uses: items in, one typed :class:`~saferinstruct.records.Verdict` per item out.

Four tasks, each with a closed label set:

- ``instruction``: is it unsafe to comply with this instruction?  ``unsafe`` | ``safe``
- ``response``: is the (expert's) answer safe?  ``safe`` | ``unsafe``
- ``refusal``: did the answer refuse?  ``refusal`` | ``compliance`` | ``partial``  (evaluation)
- ``harm``: is this answer to a harmful prompt itself harmful?  ``harmful`` | ``harmless``  (evaluation, LLM judges;
  refusals, deflections and incoherent text are harmless)

``Verdict.score`` always points the same way per task: the probability of the task's *positive* label (``unsafe`` for
instruction and response, ``refusal`` for refusal; for harm the StrongREJECT-style score of how harmful), or ``None``
when a judge gives no score. A verdict that could not be parsed carries ``label="unknown"`` and ``parse_ok=False``; it
is counted and kept, never raised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from saferinstruct.records import Verdict

Task = Literal["instruction", "response", "refusal", "harm"]
LABELS: dict[str, tuple[str, ...]] = {
    "instruction": ("unsafe", "safe"),
    "response": ("safe", "unsafe"),
    "refusal": ("refusal", "compliance", "partial"),
    "harm": ("harmful", "harmless"),
    # pairwise (eval/pairwise.py, not a Judge task): which of two answers is better, ``a`` | ``b`` | ``tie``
    "pairwise": ("a", "b", "tie"),
}
POSITIVE: dict[str, str] = {"instruction": "unsafe", "response": "unsafe", "refusal": "refusal", "harm": "harmful"}
UNKNOWN = "unknown"


class JudgeItem(BaseModel):
    """What a judge sees. ``response`` is None for the instruction task; ``source_text`` is optional context."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    instruction: str
    response: str | None = None
    source_text: str | None = None


@dataclass
class JudgeStats:
    """Counters a stage puts in its stats JSON."""

    items: int = 0
    parse_failures: int = 0
    labels: Counter = field(default_factory=Counter)

    def add(self, verdicts: Sequence[Verdict]) -> None:
        self.items += len(verdicts)
        self.parse_failures += sum(not v.parse_ok for v in verdicts)
        self.labels.update(v.label for v in verdicts)

    def as_dict(self) -> dict:
        return {"items": self.items, "parse_failures": self.parse_failures,
                "labels": dict(sorted(self.labels.items()))}


class Judge(ABC):
    """One way of judging one task. Subclasses implement :meth:`_judge`; :meth:`judge` keeps the counters."""

    task: Task
    name: str
    # An LLM judge's llm.gateway.Gateway (not imported: offline judges and their stages never load the llm package).
    gateway: Any = None

    def __init__(self, task: Task, name: str):
        if task not in LABELS:
            raise ValueError(f"unknown judge task '{task}' (known: {', '.join(LABELS)})")
        self.task, self.name = task, name
        self.counters = JudgeStats()

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in item order; ``verdict.parent_id`` is the item id."""
        verdicts = self._judge(items)
        if len(verdicts) != len(items):
            raise RuntimeError(f"judge {self.name} returned {len(verdicts)} verdicts for {len(items)} items")
        self.counters.add(verdicts)
        return verdicts

    @abstractmethod
    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """Judge a batch."""

    def call_failed(self, verdict: Verdict) -> bool:
        """Whether ``verdict`` stands for a model call that still failed after its retries (outcome ``error``, not
        cached): not a judgement, so stages drop it (within their ``max_error_fraction``) or fail."""
        return self.gateway is not None and verdict.cache_key in self.gateway.failed_keys

    def last_call_error(self) -> str | None:
        return self.gateway.stats.last_error if self.gateway is not None else None

    def stats(self) -> dict:
        """Counters for the stage stats (LLM judges add gateway calls, tokens, cost)."""
        return {"judge": self.name, "task": self.task, **self.counters.as_dict()}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models or clients."""

    def verdict(self, item: JudgeItem, label: str, *, score: float | None, rationale: str, raw: str,
                cache_key: str, parse_ok: bool = True) -> Verdict:
        return Verdict(id=f"{item.id}:{self.task}", parent_id=item.id, label=label, score=score,
                       rationale=rationale, parse_ok=parse_ok, raw=raw, judge=self.name, cache_key=cache_key)

    def text_of(self, item: JudgeItem) -> str:
        """The text this task is about: the response for response/refusal/harm, else the instruction."""
        if self.task == "instruction":
            return item.instruction
        if item.response is None:
            raise ValueError(f"item {item.id}: task '{self.task}' needs a response")
        return item.response


# The one registry of judges that are not a gateway backend (offline rules and models, plugins): backend name ->
# (task, builder). A builder takes the params section's JudgeSpec, the classifier directory and the section name (for
# option errors). Built-in judges register when their module is imported (each stage imports the judge modules it can
# use, so its dvc.yaml deps list exactly those); plugins register from the ``saferinstruct.judges`` entry-point group,
# like gateway backends from ``saferinstruct.backends`` (saferinstruct.llm.base).
JudgeBuilder = Callable[..., Judge]
_JUDGES: dict[str, tuple[Task, JudgeBuilder]] = {}


def register_judge(name: str, task: Task) -> Callable[[JudgeBuilder], JudgeBuilder]:
    def add(build: JudgeBuilder) -> JudgeBuilder:
        _JUDGES[name] = (task, build)
        return build

    return add


def registered_judge(name: str) -> tuple[Task, JudgeBuilder] | None:
    """(task, builder) of the judge registered as ``name`` (loading plugins on a miss), or None."""
    if name not in _JUDGES:
        for ep in entry_points(group="saferinstruct.judges"):
            ep.load()
    return _JUDGES.get(name)


def registered_judges() -> list[str]:
    return sorted(_JUDGES)
