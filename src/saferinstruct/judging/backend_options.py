"""Params pieces shared by every model-calling role (judges, expert): prices, the model name, the key's env var."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from saferinstruct.llm.base import Backend, backend_class
from saferinstruct.params import Params, ParamsError


class PriceParams(Params):
    """USD per million tokens, for the cost figure in stats (and the budget cap)."""

    prompt: float = Field(default=0.0, ge=0.0)
    completion: float = Field(default=0.0, ge=0.0)


def checked_backend_class(name: str, also: str = "") -> type[Backend]:
    """The gateway backend class, or a one-line config error listing the known names (plus ``also``)."""
    try:
        return backend_class(name)
    except ValueError as err:
        raise ParamsError(f"{err}{also}") from None


def with_model(backend: str, options: Mapping[str, Any], model: str | None) -> dict[str, Any]:
    """``options`` plus ``model`` under the key the backend names it (openai: ``model``; local: ``model_path``)."""
    out = dict(options)
    fields = checked_backend_class(backend).Options.model_fields
    if model is None:
        return out
    key = "model" if "model" in fields else "model_path" if "model_path" in fields else None
    if key is None:
        raise ParamsError(f"backend '{backend}' takes no model name; set its options instead")
    out[key] = model
    return out


class EnvironmentSecrets(Mapping[str, str]):
    """The environment as a ``secrets=`` argument: :func:`~saferinstruct.llm.base.make_backend` reads from it exactly
    the variables the backend names (:meth:`Backend.secret_names` on its validated options, so an ``api_key_env`` left
    at its default counts). An empty variable counts as unset. The repr shows no values."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self._environ[name]
        if not value:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name, value in self._environ.items() if value)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<{len(self)} variables>)"


def secrets_for(options: Mapping[str, Any], environ: Mapping[str, str]) -> EnvironmentSecrets:
    """The ``secrets=`` argument for a backend built from ``options``. The options are not read here: only the backend
    knows its defaults, so the names are picked in ``make_backend`` from the validated options (a raw-options look-up
    missed the default ``api_key_env: OPENAI_API_KEY``)."""
    return EnvironmentSecrets(environ)
