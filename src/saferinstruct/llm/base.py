"""The model gateway's contract: chat requests in, typed results out, one backend class per kind of model.

A backend is one class with validated ``Options`` and one abstract method, :meth:`Backend.run`, which yields
``(index, result)`` pairs as results finish (in any order), so the gateway can write each one to the call cache the
moment it exists: a crash loses at most the calls still in flight. Built-in backends register exactly like external
ones (``@register_backend`` here, or the ``saferinstruct.backends`` entry-point group).

Secrets (API keys) never live in ``options``, which are hashed into cache keys and logged: the stage reads the
environment and hands them over with ``make_backend(..., secrets=...)``; a backend looks up only the names its options
declare.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from saferinstruct.params import Params, ParamsError, parse_section

Outcome = Literal["ok", "content_filter", "refused", "invalid_prompt", "error"]


class BackendConfigError(ParamsError):
    """The backend cannot work as configured (missing or wrong key, unknown model, unreachable server): a one-line
    stage error that names the fix, raised instead of recording the same failure for every row."""


class Drain(Exception):  # noqa: N818 - a signal, not an error
    """Thrown into a running :meth:`Backend.run` generator by the gateway when it must stop early (budget reached, the
    consumer failed): launch nothing new, keep yielding the calls already in flight (they are paid for), then return.
    A backend that does not catch it simply stops."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(Params):
    """Decoding settings; part of every cache key."""

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...]
    params: GenerationParams = Field(default_factory=GenerationParams)
    # Distinguishes otherwise identical sampled requests (candidate k of n); part of the cache key.
    sample_index: int = 0

    @classmethod
    def chat(cls, user: str, system: str | None = None, **kw: Any) -> ChatRequest:
        msgs = ([Message(role="system", content=system)] if system else []) + [Message(role="user", content=user)]
        return cls(messages=tuple(msgs), **kw)


class ChatResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    outcome: Outcome = "ok"
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cache_key: str = ""
    cached: bool = False


class Backend(ABC):
    """One kind of model. Subclasses set ``name`` and ``Options`` and implement :meth:`run`."""

    name: ClassVar[str]
    Options: ClassVar[type[Params]] = Params
    # Environment values the stage handed over (see make_backend); never hashed, logged or written.
    secrets: Mapping[str, str] = {}

    def __init__(self, options: Params | dict[str, Any] | None = None):
        self.options = options if isinstance(options, Params) else self.parse_options(options)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None, section: str | None = None) -> Params:
        """``options`` validated against :attr:`Options`; a wrong or misspelled key is a one-line
        :class:`BackendConfigError` naming ``section.key`` and the closest known option."""
        try:
            return parse_section(dict(options or {}), section or f"{cls.name}.options", cls.Options)
        except ParamsError as err:
            raise BackendConfigError(str(err)) from None

    def identity(self) -> str:
        """Pinned model identity for the cache key (name plus revision or weights hash). Override when known."""
        opts = self.options.model_dump(exclude=self.unkeyed_options())
        return f"{self.name}:{json.dumps(opts, sort_keys=True, default=str)}"

    def unkeyed_options(self) -> set[str]:
        """Options that do not change outputs (concurrency, timeouts, keys): left out of the identity."""
        return set()

    def secret_names(self) -> set[str]:
        """Environment variables this backend needs from the stage (e.g. the one its ``api_key_env`` names)."""
        return set()

    @abstractmethod
    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        """Yield ``(index into requests, result)`` for every request, in completion order. A failed call is a result
        with ``outcome="error"`` (not cached, so a re-run retries it); raise only when no call can succeed
        (:class:`BackendConfigError`). Concurrent backends should honour :class:`Drain`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients or models."""


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        _load_builtin_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"unknown backend '{name}' (known: {known})") from None


def known_backends() -> list[str]:
    """Every backend name that can be built here (builtins whose dependency is installed, and plugins)."""
    _load_builtin_and_plugins()
    return sorted(_REGISTRY)


def _load_builtin_and_plugins() -> None:
    import importlib

    for mod in ("fake", "openai_backend", "local", "vllm_backend"):
        try:
            importlib.import_module(f"saferinstruct.llm.{mod}")
        except ModuleNotFoundError as err:  # a builtin whose optional dependency is missing
            if not (err.name or "").startswith("saferinstruct"):
                continue
            if err.name != f"saferinstruct.llm.{mod}":
                raise
    for ep in entry_points(group="saferinstruct.backends"):
        ep.load()


def make_backend(name: str, options: Params | dict[str, Any] | None = None,
                 secrets: Mapping[str, str] | None = None, section: str | None = None) -> Backend:
    """Build a backend by name; ``secrets`` maps environment variable names to values (e.g. ``os.environ``), of which
    the backend keeps only the ones it names in :meth:`Backend.secret_names`. ``section`` is where the options come
    from in params.yaml (e.g. ``judge_instructions.options``), named in the error for a misspelled option."""
    cls = backend_class(name)
    backend = cls(options if isinstance(options, Params) else cls.parse_options(options, section))
    if secrets:
        backend.secrets = {k: secrets[k] for k in backend.secret_names() if k in secrets}
    return backend


def cache_key(identity: str, request: ChatRequest) -> str:
    """Content address of one call: backend identity + rendered messages + generation params + sample index."""
    payload = {"identity": identity, "request": request.model_dump(mode="json")}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
