"""Params pieces shared by every model-calling role (judges, expert): prices, the model name, the key's env var."""

from __future__ import annotations

from collections.abc import Mapping
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


def secrets_for(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Only the environment variable the backend options name (``api_key_env``), for ``secrets=`` arguments."""
    name = options.get("api_key_env")
    return {name: environ[name]} if isinstance(name, str) and environ.get(name) else {}
