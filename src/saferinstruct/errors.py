"""The one error hierarchy: every failure the user can fix (bad input, bad config, a stopped or failed run, an
unwritable output) derives from :class:`UserError`, which each stage command turns into one ``error: ...`` line.

Module-specific classes (``RowError`` for a bad row of a file, ``ParamsError``, ``BackendConfigError``, ``BudgetExceeded``,
``CallsFailed``)
stay where they were raised, as subclasses, so their imports keep working. This module imports nothing of the package.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A failure the message alone explains and the user can fix: shown as one line (exit 2), never a traceback."""


class InputError(UserError):
    """An input as a whole (a model directory, a GGUF file, a cache entry, a revision, a prompt file) is missing or
    unusable: not one bad row of it, which is ``saferinstruct.io.RowError``. The message names the path and the fix."""

    def __init__(self, path: Path | str, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class WriteError(UserError):
    """An output could not be written (read-only folder, full disk, a file where a folder should be)."""

    def __init__(self, path: Path | str, reason: OSError | str):
        self.path = str(path)
        text = reason.strerror or str(reason) if isinstance(reason, OSError) else reason
        super().__init__(f"cannot write {path}: {text}")
