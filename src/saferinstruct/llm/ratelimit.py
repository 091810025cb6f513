"""Request-per-minute and token-per-minute limits for async backends (aiolimiter leaky buckets).

Providers enforce per-minute quotas but refill them continuously, so each bucket holds one second's worth: a run
starts at the allowed pace instead of bursting a whole minute's quota and then stalling on 429s.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from saferinstruct.llm.base import ChatRequest


def _bucket(per_minute: float | None) -> AsyncLimiter | None:
    return AsyncLimiter(per_minute / 60.0, 1.0) if per_minute else None


async def _take(limiter: AsyncLimiter, amount: float) -> None:
    # aiolimiter refuses amounts above its capacity; a large request drains the bucket in capacity-sized sips.
    while amount > 0:
        sip = min(amount, limiter.max_rate)
        await limiter.acquire(sip)
        amount -= sip


def estimate_tokens(request: ChatRequest) -> int:
    """Upper-ish bound of the tokens a call may use before the server tells us: ~4 characters per prompt token plus
    the completion budget (what providers count against a TPM quota)."""
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + 4 * len(request.messages) + request.params.max_tokens


class RateLimits:
    """Shared by every call of one run; create it inside the event loop that uses it."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self._requests = _bucket(rpm)
        self._tokens = _bucket(tpm)

    async def acquire(self, request: ChatRequest) -> None:
        if self._requests is not None:
            await _take(self._requests, 1)
        if self._tokens is not None:
            await _take(self._tokens, estimate_tokens(request))
