"""Backend "openai": any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, TGI).

Calls run concurrently on a private event loop (bounded by ``concurrency``, paced by ``rpm``/``tpm``), and ``run``
yields each result the moment it finishes, so the gateway caches it at once. Retries with exponential backoff that
honours Retry-After are the ``openai`` client's own (``max_retries``). Our inputs are harmful by design, so a provider's
content filter, an invalid-prompt rejection or a model refusal is a recorded outcome, never retried; a call that still
fails after its retries is outcome ``error`` (not cached: a re-run retries it).

A server that cannot be reached before it has answered once (connection refused, unknown host, no connection within
``connect_timeout_s``) is a configuration error, raised at once without retries; later connection failures are
retried and then reported as "cannot connect to BASE_URL: reason", never as a timeout. ``structured_output`` asks for
a JSON verdict through ``response_format``; a server that rejects it is asked without it from then on.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
from pydantic import Field

from saferinstruct.llm.base import (Backend, BackendConfigError, ChatRequest, ChatResult, Drain, Outcome,
                                    register_backend)
from saferinstruct.llm.ratelimit import RateLimits
from saferinstruct.params import Params

# 400 error codes that mean "the provider will not process this prompt": outcomes, not failures.
_REJECTION_CODES: dict[str, Outcome] = {
    "content_filter": "content_filter",  # Azure OpenAI
    "content_policy_violation": "content_filter",
    "invalid_prompt": "invalid_prompt",
}


class OpenAIOptions(Params):
    base_url: str = "https://api.openai.com/v1"
    model: str = Field(min_length=1)
    # Pins the model beyond its name (a dated snapshot, a weights hash, a quantisation): part of the cache key.
    revision: str | None = None
    # The NAME of the environment variable holding the key; null for servers that need none (vLLM, Ollama).
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(default=16, ge=1)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    # Establishing a connection takes milliseconds; waiting timeout_s for one only delays "server unreachable".
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # Stop the run (cleanly, everything so far cached) when this many calls in a row fail: the server is down.
    max_consecutive_errors: int = Field(default=50, ge=1)
    # HTTP transport under the openai client: aiohttp spends ~25% less CPU per call than httpx at high concurrency.
    http_client: Literal["httpx", "aiohttp"] = "aiohttp"
    # Newer OpenAI models only accept max_completion_tokens; most other servers only max_tokens.
    token_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Server-specific sampling fields (e.g. vLLM's top_k, repetition_penalty): they change outputs, so they are keyed.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Judges: ask for a JSON verdict {label, score, rationale} with response_format (json_schema). Changes outputs, so
    # it is keyed; a server that answers it with HTTP 400 gets the plain prompt instead (parsed the same way).
    structured_output: bool = False


_UNKEYED = {"base_url", "api_key_env", "concurrency", "rpm", "tpm", "timeout_s", "connect_timeout_s", "max_retries",
            "max_consecutive_errors", "http_client", "token_param"}

# The verdict the judge prompts ask for, as a strict JSON schema (labels are checked by the judge's parser).
VERDICT_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["label", "score", "rationale"],
    "properties": {"label": {"type": "string"}, "score": {"type": ["number", "null"]},
                   "rationale": {"type": "string"}}}}}


class _Unreachable(openai.OpenAIError):
    """No connection before the server ever answered. An ``OpenAIError`` because the client passes its own errors
    through without retrying them: a wrong base_url is not worth ``max_retries`` rounds of backoff per call."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Contact:
    reached: bool = False  # the server has answered at least once (any HTTP status)


