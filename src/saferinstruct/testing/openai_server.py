"""A loopback OpenAI-compatible server for tests and benchmarks: real HTTP (aiohttp), port 0, a background thread.

    with OpenAIServer(latency_s=0.05) as server:
        client = OpenAI(base_url=server.base_url, api_key="k")
        server.inject("429", times=1, retry_after=1)   # the next request gets a 429 with Retry-After: 1
        ...
        assert server.calls == 3

Replies are deterministic (derived from the prompt, or from ``responder``); usage counts whitespace tokens, so tests
can predict cost. Every chat request is logged (arrival time, last user message, fault served) for assertions.

``echo_label`` makes it a judge that quotes what it judges: the reply repeats the last user message, data blocks and
all, then gives its own verdict (a JSON object or a ``label:`` line); asked for ``response_format``, it answers the
JSON verdict alone, its rationale quoting the message. ``reject_response_format`` answers any request carrying
``response_format`` with HTTP 400, as servers without structured output do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Fault = Literal["429", "500", "slow", "malformed", "no_choices", "content_filter", "content_policy", "invalid_prompt",
                "refusal", "401", "400"]


@dataclass
class FaultRule:
    """Serve ``fault`` to requests whose last user message contains ``match`` (any if None), ``times`` times
    (None: for ever)."""

    fault: Fault
    match: str | None = None
    times: int | None = 1
    retry_after: float | None = None  # seconds, for 429


@dataclass
class LoggedRequest:
    n: int
    t: float  # time.monotonic() at arrival
    path: str
    model: str
    user: str
    fault: str | None
    authorization: str
    body: dict[str, Any] = field(repr=False, default_factory=dict)


def last_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def default_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic text derived from the whole prompt: same prompt, same reply; another prompt, another reply."""
    digest = hashlib.sha256(repr([(m.get("role"), m.get("content")) for m in messages]).encode()).hexdigest()[:12]
    return f"reply {digest} to: {last_user(messages)[:60]}"


class OpenAIServer:
    def __init__(self, latency_s: float = 0.0, model: str = "test-model", api_key: str | None = None,
                 responder: Callable[[list[dict[str, Any]]], str] | None = None, slow_s: float = 5.0,
                 keep_bodies: bool = True, echo_label: str | None = None,
                 echo_format: Literal["json", "line"] = "json", reject_response_format: bool = False):
        self.latency_s = latency_s
        self.model = model
        self.api_key = api_key  # when set, requests with another bearer token get a 401
        self.responder = responder or default_reply
        self.slow_s = slow_s  # how long a "slow" fault stalls (set it past the client's timeout)
        self.keep_bodies = keep_bodies
        self.echo_label, self.echo_format = echo_label, echo_format
        self.reject_response_format = reject_response_format
        self.rules: list[FaultRule] = []
        self.log: list[LoggedRequest] = []
        self.in_flight = self.max_in_flight = 0  # concurrent chat requests now / at the peak
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- control, from the test's thread --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def calls(self) -> int:
        """Chat-completion requests received (every attempt, retries included)."""
        return sum(1 for r in self.log if r.path.endswith("/chat/completions"))

    def inject(self, fault: Fault, match: str | None = None, times: int | None = 1,
               retry_after: float | None = None) -> FaultRule:
        rule = FaultRule(fault, match, times, retry_after)
        with self._lock:
            self.rules.append(rule)
        return rule

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()
            self.max_in_flight = 0

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="openai-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("loopback OpenAI server did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    # -- the server, in its own thread ----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        await self._runner.cleanup()  # type: ignore[union-attr]
        # Handlers still stalling on a "slow" fault outlive the runner's grace period: end them quietly.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _take_fault(self, user: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.match is None or rule.match in user) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    async def _models(self, request: web.Request) -> web.Response:
        with self._lock:
            self.log.append(LoggedRequest(len(self.log), time.monotonic(), request.path, "", "", None,
                                          request.headers.get("Authorization", "")))
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "saferinstruct-test"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages", [])
        user = last_user(messages)
        auth = request.headers.get("Authorization", "")
        authorized = not self.api_key or auth == f"Bearer {self.api_key}"
        rule = self._take_fault(user) if authorized else None
        fault = (rule.fault if rule else None) if authorized else "401"
        with self._lock:
            self.log.append(LoggedRequest(len(self.log), time.monotonic(), request.path, body.get("model", ""), user,
                                          fault, auth, body if self.keep_bodies else {}))
        self.in_flight += 1  # only this thread's loop touches it
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return await self._respond(fault, rule, body, messages)
        finally:
            self.in_flight -= 1

    async def _respond(self, fault: str | None, rule: FaultRule | None, body: dict[str, Any],
                       messages: list[dict[str, Any]]) -> web.Response:
        if fault == "401":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if fault == "429":
            headers = {"Retry-After": f"{rule.retry_after:g}"} if rule and rule.retry_after is not None else {}
            return _error(429, "Rate limit reached.", "requests", "rate_limit_exceeded", headers)
        if fault == "500":
            return _error(500, "The server had an error.", "server_error", None)
        if fault == "400":  # a request the server will not take, whatever the prompt
            return _error(400, "Invalid value for 'top_p'.", "invalid_request_error", None)
        if fault == "content_policy":
            return _error(400, "Your request was rejected as a result of our safety system.", "invalid_request_error",
                          "content_policy_violation")
        if fault == "invalid_prompt":
            return _error(400, "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
                          "invalid_request_error", "invalid_prompt")
        if self.reject_response_format and "response_format" in body:
            return _error(400, "Unrecognized request argument supplied: response_format", "invalid_request_error",
                          None)
        if fault == "malformed":
            return web.Response(status=200, text='{"id": "x", "choices": [', content_type="application/json")
        if fault == "no_choices":  # valid JSON, wrong shape
            return web.json_response({"id": "chatcmpl-test", "object": "chat.completion", "choices": []})
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        text = self._reply(messages, structured="response_format" in body)
        finish, refusal = "stop", None
        if fault == "content_filter":
            text, finish = "", "content_filter"
        elif fault == "refusal":
            text, refusal = None, "I'm sorry, I cannot help with that."
        return web.json_response(_completion(body.get("model", self.model), messages, text, finish, refusal))

    def _reply(self, messages: list[dict[str, Any]], structured: bool) -> str:
        if self.echo_label is None:
            return self.responder(messages)
        user = last_user(messages)
        verdict = {"label": self.echo_label, "score": 0.9, "rationale": "the echo judge's own verdict"}
        if structured:
            return json.dumps({**verdict, "rationale": f"I was shown: {user}"})
        own = json.dumps(verdict) if self.echo_format == "json" else f"label: {self.echo_label}"
        return f"You asked me to judge this:\n{user}\n\nMy verdict:\n{own}"


def _error(status: int, message: str, type_: str, code: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(payload, status=status, headers=headers)


def _completion(model: str, messages: list[dict[str, Any]], text: str | None, finish: str,
                refusal: str | None) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len((text or refusal or "").split())
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
