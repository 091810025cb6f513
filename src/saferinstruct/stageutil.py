"""What every stage command shares: clean one-line errors instead of tracebacks, and stats output."""

from __future__ import annotations

import functools
import os
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


def quiet_library_bars() -> None:
    """In a log (stderr no terminal, as under ``dvc repro``) the libraries' own tqdm bars ("Loading weights",
    "Tokenizing train dataset", "Writing model shards") are each a line of carriage returns that says nothing the
    stage's progress lines do not: turn them off there. On a terminal they stay."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by transformers / huggingface_hub at import
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read by datasets at import
    if "transformers" in sys.modules:  # already imported (a test process): switch it off directly
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad-input, bad-config and stopped-run exceptions into a one-line ``error: ...`` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_library_bars()
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
