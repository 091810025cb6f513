"""The ``openai`` backend end to end against ``transformers serve`` (transformers' own OpenAI-compatible server, extra
``serving``) on loopback: the API path proven against a server this project did not write.

The server is pinned to a local model directory (offline) and applies the model's chat template with a generation
prompt, exactly as the in-process ``transformers`` backend does, so greedy answers must be identical token for token.
A second gateway run over the same call cache must not reach the server at all (counted in its access log).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from saferinstruct.llm.base import ChatRequest, ChatResult, make_backend
from saferinstruct.llm.gateway import Gateway

for _module in ("fastapi", "uvicorn"):
    pytest.importorskip(_module, reason="`transformers serve` needs the serving extra: "
                                        "pip install -c constraints.txt -e '.[serving]'")

STARTUP_TIMEOUT_S = 240  # importing transformers and loading the model; minutes on a busy 2-core CI box
CHAT_CALL = '"POST /v1/chat/completions HTTP/1.1" 200'  # one uvicorn access-log line per answered chat call

REQUESTS = [
    ChatRequest.chat("Write a short poem about the sea.", params={"max_tokens": 12}),
    ChatRequest.chat("How do I bake bread?", system="You are a helpful and harmless assistant.",
                     params={"max_tokens": 8}),
    ChatRequest.chat("What is the capital of France?", params={"max_tokens": 24}),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(proc: subprocess.Popen, port: int, log: Path) -> None:
    """Poll /health (the model is loaded before the server starts listening); fail with the server's log tail."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if json.load(resp).get("status") == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"transformers serve not ready after {STARTUP_TIMEOUT_S} s:\n{_log_tail(log)}")


@contextmanager
def transformers_serve(model_dir: Path, log: Path) -> Iterator[str]:
    """``transformers serve`` pinned to ``model_dir`` on a free loopback port; yields the base URL; always stopped."""
    port = _free_port()
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--log-level", "info"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # CI has 2 cores shared with the test
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(proc, port, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_calls(log: Path) -> int:
    return log.read_text(errors="replace").count(CHAT_CALL)


def openai_options(base_url: str, model_dir: Path, **extra) -> dict:
    # A pinned server answers only requests naming its model: the directory path, as given on its command line.
    return {"base_url": base_url, "model": str(model_dir), "api_key_env": None, "max_retries": 0,
            "timeout_s": 300.0, "concurrency": 1, **extra}


def in_process(model_dir: Path, requests: list[ChatRequest]) -> list[ChatResult]:
    """The same requests through the in-process transformers backend (one per batch: no padding differences)."""
    backend = make_backend("transformers", {"model_path": str(model_dir), "batch_size": 1, "device": "cpu"})
    try:
        return Gateway(backend).complete(requests)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def tiny_server(varied_model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """One server for the module's fast tests (startup is most of their time): (base URL, its log)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with transformers_serve(varied_model_dir, log) as base_url:
        yield base_url, log


def check_served_matches_in_process_and_caches(base_url: str, log: Path, model_dir: Path, calls: Path) -> None:
    before = server_calls(log)
    first = Gateway(make_backend("openai", openai_options(base_url, model_dir)), calls)
    served = first.complete(REQUESTS)
    paid = server_calls(log) - before
    again = Gateway(make_backend("openai", openai_options(base_url, model_dir)), calls)
    cached = again.complete(REQUESTS)
    assert server_calls(log) - before == paid == first.stats.calls == len(REQUESTS), _log_tail(log)
    assert again.stats.calls == 0 and again.stats.cache_hits == len(REQUESTS)
    assert all(r.cached for r in cached) and [r.text for r in cached] == [r.text for r in served]

    for request, api, local in zip(REQUESTS, served, in_process(model_dir, REQUESTS)):
        assert api.outcome == "ok" and api.text.strip(), api
        assert 0 < api.completion_tokens <= request.params.max_tokens
        # The local backend strips surrounding whitespace; the server returns the decoded tokens as they are.
        assert (api.text.strip(), api.finish_reason) == (local.text, local.finish_reason)
        assert (api.prompt_tokens, api.completion_tokens) == (local.prompt_tokens, local.completion_tokens)
    assert first.stats.prompt_tokens == sum(r.prompt_tokens for r in served) > 0


def test_openai_backend_through_transformers_serve_matches_in_process(tiny_server, varied_model_dir, tmp_path):
    check_served_matches_in_process_and_caches(*tiny_server, varied_model_dir, tmp_path / "calls")


def test_transformers_serve_samples_only_when_asked_through_generation_config(tiny_server, varied_model_dir):
    """transformers serve 5.x sets do_sample only for temperature 0 (off); for temperature > 0 it keeps the model's
    generation_config, where do_sample is False: greedy. ``extra_body.generation_config`` turns sampling on, and the
    request's seed (seed + sample_index) makes each candidate a different, reproducible draw."""
    sampled = [ChatRequest.chat("Write a short poem about the sea.", sample_index=k,
                                params={"max_tokens": 12, "temperature": 1.0, "seed": 5}) for k in (0, 1)]
    greedy = ChatRequest.chat("Write a short poem about the sea.", params={"max_tokens": 12})
    sampling = {"extra_body": {"generation_config": json.dumps({"do_sample": True})}}

    def texts(requests: list[ChatRequest], **extra) -> list[str]:  # no call cache: every run reaches the server
        backend = make_backend("openai", openai_options(tiny_server[0], varied_model_dir, **extra))
        return [r.text for r in Gateway(backend).complete(requests)]

    plain = texts([greedy, *sampled])
    drawn, redrawn = texts(sampled, **sampling), texts(sampled, **sampling)
    assert len(set(plain)) == 1, "temperature > 0 without do_sample is greedy on transformers serve"
    assert drawn == redrawn and drawn[0] != drawn[1] and plain[0] not in drawn


@pytest.mark.slow
def test_openai_backend_through_transformers_serve_smollm2(smollm2_dir, tmp_path):
    with transformers_serve(smollm2_dir, tmp_path / "server.log") as base_url:
        check_served_matches_in_process_and_caches(base_url, tmp_path / "server.log", smollm2_dir, tmp_path / "calls")
