"""The environment as a backend's ``secrets=`` argument (role params, prices and the model name: llm.roles)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


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
