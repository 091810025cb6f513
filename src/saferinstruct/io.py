"""The only place rows are read and written.

Reading is strict by default: the first bad line raises :class:`RowError` naming file, line and field. A stage that asks
for quarantine gets the bad lines written to a quarantine file instead, with a count. Every write is atomic (temp file
in the same directory, fsync, rename), so a crash never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from pydantic import BaseModel, ValidationError

from saferinstruct.records import QuarantinedRow

T = TypeVar("T", bound=BaseModel)


class RowError(ValueError):
    """Bad input: the message names the file, the line and (where known) the field."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


def describe_validation_error(err: ValidationError) -> str:
    """First problem of a pydantic error as 'field: message' (one line, no URL)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "row"
    return f"field '{loc}': {first['msg']}"


@dataclass
class Quarantine:
    """Collects unparseable lines instead of failing; written out (atomically) by the stage that asked for it."""

    rows: list[QuarantinedRow] = field(default_factory=list)

    def add(self, path: Path | str, line: int, error: str, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        self.rows.append(QuarantinedRow(file=str(path), line=line, error=error, raw=raw[:10_000]))

    def __len__(self) -> int:
        return len(self.rows)


def _decoded_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # tolerate a UTF-8 byte-order mark
            yield lineno, raw


def iter_rows(path: Path | str, model: type[T], quarantine: Quarantine | None = None,
              allow_empty: bool = False) -> Iterator[T]:
    """Yield validated rows of ``model`` from a jsonl file; blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise RowError(path, None, "file not found")
    seen = 0
    for lineno, raw in _decoded_lines(path):
        if not raw.strip():
            continue
        seen += 1
        try:
            text = raw.decode("utf-8")
            yield model.model_validate(json.loads(text))
        except UnicodeDecodeError as err:
            _fail(path, lineno, f"invalid UTF-8 at byte {err.start}", raw, quarantine)
        except json.JSONDecodeError as err:
            _fail(path, lineno, f"bad JSON: {err.msg} (column {err.colno})", raw, quarantine)
        except ValidationError as err:
            _fail(path, lineno, describe_validation_error(err), raw, quarantine)
    if seen == 0 and not allow_empty:
        raise RowError(path, None, "file is empty (no rows)")


def _fail(path: Path, lineno: int, message: str, raw: bytes, quarantine: Quarantine | None) -> None:
    if quarantine is None:
        raise RowError(path, lineno, message)
    quarantine.add(path, lineno, message, raw)


def read_rows(path: Path | str, model: type[T], quarantine: Quarantine | None = None,
              allow_empty: bool = False) -> list[T]:
    return list(iter_rows(path, model, quarantine=quarantine, allow_empty=allow_empty))


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``path``; it replaces ``path`` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary shared directories
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_rows(path: Path | str, rows: Iterable[BaseModel]) -> int:
    """Write rows as jsonl atomically; returns the count."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(row.model_dump_json(exclude_none=False) + "\n")
            n += 1
    return n


def write_json(path: Path | str, obj: object) -> None:
    """Write a JSON document (stats, metrics, configs) atomically, keys sorted for stable diffs."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        fh.write("\n")


def write_quarantine(path: Path | str, quarantine: Quarantine) -> int:
    return write_rows(path, quarantine.rows)


def read_json(path: Path | str) -> object:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RowError(path, None, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RowError(path, getattr(err, "lineno", None), f"bad JSON: {err}") from None
