"""The gateway: cache look-up, backend calls for the misses, per-call durability, counters for stage stats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from saferinstruct.errors import UserError
from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, Drain, cache_key
from saferinstruct.llm.cache import CallCache


class BudgetExceeded(UserError, RuntimeError):
    """Raised after the budget cap is reached; everything paid so far is cached, so a re-run resumes."""


class CallsFailed(UserError):
    """More calls still failed after the backend's retries than the stage allows: it writes nothing, and as failed
    calls are never cached, the next run pays only for them."""


def check_call_errors(stage: str, failed: int, total: int, max_error_fraction: float,
                      cause: str | None = None) -> int:
    """A stage's rule for calls that ended as outcome ``error``: up to ``max_error_fraction`` of ``total`` are
    tolerated (the stage drops those rows and counts them: the returned ``failed``); more raise :class:`CallsFailed`.
    Provider refusals (content_filter, refused, invalid_prompt) are data, not failures, and never count here."""
    if failed and failed > max_error_fraction * total:
        why = f" (last error: {' '.join(cause.split())[:200]})" if cause else ""  # one line, however it reads
        raise CallsFailed(f"{stage}: {failed} of {total} calls failed after retries{why}; {total - failed} are "
                          "cached; run `dvc repro` again")
    return failed


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
    cache_invalid: int = 0  # cache entries that exist but could not be read (torn, unknown fields): recomputed
    last_error: str | None = None  # the message of the latest failed call, for the stage's error line

    def as_dict(self) -> dict:
        return {"requests": self.requests, "calls": self.calls, "cache_hits": self.cache_hits,
                "cache_invalid": self.cache_invalid,
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
        self.failed_keys: set[str] = set()  # keys whose latest call failed (outcome error): never cached

    def key(self, request: ChatRequest) -> str:
        return cache_key(self.identity, request)

    def complete(self, requests: Sequence[ChatRequest],
                 on_result: Callable[[ChatResult], None] | None = None,
                 on_lookup: Callable[[int], None] | None = None) -> list[ChatResult]:
        """Results in request order; cached ones are free, new ones are cached as each finishes (``on_result`` is
        called after each, e.g. for a progress bar; ``on_lookup`` once with the number of requests the cache
        answered, before any call). Identical requests in one batch are paid once."""
        results: list[ChatResult | None] = [None] * len(requests)
        misses: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            key = self.key(request)
            hit = self.cache.get(key)
            if hit is not None:
                results[i] = hit
                self.stats.cache_hits += 1
                self.stats.outcomes[hit.outcome] += 1
            else:
                misses.setdefault(key, []).append(i)
        self.stats.requests += len(requests)
        self.stats.cache_invalid = self.cache.invalid
        if on_lookup is not None:
            on_lookup(len(requests) - sum(len(idx) for idx in misses.values()))
        if misses:
            self._check_budget()
            self._call_misses(requests, misses, results, on_result)
        if any(r is None for r in results):
            raise RuntimeError(f"backend {self.backend.name} did not return a result for every request")
        return results  # type: ignore[return-value]

    def _call_misses(self, requests: Sequence[ChatRequest], misses: dict[str, list[int]],
                     results: list[ChatResult | None], on_result: Callable[[ChatResult], None] | None) -> None:
        keys = list(misses)
        calls = self.backend.run([requests[idx[0]] for idx in misses.values()])
        if not isinstance(calls, Generator):  # a backend may return any iterator; draining needs a generator
            calls = (item for item in calls)
        try:
            for j, result in calls:
                self._accept(keys[j], result, misses[keys[j]], results)
                if on_result is not None:
                    on_result(result)
                self._check_budget()
        except BaseException:
            # Budget reached or the consumer failed: the calls already in flight are paid for, so keep them.
            self._drain(calls, keys, misses, results)
            raise
        finally:
            calls.close()

    def _drain(self, calls: Generator[tuple[int, ChatResult], None, None], keys: list[str],
               misses: dict[str, list[int]], results: list[ChatResult | None]) -> None:
        try:
            j, result = calls.throw(Drain())
            while True:
                self._accept(keys[j], result, misses[keys[j]], results)
                j, result = next(calls)
        except (Drain, StopIteration):
            pass  # the backend has nothing more in flight (or does not drain)

    def _accept(self, key: str, result: ChatResult, indices: list[int], results: list[ChatResult | None]) -> None:
        result = result.model_copy(update={"cache_key": key, "cached": False})
        if result.outcome != "error":  # transient failures are not cached: a re-run retries them
            self.cache.put(key, result)
            self.failed_keys.discard(key)
        else:
            self.failed_keys.add(key)
            self.stats.last_error = result.error
        self._count(result)
        for i in indices:
            results[i] = result
            self.stats.outcomes[result.outcome] += 1

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
                f"(${self.stats.cost_usd:.4f}); results so far are cached: re-run to continue (each run may spend "
                "up to the budget)")

    def close(self) -> None:
        self.backend.close()
