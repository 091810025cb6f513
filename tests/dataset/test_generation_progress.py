"""Generation progress: one line per interval in a log (stderr is no terminal under DVC), cached answers counted as
done from the start, the time left estimated from the new calls only."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.llm.gateway import Gateway
from saferinstruct.params import Params
from saferinstruct.progress import complete
from saferinstruct.records import InducedInstruction
from saferinstruct.respond import ExpertParams, respond
from conftest import REPO

CLOCK = {"now": 0.0}


@register_backend
class SlowBackend(Backend):
    """Each answer takes 2 s of the fake clock."""

    name = "test_progress_slow"
    Options = Params

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        for i, req in enumerate(requests):
            CLOCK["now"] += 2.0
            yield i, ChatResult(text=f"answer to {req.messages[-1].content}", finish_reason="stop")


def _requests(n: int) -> list[ChatRequest]:
    return [ChatRequest.chat(f"prompt {i}") for i in range(n)]


def test_cached_answers_are_done_at_once_and_the_time_left_counts_new_calls_only(tmp_path):
    gateway = Gateway(SlowBackend(), cache_dir=tmp_path / "cache")
    gateway.complete(_requests(20))  # 20 of the 30 are cached
    stream, start = io.StringIO(), CLOCK["now"]
    results = complete(gateway, _requests(30), "respond", unit="responses", every_steps=5, stream=stream, tty=False,
                       clock=lambda: CLOCK["now"] - start)
    assert [r.text for r in results] == [f"answer to prompt {i}" for i in range(30)]
    assert stream.getvalue().splitlines() == [
        "respond: 25/30 responses, 10s elapsed, ~10s left",  # 5 new in 10 s: 5 more take 10 s, whatever was cached
        "respond: 30/30 responses, 20s elapsed",
    ]
    assert gateway.stats.cache_hits == 20 and gateway.stats.cache_invalid == 0  # the look ahead counted nothing


def _inst(i: int) -> InducedInstruction:
    return InducedInstruction(id=f"ins-{i}", parent_id=f"src-{i}", instruction=f"do thing {i}", source_text="s",
                              category="other", candidate=0, model="m", cache_key=f"k{i}")


def test_respond_prints_progress_lines_with_the_fake_backend(tmp_path, capsys):
    params = ExpertParams(backend="fake", options={"template": "I'm sorry, but I can't help with {user}."})
    rows = [_inst(i) for i in range(12)]
    respond(rows, REPO / "prompts" / "expert.md", params, tmp_path / "cache")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["respond: 10/12 responses", "respond: 12/12 responses"]
    assert "elapsed" in lines[0] and "left" in lines[0]
    respond(rows, REPO / "prompts" / "expert.md", params, tmp_path / "cache", progress=False)
    assert capsys.readouterr().err == ""


class CountingCache:
    """Wraps a gateway's cache to count reads: the progress reporter must not read the cache a second time."""

    def __init__(self, cache):
        self.cache, self.reads = cache, 0

    def __getattr__(self, name):
        return getattr(self.cache, name)

    def get(self, key):
        self.reads += 1
        return self.cache.get(key)


def test_each_cache_entry_is_read_once_and_a_torn_one_is_counted_once(tmp_path):
    gateway = Gateway(SlowBackend(), cache_dir=tmp_path / "cache")
    requests = _requests(6)
    gateway.complete(requests)
    torn = gateway.cache._path(gateway.key(requests[0]))
    torn.write_text('{"text": "half', encoding="utf-8")  # what a crash mid-write of an old version left
    gateway = Gateway(SlowBackend(), cache_dir=tmp_path / "cache")
    gateway.cache = counting = CountingCache(gateway.cache)
    stream = io.StringIO()
    results = complete(gateway, requests, "respond", stream=stream, tty=False, clock=lambda: CLOCK["now"])
    assert [r.text for r in results] == [f"answer to prompt {i}" for i in range(6)]
    assert counting.reads == 6  # one look per request, by the gateway alone
    assert gateway.stats.cache_invalid == 1 and gateway.stats.cache_hits == 5
    assert stream.getvalue().splitlines()[-1].startswith("respond: 6/6 calls")


def test_log_lines_come_every_tenth_of_a_long_run(tmp_path):
    gateway = Gateway(SlowBackend(), cache_dir=tmp_path / "cache")
    stream, start = io.StringIO(), CLOCK["now"]
    complete(gateway, _requests(200), "evaluate", unit="answers", stream=stream, tty=False, every_seconds=10_000,
             clock=lambda: CLOCK["now"] - start)
    counts = [line.split(" answers")[0].split()[-1] for line in stream.getvalue().splitlines()]
    assert counts == [f"{n}/200" for n in range(20, 201, 20)]
