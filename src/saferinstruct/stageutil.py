"""What every stage command shares: clean one-line errors instead of tracebacks, and stats output."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from saferinstruct.io import RowError, write_json
from saferinstruct.params import ParamsError

# Errors that mean "your input or config is wrong": shown as one line naming the problem, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (RowError, ParamsError, FileNotFoundError)


class StageError(click.ClickException):
    """A user-facing stage failure (bad input, bad config) shown without a traceback."""


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad-input and bad-config exceptions into a one-line ``error: ...`` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)

    return wrapper


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = round(time.perf_counter() - self.start, 3)


def write_stats(path: Path | str, stats: dict[str, Any]) -> None:
    """Per-stage stats JSON (declared as a DVC metric): counts in, kept, dropped by reason, calls, seconds."""
    write_json(path, stats)