class _ContactGuard(httpx2.AsyncClient):
    """Mixed into the client's HTTP transport class: until the server has answered once, a failed connection raises
    :class:`_Unreachable` instead of being retried."""

    def __init__(self, *, contact: _Contact, connect_timeout_s: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.contact, self.connect_timeout_s = contact, connect_timeout_s

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            response = await super().send(request, **kwargs)
        except httpx2.TransportError as err:
            reason = None if self.contact.reached else connect_failure(err, self.connect_timeout_s)
            if reason is not None:
                raise _Unreachable(reason) from err
            raise
        self.contact.reached = True
        return response


class _GuardedAiohttpClient(_ContactGuard, openai.DefaultAioHttpClient):
    pass


class _GuardedHttpxClient(_ContactGuard, openai.DefaultAsyncHttpxClient):
    pass


@register_backend
class OpenAIBackend(Backend):
    name = "openai"
    Options = OpenAIOptions
    options: OpenAIOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.contact = _Contact()
        self.structured_fallback = False  # the server rejected response_format: plain prompts from then on

    @property
    def structured_output_state(self) -> str | None:
        """For stats: None when not asked for, else whether the server took response_format."""
        if not self.options.structured_output:
            return None
        return "rejected_by_server" if self.structured_fallback else "json_schema"

    def identity(self) -> str:
        """Host + model (+ revision, + keyed server fields). The port and path are deployment details: a restarted
        local server, or a teammate's, shares the cache when it serves the same model."""
        o = self.options
        ident = f"openai:{urlsplit(o.base_url).hostname or o.base_url}/{o.model}"
        ident += f"@{o.revision}" if o.revision else ""
        ident += " structured_output" if o.structured_output else ""
        return ident + (f" {json.dumps(o.extra_body, sort_keys=True)}" if o.extra_body else "")

    def unkeyed_options(self) -> set[str]:
        return set(_UNKEYED)

    def secret_names(self) -> set[str]:
        return {self.options.api_key_env} if self.options.api_key_env else set()

    def _api_key(self) -> str:
        name = self.options.api_key_env
        if name is None:
            return "EMPTY"  # local servers ignore it; passing one stops the client reading OPENAI_API_KEY itself
        key = self.secrets.get(name)
        if not key:
            raise BackendConfigError(f"environment variable {name} (the backend's api_key_env) is not set: export "
                                     "it, or set api_key_env: null for a server that needs no key")
        return key

    def _client(self) -> openai.AsyncOpenAI:
        o = self.options
        pool = httpx2.Limits(max_connections=o.concurrency, max_keepalive_connections=o.concurrency)
        transport = _GuardedAiohttpClient if o.http_client == "aiohttp" else _GuardedHttpxClient
        http = transport(limits=pool, contact=self.contact, connect_timeout_s=o.connect_timeout_s)
        return openai.AsyncOpenAI(base_url=o.base_url, api_key=self._api_key(), max_retries=o.max_retries,
                                  timeout=httpx2.Timeout(o.timeout_s, connect=o.connect_timeout_s), http_client=http)

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        if not requests:
            return
        client = self._client()
        loop = asyncio.new_event_loop()
        limits = RateLimits(self.options.rpm, self.options.tpm)
        todo = iter(range(len(requests)))
        pending: dict[asyncio.Task[ChatResult], int] = {}
        draining, failures = False, 0
        try:
            while True:
                while not draining and len(pending) < self.options.concurrency:
                    i = next(todo, None)
                    if i is None:
                        break
                    pending[loop.create_task(self._call(client, limits, requests[i]))] = i
                if not pending:
                    return
                done, _ = loop.run_until_complete(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for task in done:
                    i, result = pending.pop(task), task.result()
                    failures = failures + 1 if result.outcome == "error" else 0
                    try:
                        yield i, result
                    except Drain:
                        draining = True
                    if failures >= self.options.max_consecutive_errors and not draining:
                        raise BackendConfigError(
                            f"{failures} calls in a row failed at {self.options.base_url} (last: {result.error}); "
                            "results so far are cached: fix the server or the params, then re-run")
        finally:
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
                for task in pending:  # retrieve what they raised, so asyncio does not log it as never retrieved
                    _ = task.cancelled() or task.exception()
            loop.run_until_complete(client.close())
            loop.close()

    async def _call(self, client: openai.AsyncOpenAI, limits: RateLimits, request: ChatRequest) -> ChatResult:
        await limits.acquire(request)
        structured = self.options.structured_output and not self.structured_fallback
        try:
            return await self._send(client, self._payload(request, structured))
        except openai.BadRequestError as err:
            if not structured:
                return _bad_request(err)
        # A 400 with response_format: ask once without it. If that works, the format was the trouble, and this backend
        # stops sending it (one extra call per call in flight, not one per row).
        await limits.acquire(request)
        try:
            result = await self._send(client, self._payload(request, structured=False))
        except openai.BadRequestError as err:
            return _bad_request(err)
        if result.outcome != "error":
            self.structured_fallback = True
        return result

    async def _send(self, client: openai.AsyncOpenAI, payload: dict[str, Any]) -> ChatResult:
        """One call (with the client's retries); a 400 other than a provider rejection is raised to the caller."""
        try:
            # client.post (the SDK's documented call for any endpoint) with the JSON returned as is: create()'s typed
            # walk over every message and its pydantic response models cost over half the client's CPU per call and
            # add nothing for plain-text chat. Retries, timeouts and error classes are the same.
            response = await client.post("/chat/completions", body=payload, cast_to=object)
        except _Unreachable as err:
            raise BackendConfigError(f"cannot connect to {self.options.base_url}: {err.reason}; check base_url and "
                                     "that the server is running, then re-run") from None
        except openai.BadRequestError as err:
            outcome = _REJECTION_CODES.get(str(err.code or ""))
            if outcome is None:
                raise
            return ChatResult(text="", outcome=outcome, error=_describe(err), finish_reason=err.code or None)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
            key = f"the key in ${self.options.api_key_env}" if self.options.api_key_env else "api_key_env"
            raise BackendConfigError(
                f"{self.options.base_url} answered HTTP {err.status_code} ({type(err).__name__}) for model "
                f"'{self.options.model}': check the model name, the base_url and {key}") from None
        except openai.APIError as err:  # timeouts, connection errors, 429/5xx once the client's retries are spent
            return ChatResult(text="", outcome="error", error=self._failure(err))
        except ValueError as err:  # a 200 whose body is not JSON
            return ChatResult(text="", outcome="error", error=f"malformed response: {err}")
        return _parse(response)

    def _failure(self, err: openai.APIError) -> str:
        """The error text: the real cause of a connection failure (the aiohttp transport calls them all timeouts)."""
        reason = connect_failure(err, self.options.connect_timeout_s)
        return f"cannot connect to {self.options.base_url}: {reason}" if reason else _describe(err)

    def _payload(self, request: ChatRequest, structured: bool) -> dict[str, Any]:
        p = request.params
        kw: dict[str, Any] = {"model": self.options.model, "temperature": p.temperature, "top_p": p.top_p,
                              "messages": [m.model_dump() for m in request.messages], self.options.token_param:
                              p.max_tokens}
        if p.seed is not None:
            kw["seed"] = p.seed + request.sample_index  # candidate k of n must not replay candidate 0's sample
        if p.stop:
            kw["stop"] = p.stop
        if structured:
            kw["response_format"] = VERDICT_FORMAT
        return {**kw, **self.options.extra_body}


def _bad_request(err: openai.BadRequestError) -> ChatResult:
    return ChatResult(text="", outcome="error", error=_describe(err), finish_reason=err.code or None)


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain and len(chain) < 12:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


# aiohttp's connect-phase errors; the transport maps every aiohttp ClientConnectionError (a dropped connection too) to
# httpx's ConnectTimeout, so aiohttp's own class decides. ConnectionTimeoutError is aiohttp >= 3.10.
_AIOHTTP_CONNECT = (aiohttp.ClientConnectorError,
                    getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError))


def connect_failure(err: BaseException, connect_timeout_s: float) -> str | None:
    """Why no connection could be made, when ``err`` (or its causes) failed while connecting; None for failures after
    the connection was made (read timeouts, a dropped connection, HTTP errors)."""
    chain = _causes(err)
    from_aiohttp = [e for e in chain if isinstance(e, aiohttp.ClientError)]
    if from_aiohttp:
        connecting = isinstance(from_aiohttp[0], _AIOHTTP_CONNECT)
    else:
        connecting = any(isinstance(e, (httpx2.ConnectError, httpx2.ConnectTimeout)) for e in chain)
    if not connecting:
        return None
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"unknown host ({e.strerror})"
    if any(isinstance(e, (TimeoutError, httpx2.TimeoutException)) for e in chain):
        return f"no connection within connect_timeout_s ({connect_timeout_s:g} s)"
    return str(chain[-1])[:300] or type(chain[-1]).__name__


def _describe(err: openai.APIError) -> str:
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}{f' (HTTP {status})' if status else ''}: {err.message}"[:500]


def _parse(body: Any) -> ChatResult:
    """A chat completion's JSON into a result; a body of the wrong shape is an ``error`` outcome, not a crash."""
    try:
        choice, usage = body["choices"][0], body.get("usage") or {}
        message, finish = choice["message"], choice.get("finish_reason")
        tokens = {"prompt_tokens": usage.get("prompt_tokens") or 0,
                  "completion_tokens": usage.get("completion_tokens") or 0}
        text, refusal = message.get("content") or "", message.get("refusal")
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        return ChatResult(text="", outcome="error", error=f"malformed response: {type(err).__name__}: {err}")
    if finish == "content_filter":
        return ChatResult(text=text, outcome="content_filter", finish_reason=finish, **tokens)
    if refusal:  # a structured-output refusal (OpenAI): the model declined, in its own words
        return ChatResult(text=str(refusal), outcome="refused", finish_reason=finish, **tokens)
    return ChatResult(text=str(text), finish_reason=finish, **tokens)
