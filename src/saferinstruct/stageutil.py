"""What every stage command shares: clean one-line errors instead of tracebacks, and stats output."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from saferinstruct.errors import UserError
from saferinstruct.io import OutputSet, write_json

# Errors that mean "your input, config or environment is wrong": one line naming the problem, exit code 2. Every
# library error of that kind derives from UserError; an input path that is missing, a folder or unreadable arrives
# as one of these OSErrors (writes are already WriteError).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                                PermissionError)


class StageError(UserError):
    """A user-facing stage failure raised by a stage command itself, shown like every other UserError."""


def describe(err: BaseException) -> str:
    """One line: the message, with the path an OSError carries (``[Errno 21] Is a directory: 'x'`` -> ``x: ...``)."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split()) or type(err).__name__


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad-input, bad-config and stopped-run exceptions into a one-line ``error: ...`` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            click.echo(f"error: {describe(err)}", err=True)
            sys.exit(2)

    return wrapper


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = round(time.perf_counter() - self.start, 3)


def write_stats(path: Path | str, stats: dict[str, Any], out: OutputSet | None = None) -> None:
    """Per-stage stats JSON (declared as a DVC metric): counts in, kept, dropped by reason, calls, seconds. A stage
    with several outputs passes its :func:`~saferinstruct.io.output_set` so the stats change with the data."""
    if out is None:
        write_json(path, stats)
    else:
        out.json(path, stats)
