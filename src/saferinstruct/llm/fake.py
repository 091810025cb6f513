"""A deterministic backend for tests: answers from a rule, counts its calls, can fail on purpose."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.llm.engine import EngineMixin, EngineOptions


class FakeOptions(EngineOptions):
    model: str = "fake-model"
    # Reply with this text, formatted with {user} (last user message) and {n} (sample index).
    template: str = "echo: {user}"
    # Raise after this many calls (simulates a crash half way through a stage).
    crash_after: int | None = None
    # Raise on the request whose last user message is this text (one failing shard on the Ray engine).
    crash_on: str | None = None


@register_backend
class FakeBackend(EngineMixin, Backend):
    name = "fake"
    Options = FakeOptions
    options: FakeOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.calls = 0

    def unkeyed_options(self) -> set[str]:
        # A crash changes no answer: the re-run must hit what the crashed run cached; nor does where it runs.
        return {"crash_after", "crash_on", "batch_size"} | FakeOptions.engine_keys()

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        if self.runs_on_ray():
            yield from self.run_on_ray(requests)
            return
        for i, req in enumerate(requests):
            if self.options.crash_after is not None and self.calls >= self.options.crash_after:
                raise RuntimeError(f"fake backend crashed after {self.calls} calls")
            user = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
            if self.options.crash_on is not None and user == self.options.crash_on:
                raise RuntimeError(f"fake backend crashed on {user!r}")
            self.calls += 1
            text = self.options.template.format(user=user, n=req.sample_index,
                                                h=hashlib.sha256(user.encode()).hexdigest()[:8])
            yield i, ChatResult(text=text, finish_reason="stop",
                                prompt_tokens=sum(len(m.content.split()) for m in req.messages),
                                completion_tokens=len(text.split()))

    def close(self) -> None:
        self.close_engine()
