"""The gateway: cache look-up, backend calls for the misses, per-call durability, counters for stage stats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, cache_key
from saferinstruct.llm.cache import CallCache


class BudgetExceeded(RuntimeError):
    """Raised after the budget cap is reached; everything paid so far is cached, so a re-run resumes."""


@dataclass
class Prices:
    """USD per million tokens."""

    prompt: float = 0.0
    completion: float = 0.0


@dataclass
class GatewayStats:
    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    outcomes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "calls": self.calls, "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "outcomes": dict(sorted(self.outcomes.items()))}


class Gateway:
    def __init__(self, backend: Backend, cache_dir: Path | str | None = None, prices: Prices | None = None,
                 budget_usd: float | None = None):
        self.backend = backend
        self.cache = CallCache(cache_dir)
        self.prices = prices or Prices()
        self.budget_usd = budget_usd
        self.stats = GatewayStats()
        self.identity = backend.identity()

    def key(self, request: ChatRequest) -> str:
        return cache_key(self.identity, request)

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Results in request order; cached ones are free, new ones are cached as each finishes."""
        results: list[ChatResult | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        misses: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is not None:
                results[i] = hit
                self.stats.cache_hits += 1
            else:
                misses.setdefault(key, []).append(i)  # identical requests in one batch are paid once
        self.stats.requests += len(requests)
        todo = [requests[idx[0]] for idx in misses.values()]
        todo_keys = list(misses)
        if todo:
            self._check_budget()
            for j, result in self.backend.run(todo):
                key = todo_keys[j]
                result = result.model_copy(update={"cache_key": key, "cached": False})
                if result.outcome != "error":  # transient failures are not cached: a re-run retries them
                    self.cache.put(key, result)
                self._count(result)
                for i in misses[key]:
                    results[i] = result
                self._check_budget()
        for r in results:
            if r is not None:
                self.stats.outcomes[r.outcome] += 1
        return [r for r in results if r is not None] if all(r is not None for r in results) else self._missing()

    def _count(self, result: ChatResult) -> None:
        self.stats.calls += 1
        self.stats.prompt_tokens += result.prompt_tokens
        self.stats.completion_tokens += result.completion_tokens
        self.stats.cost_usd += (result.prompt_tokens * self.prices.prompt
                                + result.completion_tokens * self.prices.completion) / 1e6

    def _check_budget(self) -> None:
        if self.budget_usd is not None and self.stats.cost_usd >= self.budget_usd:
            raise BudgetExceeded(
                f"budget of ${self.budget_usd:.2f} reached after {self.stats.calls} calls "
                f"(${self.stats.cost_usd:.4f}); results so far are cached, raise the budget and re-run to continue")

    def _missing(self) -> list[ChatResult]:
        raise RuntimeError(f"backend {self.backend.name} did not return a result for every request")

    def close(self) -> None:
        self.backend.close()
