"""The "openai" backend against a real-HTTP loopback server: outcomes, retries, limits, keys, identity."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import openai
import pytest

from saferinstruct.judging.backend_options import secrets_for
from saferinstruct.judging.base import JudgeItem
from saferinstruct.judging.factory import JudgeSpec, build_judge
from saferinstruct.llm.base import BackendConfigError, ChatRequest, make_backend
from saferinstruct.llm.gateway import Gateway
from saferinstruct.testing.openai_server import OpenAIServer, default_reply
from conftest import REPO

KEY = "sk-test-7f3a9c1e5b"


@pytest.fixture
def server():
    with OpenAIServer(api_key=KEY, slow_s=1.5) as srv:
        yield srv


def backend(server: OpenAIServer, **opts):
    options = {"base_url": server.base_url, "model": "test-model", "api_key_env": "TEST_KEY", "max_retries": 2,
               "timeout_s": 5.0, **opts}
    return make_backend("openai", options, secrets={"TEST_KEY": KEY})


def run(backend_, requests):
    return dict(backend_.run(requests))


def test_ok_reply_tokens_and_finish(server):
    reqs = [ChatRequest.chat("one two three", system="be brief"), ChatRequest.chat("four")]
    out = run(backend(server), reqs)
    assert out[0].outcome == "ok" and out[0].finish_reason == "stop"
    assert out[0].text == default_reply([{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "one two three"}])
    assert out[0].prompt_tokens == 5 and out[0].completion_tokens == len(out[0].text.split())
    assert out[1].text != out[0].text
    assert server.calls == 2 and server.log[0].authorization == f"Bearer {KEY}"


def test_server_lists_its_model(server):
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["test-model"]
    client.close()


def test_identity_pins_model_not_deployment(server):
    base = backend(server).identity()
    assert base == "openai:127.0.0.1/test-model"
    assert backend(server, concurrency=3, timeout_s=1, max_retries=0, rpm=10, tpm=99).identity() == base
    assert backend(server, base_url="http://127.0.0.1:1/v1").identity() == base  # port: deployment detail
    assert backend(server, revision="2024-08-06").identity() == base + "@2024-08-06"
    assert backend(server, model="other").identity() != base
    assert backend(server, extra_body={"top_k": 5}).identity() != base
    assert KEY not in repr(backend(server).options.model_dump())


def test_seed_varies_with_sample_index(server):
    reqs = [ChatRequest.chat("x", sample_index=k, params={"temperature": 0.7, "seed": 10}) for k in range(3)]
    run(backend(server), reqs)
    assert sorted(r.body["seed"] for r in server.log) == [10, 11, 12]
    assert {r.body["max_tokens"] for r in server.log} == {256}


def test_backend_keeps_only_its_own_secret(server):
    b = make_backend("openai", {"base_url": server.base_url, "model": "m", "api_key_env": "K"},
                     secrets={"K": KEY, "OTHER_TOKEN": "x", "HOME": "/root"})
    assert b.secrets == {"K": KEY}
    assert make_backend("openai", {"model": "m", "api_key_env": None}, secrets={"K": KEY}).secrets == {}


def test_default_api_key_env_is_read_when_left_out(server, monkeypatch, tmp_path):
    """``api_key_env`` defaults to OPENAI_API_KEY: params that leave it out still send that variable's key."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    spec = JudgeSpec(backend="openai", model="test-model", options={"base_url": server.base_url, "max_retries": 0})
    secrets = secrets_for(spec.options, os.environ)
    judge = build_judge(spec, REPO / "prompts" / "judge_instruction.md", tmp_path / "cache", secrets)
    [verdict] = judge.judge([JudgeItem(id="i", instruction="x")])
    assert verdict.cache_key and server.log[0].authorization == f"Bearer {KEY}"
    assert KEY not in repr(secrets) and judge.gateway.backend.secrets == {"OPENAI_API_KEY": KEY}
    monkeypatch.setenv("OPENAI_API_KEY", "")  # empty counts as unset: the error names the variable
    b = make_backend("openai", {"base_url": server.base_url, "model": "m"}, secrets=secrets_for({}, os.environ))
    with pytest.raises(BackendConfigError, match="OPENAI_API_KEY"):
        run(b, [ChatRequest.chat("x")])


