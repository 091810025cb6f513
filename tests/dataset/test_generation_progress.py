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
