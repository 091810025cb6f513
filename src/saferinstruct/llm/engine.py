"""Where a local backend runs its generation: in this process (``engine: local``) or on a pool of Ray actors
(``engine: ray``), each actor a full replica of the backend (its own model) serving shards of the requests.

The engine is chosen in the role's ``options:`` next to the backend's own options; it never changes an output, so
none of its keys is part of the cache key, and a run on Ray shares its cache with an in-process run. Ray itself is
imported only when ``engine: ray`` runs (:mod:`saferinstruct.llm.ray_engine`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from saferinstruct.llm.base import ChatRequest, ChatResult
from saferinstruct.llm.ray_engine import RAY_MISSING, RayPool
from saferinstruct.params import Params


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def option_conflict(model: Params | type[Params], key: str, value: Any, message: str) -> ValidationError:
    """A validation error located at ``key``, for options that are each valid but do not fit together: raised from a
    model validator, it reads ``params.yaml: 'section.options.key': message`` like any single-key error."""
    title = model.__name__ if isinstance(model, type) else type(model).__name__
    detail = {"type": "value_error", "loc": (key,), "input": value, "ctx": {"error": ValueError(message)}}
    return ValidationError.from_exception_data(title, [detail])  # type: ignore[list-item]


class EngineOptions(Params):
    """The engine keys every local backend's options take (transformers, vllm; fake, for tests)."""

    engine: Literal["local", "ray"] = "local"
    # Requests per call of the backend; on Ray, also the shard size one actor gets at a time.
    batch_size: int = Field(default=16, ge=1)
    # null: a local Ray cluster started for this run; "auto": the cluster this machine belongs to (`ray start`);
    # "ray://HOST:10001": a remote cluster through Ray Client.
    ray_address: str | None = None
    num_replicas: int = Field(default=1, ge=1)  # actors, each with its own copy of the model
    num_gpus_per_replica: float | None = Field(default=None, ge=0)  # null: the backend's own need (vllm: tp x pp)
    num_cpus_per_replica: float = Field(default=1, ge=0)

    @classmethod
    def engine_keys(cls) -> set[str]:
        """Options that say where generation runs, not what it produces: left out of the identity and of what a
        replica is built with."""
        return {"engine", "ray_address", "num_replicas", "num_gpus_per_replica", "num_cpus_per_replica"}

    def replicas(self) -> int:
        return self.num_replicas

    def replica_gpus(self) -> float:
        return self.num_gpus_per_replica or 0.0

    def replica_options(self) -> dict[str, Any]:
        """What one replica's backend is built with: these options, run in process."""
        return self.model_dump(exclude=self.engine_keys())

    @model_validator(mode="after")
    def _engine_keys_fit(self) -> EngineOptions:
        if self.engine == "local":
            for key in ("ray_address", "num_replicas", "num_gpus_per_replica", "num_cpus_per_replica"):
                if key in self.model_fields_set and getattr(self, key) != type(self).model_fields[key].default:
                    raise option_conflict(self, key, getattr(self, key),
                                          "applies to engine 'ray' only: add `engine: ray` or remove it")
        elif not ray_installed():
            raise option_conflict(self, "engine", self.engine, RAY_MISSING)
        return self


class EngineMixin:
    """For a backend whose ``Options`` derive from :class:`EngineOptions`: :meth:`run_on_ray` hands the requests to
    a pool of replicas of this backend, built once and kept until :meth:`close_engine`."""

    name: str
    options: Any
    _pool: Any = None

    def runs_on_ray(self) -> bool:
        return self.options.engine == "ray"

    def run_on_ray(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        if self._pool is None:
            self._pool = RayPool(self.name, self.options)
        yield from self._pool.run(requests)

    def close_engine(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