def test_missing_key_is_a_config_error(server):
    b = make_backend("openai", {"base_url": server.base_url, "model": "m", "api_key_env": "NOPE_KEY"})
    with pytest.raises(BackendConfigError, match="NOPE_KEY"):
        run(b, [ChatRequest.chat("x")])
    assert server.calls == 0


def test_wrong_key_fails_fast_without_leaking_it(server):
    b = make_backend("openai", {"base_url": server.base_url, "model": "m", "api_key_env": "K", "concurrency": 1},
                     secrets={"K": "sk-wrong-123"})
    with pytest.raises(BackendConfigError, match="HTTP 401") as err:
        run(b, [ChatRequest.chat(f"x{i}") for i in range(10)])
    assert "sk-wrong-123" not in str(err.value)
    assert server.calls == 1  # no retry, no second request: every row would fail the same way


@pytest.mark.parametrize(("fault", "outcome"), [
    ("content_filter", "content_filter"), ("content_policy", "content_filter"), ("invalid_prompt", "invalid_prompt"),
    ("refusal", "refused")])
def test_provider_rejections_are_outcomes_not_retried(server, fault, outcome, tmp_path):
    server.inject(fault, match="bad", times=None)
    gw = Gateway(backend(server), tmp_path)
    res = gw.complete([ChatRequest.chat("bad thing"), ChatRequest.chat("good thing")])
    assert [r.outcome for r in res] == [outcome, "ok"]
    assert server.calls == 2  # not retried
    Gateway(backend(server), tmp_path).complete([ChatRequest.chat("bad thing")])
    assert server.calls == 2  # a recorded outcome is cached like any answer


def test_429_honours_retry_after(server):
    server.inject("429", times=1, retry_after=1)
    out = run(backend(server), [ChatRequest.chat("x")])
    assert out[0].outcome == "ok" and server.calls == 2
    gap = server.log[1].t - server.log[0].t
    assert 0.95 <= gap < 3  # the client's own backoff would have waited under 0.5 s


@pytest.mark.parametrize("fault", ["500", "429", "slow"])
def test_transient_fault_is_retried(server, fault):
    server.inject(fault, times=1)
    out = run(backend(server, timeout_s=0.5), [ChatRequest.chat("x")])
    assert out[0].outcome == "ok" and server.calls == 2


@pytest.mark.parametrize(("fault", "calls"), [("500", 3), ("slow", 3), ("malformed", 1), ("no_choices", 1)])
def test_persistent_failure_is_an_uncached_error(server, fault, calls, tmp_path):
    server.inject(fault, times=None)
    gw = Gateway(backend(server, timeout_s=0.3), tmp_path)
    [res] = gw.complete([ChatRequest.chat("x")])
    assert res.outcome == "error" and res.error and server.calls == calls  # 1 + max_retries, or not retried
    server.reset()
    [again] = Gateway(backend(server), tmp_path).complete([ChatRequest.chat("x")])
    assert again.outcome == "ok" and not again.cached and server.calls == 1  # the error was not cached


def test_consecutive_errors_stop_the_run(server):
    server.inject("500", times=None)
    with pytest.raises(BackendConfigError, match="5 calls in a row failed"):
        run(backend(server, max_retries=0, max_consecutive_errors=5, concurrency=1),
            [ChatRequest.chat(f"x{i}") for i in range(20)])
    assert server.calls == 5


def test_concurrency_is_bounded(server):
    server.latency_s = 0.05
    run(backend(server, concurrency=4), [ChatRequest.chat(f"x{i}") for i in range(24)])
    assert 1 < server.max_in_flight <= 4


