"""Backend "openai": any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, TGI).

Calls run concurrently on a private event loop (bounded by ``concurrency``, paced by ``rpm``/``tpm``), and ``run``
yields each result the moment it finishes, so the gateway caches it at once. Retries with exponential backoff that
honours Retry-After are the ``openai`` client's own (``max_retries``). Our inputs are harmful by design, so a provider's
content filter, an invalid-prompt rejection or a model refusal is a recorded outcome, never retried; a call that still
fails after its retries is outcome ``error`` (not cached: a re-run retries it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

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
    max_retries: int = Field(default=6, ge=0)
    # Stop the run (cleanly, everything so far cached) when this many calls in a row fail: the server is down.
    max_consecutive_errors: int = Field(default=50, ge=1)
    # HTTP transport under the openai client: aiohttp spends ~25% less CPU per call than httpx at high concurrency.
    http_client: Literal["httpx", "aiohttp"] = "aiohttp"
    # Newer OpenAI models only accept max_completion_tokens; most other servers only max_tokens.
    token_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Server-specific sampling fields (e.g. vLLM's top_k, repetition_penalty): they change outputs, so they are keyed.
    extra_body: dict[str, Any] = Field(default_factory=dict)


_UNKEYED = {"base_url", "api_key_env", "concurrency", "rpm", "tpm", "timeout_s", "max_retries",
            "max_consecutive_errors", "http_client", "token_param"}


@register_backend
class OpenAIBackend(Backend):
    name = "openai"
    Options = OpenAIOptions
    options: OpenAIOptions

    def identity(self) -> str:
        """Host + model (+ revision, + keyed server fields). The port and path are deployment details: a restarted
        local server, or a teammate's, shares the cache when it serves the same model."""
        o = self.options
        ident = f"openai:{urlsplit(o.base_url).hostname or o.base_url}/{o.model}"
        ident += f"@{o.revision}" if o.revision else ""
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
        transport = openai.DefaultAioHttpClient if o.http_client == "aiohttp" else openai.DefaultAsyncHttpxClient
        return openai.AsyncOpenAI(base_url=o.base_url, api_key=self._api_key(), max_retries=o.max_retries,
                                  timeout=o.timeout_s, http_client=transport(limits=pool))

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
        try:
            # client.post (the SDK's documented call for any endpoint) with the JSON returned as is: create()'s typed
            # walk over every message and its pydantic response models cost over half the client's CPU per call and
            # add nothing for plain-text chat. Retries, timeouts and error classes are the same.
            response = await client.post("/chat/completions", body=self._payload(request), cast_to=object)
        except openai.BadRequestError as err:
            outcome = _REJECTION_CODES.get(str(err.code or ""), "error")
            return ChatResult(text="", outcome=outcome, error=_describe(err), finish_reason=err.code or None)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
            key = f"the key in ${self.options.api_key_env}" if self.options.api_key_env else "api_key_env"
            raise BackendConfigError(
                f"{self.options.base_url} answered HTTP {err.status_code} ({type(err).__name__}) for model "
                f"'{self.options.model}': check the model name, the base_url and {key}") from None
        except openai.APIError as err:  # timeouts, connection errors, 429/5xx once the client's retries are spent
            return ChatResult(text="", outcome="error", error=_describe(err))
        except ValueError as err:  # a 200 whose body is not JSON
            return ChatResult(text="", outcome="error", error=f"malformed response: {err}")
        return _parse(response)

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        p = request.params
        kw: dict[str, Any] = {"model": self.options.model, "temperature": p.temperature, "top_p": p.top_p,
                              "messages": [m.model_dump() for m in request.messages], self.options.token_param:
                              p.max_tokens}
        if p.seed is not None:
            kw["seed"] = p.seed + request.sample_index  # candidate k of n must not replay candidate 0's sample
        if p.stop:
            kw["stop"] = p.stop
        return {**kw, **self.options.extra_body}


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
