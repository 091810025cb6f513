"""A model role: one model doing one job (the inducer, the expert, each judge, the policies under evaluation), given
by the same params shape everywhere and opened by one function, :func:`open_role`::

    backend: transformers   # transformers | vllm | openai | fake | a plugin (judges: also an offline judge)
    model: null             # openai: the model name; transformers/vllm: a model directory (null: the stage's default)
    revision: null          # pins the model beyond its name (openai: a dated snapshot; part of the cache key)
    options: {...}          # the backend's own options: batch_size, dtype, device, engine, base_url, api_key_env, ...
    generation: {max_tokens, temperature, top_p, seed, stop}

Where a value sits in params.yaml is no part of any cache key: the key is the backend's identity (from its validated
options) plus the request (messages and generation), so the same values in another layout hit the same cache entries.
A misspelled backend or option is a one-line error naming ``section.key`` and the closest valid name.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from saferinstruct.llm.base import Backend, GenerationParams, backend_class, known_backends, make_backend
from saferinstruct.llm.gateway import Gateway, Prices
from saferinstruct.params import Params, ParamsError


class PriceParams(Params):
    """USD per million tokens, for the cost figure in stats (and the budget cap)."""

    prompt: float = Field(default=0.0, ge=0.0)
    completion: float = Field(default=0.0, ge=0.0)


class RoleRun(Params):
    """How a role's model runs and decodes. The evaluated policies have only this part: their model is each policy
    directory in turn."""

    backend: str = "transformers"
    options: dict[str, Any] = Field(default_factory=dict)
    generation: GenerationParams = Field(default_factory=GenerationParams)

    @model_validator(mode="before")
    @classmethod
    def _generation_over_role_defaults(cls, data: Any) -> Any:
        """A partial ``generation`` keeps this role's own defaults for the keys it leaves out (induce samples with
        temperature 0.7 and top_p 0.9 unless told otherwise), not the bare GenerationParams ones."""
        given = data.get("generation") if isinstance(data, dict) else None
        if isinstance(given, dict):
            default = cls.model_fields["generation"].get_default(call_default_factory=True)
            data = {**data, "generation": {**default.model_dump(), **given}}
        return data


class Role(RoleRun):
    """A role with its own model."""

    # openai: the model name; transformers/vllm: a model directory. null: the stage's default model (a local backend).
    model: str | None = None
    # Pins the model beyond its name, for backends that take one (openai: part of the cache key).
    revision: str | None = None


class PaidRole(Role):
    """A role whose calls may cost money (expert, judges): prices for the stats and a budget cap."""

    prices: PriceParams = Field(default_factory=PriceParams)
    budget_usd: float | None = Field(default=None, gt=0.0)


def backend_class_at(name: str, section: str, also: Sequence[str] = ()) -> type[Backend]:
    """The backend class ``section.backend`` names, or a one-line error with the closest known name (``also``: other
    names valid there, e.g. the offline judges)."""
    try:
        return backend_class(name)
    except ValueError:
        pass
    known = sorted({*known_backends(), *also})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    extra = "; vllm needs `pip install 'saferinstruct[gpu]'` on a GPU machine" if name == "vllm" else ""
    raise ParamsError(f"params.yaml: '{section}.backend': unknown backend '{name}'{hint}; "
                      f"known: {', '.join(known) or 'none'}{extra}")


def takes_model_path(cls: type[Backend]) -> bool:
    """A local-model backend (transformers, vllm): its model is a directory, its ``model_path`` option."""
    return "model_path" in cls.Options.model_fields


def role_options(role: RoleRun, section: str, default_model: str | None = None) -> dict[str, Any]:
    """The role's backend options with ``model`` and ``revision`` put where the backend takes them (openai: ``model``;
    local backends: ``model_path``); a local backend with no model given gets ``default_model`` (the stage's)."""
    cls = backend_class_at(role.backend, section)
    out = dict(role.options)
    model, revision = getattr(role, "model", None), getattr(role, "revision", None)
    fields = cls.Options.model_fields
    if model is None and default_model and takes_model_path(cls) and "model_path" not in out:
        model = default_model
    if model is not None:
        key = "model" if "model" in fields else "model_path" if "model_path" in fields else None
        if key is None:
            raise ParamsError(f"params.yaml: '{section}.model': backend '{role.backend}' takes no model name; "
                              f"set its options instead")
        out[key] = model
    if revision is not None:
        if "revision" not in fields:
            raise ParamsError(f"params.yaml: '{section}.revision': backend '{role.backend}' takes no revision (a "
                              "local model is pinned by the hash of its weights); remove it")
        out["revision"] = revision
    return out


def role_backend(role: RoleRun, section: str, default_model: str | None = None,
                 secrets: Mapping[str, str] | None = None) -> Backend:
    """The role's backend, its options validated (a wrong option names ``section.options.key``)."""
    backend_class_at(role.backend, section)
    return make_backend(role.backend, role_options(role, section, default_model), secrets=secrets,
                        section=f"{section}.options")


def check_role(role: RoleRun, section: str, default_model: str = "model") -> None:
    """Validate the role's backend name and options without building anything (a stage calls it before reading its
    inputs, so a typo fails at once)."""
    backend_class_at(role.backend, section).parse_options(role_options(role, section, default_model),
                                                          f"{section}.options")


def open_role(role: RoleRun, section: str, cache_dir: Path | str | None = None, default_model: str | None = None,
              secrets: Mapping[str, str] | None = None) -> Gateway:
    """The one way a stage opens a model role: its backend behind the call cache, with the role's prices and budget
    when it has them."""
    backend = role_backend(role, section, default_model, secrets)
    if isinstance(role, PaidRole):
        return Gateway(backend, cache_dir=cache_dir, prices=Prices(role.prices.prompt, role.prices.completion),
                       budget_usd=role.budget_usd)
    return Gateway(backend, cache_dir=cache_dir)