def test_request_rate_limit(server):
    reqs = [ChatRequest.chat(f"x{i}") for i in range(40)]
    start = time.monotonic()
    run(backend(server, rpm=1200, concurrency=40), reqs)  # 20/s: a burst of 20, then 20 more take 1 s
    assert time.monotonic() - start >= 0.9
    # The pacing reaches the server: the last request cannot arrive before the limiter lets it go (same monotonic
    # clock; measured from the start, not from the first arrival, which a slow connection set-up can delay).
    assert server.log[-1].t - start >= 0.9


def test_token_rate_limit(server):
    reqs = [ChatRequest.chat(f"x{i}", params={"max_tokens": 500}) for i in range(4)]  # ~505 tokens each
    start = time.monotonic()
    run(backend(server, tpm=60_000, concurrency=4), reqs)  # 1,000 tokens/s: ~2,000 tokens take ~1 s
    assert time.monotonic() - start >= 0.8


def test_results_stream_in_completion_order(server):
    server.responder, server.slow_s = (lambda msgs: msgs[-1]["content"]), 0.3
    server.inject("slow", match="slow", times=1)
    order = [i for i, _ in backend(server, timeout_s=5).run([ChatRequest.chat("slow"), ChatRequest.chat("fast")])]
    assert order == [1, 0]  # the gateway can cache the fast one while the slow one is still out


def test_httpx_transport_behaves_alike(server):
    server.inject("500", match="a", times=1)
    server.inject("slow", match="b", times=None)
    out = run(backend(server, http_client="httpx", timeout_s=0.3, max_retries=1),
              [ChatRequest.chat("a"), ChatRequest.chat("b"), ChatRequest.chat("c")])
    assert [out[i].outcome for i in range(3)] == ["ok", "error", "ok"]
    assert "Timeout" in (out[1].error or "") and server.calls == 5  # a: 2 attempts, b: 2 timeouts, c: 1


# --- an unreachable server: seconds, and the real cause ------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
@pytest.mark.parametrize("max_retries", [0, 6])
def test_refused_connection_stops_at_once_naming_the_cause(http_client, max_retries):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    b = make_backend("openai", {"base_url": url, "model": "m", "api_key_env": None, "max_retries": max_retries,
                                "http_client": http_client})
    start = time.monotonic()
    with pytest.raises(BackendConfigError, match=f"cannot connect to {url}: connection refused"):
        run(b, [ChatRequest.chat(f"x{i}") for i in range(20)])
    assert time.monotonic() - start < 10  # was: every call's retries, then "Request timed out"


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_connect_timeout_is_separate_from_the_read_timeout(http_client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog: further connects hang
            b = make_backend("openai", {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "api_key_env": None,
                                        "connect_timeout_s": 0.5, "timeout_s": 60, "http_client": http_client})
            start = time.monotonic()
            with pytest.raises(BackendConfigError, match=r"no connection within connect_timeout_s \(0.5 s\)"):
                run(b, [ChatRequest.chat("x")])
            assert time.monotonic() - start < 5
    assert "connect_timeout_s" in b.unkeyed_options()  # tuning it never invalidates the cache


def test_short_connect_timeout_leaves_slow_answers_alone(server):
    server.inject("slow", times=1)  # stalls 1.5 s after the connection is made
    out = run(backend(server, connect_timeout_s=0.2, timeout_s=5, max_retries=0), [ChatRequest.chat("x")])
    assert out[0].outcome == "ok" and server.calls == 1


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_server_gone_after_answering_is_an_error_naming_the_cause(http_client):
    with OpenAIServer() as srv:
        b = make_backend("openai", {"base_url": srv.base_url, "model": "m", "api_key_env": None, "max_retries": 0,
                                    "http_client": http_client})
        assert run(b, [ChatRequest.chat("x")])[0].outcome == "ok"
    out = run(b, [ChatRequest.chat("y")])  # the server was reachable once: a per-call error, retried next run
    assert out[0].outcome == "error" and out[0].error == f"cannot connect to {srv.base_url}: connection refused"
