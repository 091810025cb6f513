"""A deterministic backend for tests: answers from a rule, counts its calls, can fail on purpose."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.params import Params


class FakeOptions(Params):
    model: str = "fake-model"
    # Reply with this text, formatted with {user} (last user message) and {n} (sample index).
    template: str = "echo: {user}"
    # Raise after this many calls (simulates a crash half way through a stage).
    crash_after: int | None = None


@register_backend
class FakeBackend(Backend):
    name = "fake"
    Options = FakeOptions
    options: FakeOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.calls = 0

    def unkeyed_options(self) -> set[str]:
        return {"crash_after"}  # a crash changes no answer: the re-run must hit what the crashed run cached

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        for i, req in enumerate(requests):
            if self.options.crash_after is not None and self.calls >= self.options.crash_after:
                raise RuntimeError(f"fake backend crashed after {self.calls} calls")
            self.calls += 1
            user = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
            text = self.options.template.format(user=user, n=req.sample_index,
                                                h=hashlib.sha256(user.encode()).hexdigest()[:8])
            yield i, ChatResult(text=text, finish_reason="stop",
                                prompt_tokens=sum(len(m.content.split()) for m in req.messages),
                                completion_tokens=len(text.split()))
