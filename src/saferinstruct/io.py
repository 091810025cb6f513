"""The only place rows are read and written.

Reading is strict by default: the first bad line raises :class:`RowError` naming file, line and field. A stage that asks
for quarantine gets the bad lines written to a quarantine file instead, with a count. Every write is atomic (temp file
in the same directory, fsync, rename), so a crash never leaves a half-written output, and a stage with several
outputs commits them together (:func:`output_set`). A write that fails is one :class:`WriteError` line naming the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from pydantic import BaseModel, ValidationError

from saferinstruct.errors import UserError, WriteError
from saferinstruct.records import QuarantinedRow

T = TypeVar("T", bound=BaseModel)


class RowError(UserError, ValueError):
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


class BadJSON(ValueError):
    """A JSON text that cannot become a record: it does not parse, nests too deeply or holds a lone surrogate."""

    def __init__(self, message: str, lineno: int | None = None, colno: int | None = None):
        self.lineno, self.colno = lineno, colno
        super().__init__(message)


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # how a surrogate can enter decoded UTF-8 text
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads_json(text: str) -> object:
    """``json.loads`` that turns every way a JSON text can be unusable into :class:`BadJSON` (one line, no
    traceback): a syntax error, nesting deeper than the parser's recursion limit, or an escaped lone surrogate
    (``"\\ud800"``), which parses but is not Unicode and fails every later write."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        what = "extra content after the top-level value" if err.msg == "Extra data" else err.msg
        where = f"line {err.lineno}, column {err.colno}" if err.lineno > 1 else f"column {err.colno}"
        raise BadJSON(f"bad JSON: {what} ({where})", err.lineno, err.colno) from None
    except RecursionError:
        raise BadJSON("bad JSON: nested too deeply") from None
    check_unicode(obj, text)
    return obj


def check_unicode(obj: object, text: str) -> None:
    """Raise :class:`BadJSON` if a string (or key) parsed from ``text`` holds a lone surrogate."""
    if not _ESCAPED_SURROGATE.search(text):
        return  # the common case, decided without walking the value (escaped surrogate pairs are fine)
    stack = [obj]
    while stack:  # iterative: the value may nest as deep as the parser allows
        item = stack.pop()
        if isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad:
                raise BadJSON(f"bad JSON: lone surrogate \\u{ord(bad.group()):04x} (not valid Unicode)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def require_file(path: Path | str) -> Path:
    """``path`` as a Path, or :class:`RowError` if it is missing or not a regular file (a directory, say)."""
    path = Path(path)
    if not path.exists():
        raise RowError(path, None, "file not found")
    if not path.is_file():
        raise RowError(path, None, "is a directory, not a file" if path.is_dir() else "not a regular file")
    return path


def _decoded_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # tolerate a UTF-8 byte-order mark
            yield lineno, raw


def iter_rows(path: Path | str, model: type[T], quarantine: Quarantine | None = None,
              allow_empty: bool = False) -> Iterator[T]:
    """Yield validated rows of ``model`` from a jsonl file; blank lines are skipped."""
    path = require_file(path)
    seen = 0
    for lineno, raw in _decoded_lines(path):
        if not raw.strip():
            continue
        seen += 1
        try:
            text = raw.decode("utf-8")
            yield model.model_validate(loads_json(text))
        except UnicodeDecodeError as err:
            _fail(path, lineno, f"invalid UTF-8 at byte {err.start}", raw, quarantine)
        except BadJSON as err:
            _fail(path, lineno, str(err), raw, quarantine)
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
def _writing(path: Path | str) -> Iterator[None]:
    """An OSError while writing ``path`` (full disk, read-only folder) as one line: ``cannot write PATH: reason``."""
    try:
        yield
    except OSError as err:
        raise WriteError(path, err) from None


def _make_parent(path: Path) -> None:
    """Create ``path``'s folder; a file standing where a folder must be is named (mkdir alone says 'File exists')."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise WriteError(path, f"{blocker} is a file, not a folder") from None


def _remove(tmp: Path | str) -> None:
    if os.path.isdir(tmp):  # a staged folder (OutputSet.stage_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _replace(tmp: Path | str, target: Path) -> None:
    """``os.replace``, also for a folder over a folder: the old one is moved aside, then deleted."""
    if not os.path.isdir(tmp):
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)  # left by a killed commit
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _staged_file(path: Path, mode: str) -> Iterator[tuple[IO, str]]:
    """A temp file beside ``path`` (same file system, so the final rename is atomic), fsynced when the block ends and
    deleted if it fails. Errors of the caller's block pass unchanged; our own file-system errors become WriteError."""
    _make_parent(path)
    with _writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh, tmp
            with _writing(path):
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
    except BaseException:
        _remove(tmp)
        raise


class OutputSet:
    """The outputs of one stage, each staged as a temp file beside its target; :func:`output_set` renames them all
    into place only once every one is written, so a failure half way leaves all the old outputs as they were."""

    def __init__(self) -> None:
        self._staged: dict[Path, str] = {}  # target -> its temp file

    @contextlib.contextmanager
    def open(self, path: Path | str, mode: str = "w") -> Iterator[IO]:
        target = Path(path)
        with _staged_file(target, mode) as (fh, tmp):
            yield fh
        old = self._staged.pop(target, None)  # the same target written twice: the last one wins
        if old is not None:
            _remove(old)
        self._staged[target] = tmp

    def rows(self, path: Path | str, rows: Iterable[BaseModel]) -> int:
        """Rows as jsonl; returns the count."""
        n = 0
        with self.open(path) as fh, _writing(path):
            for row in rows:
                fh.write(row.model_dump_json(exclude_none=False) + "\n")
                n += 1
        return n

    def json(self, path: Path | str, obj: object) -> None:
        """A JSON document (stats, metrics, configs), keys sorted for stable diffs."""
        with self.open(path) as fh, _writing(path):
            json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            fh.write("\n")

    def text(self, path: Path | str, text: str) -> None:
        with self.open(path) as fh, _writing(path):
            fh.write(text)

    def stage_dir(self, built: Path | str, path: Path | str) -> None:
        """A folder the caller filled beside ``path`` (same file system) replaces ``path`` whole at commit, e.g. a
        trained model written with its stats file; discarded (deleted) if the set is not committed."""
        target = Path(path)
        old = self._staged.pop(target, None)
        if old is not None and Path(old) != Path(built):
            _remove(old)
        self._staged[target] = str(built)

    def commit(self) -> None:
        """Rename every staged file over its target (a rename that fails leaves the rest staged, for discard)."""
        for target, tmp in list(self._staged.items()):
            with _writing(target):
                _replace(tmp, target)
            del self._staged[target]

    def discard(self) -> None:
        for tmp in self._staged.values():
            _remove(tmp)
        self._staged.clear()


@contextlib.contextmanager
def output_set() -> Iterator[OutputSet]:
    """``with output_set() as out: out.rows(a, rows); out.json(b, stats)``: both files change, or neither does."""
    out = OutputSet()
    try:
        yield out
        out.commit()
    finally:
        out.discard()  # whatever was not renamed: the block or a rename failed


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block finishes without error."""
    with output_set() as out, out.open(path, mode) as fh:
        yield fh


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``path``; it replaces ``path`` only if the block finishes without error."""
    path = Path(path)
    _make_parent(path)
    with _writing(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary shared directories
    try:
        yield tmp
        with _writing(path):
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_rows(path: Path | str, rows: Iterable[BaseModel]) -> int:
    """Write rows as jsonl atomically; returns the count."""
    with output_set() as out:
        return out.rows(path, rows)


def write_json(path: Path | str, obj: object) -> None:
    """Write a JSON document (stats, metrics, configs) atomically, keys sorted for stable diffs."""
    with output_set() as out:
        out.json(path, obj)


def write_quarantine(path: Path | str, quarantine: Quarantine) -> int:
    return write_rows(path, quarantine.rows)


def read_json(path: Path | str) -> object:
    """One JSON document; anything after its top-level value is an error naming the line and column."""
    path = require_file(path)
    data = path.read_bytes()
    try:
        return loads_json(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise RowError(path, data.count(b"\n", 0, err.start) + 1, f"invalid UTF-8 at byte {err.start}") from None
    except BadJSON as err:
        raise RowError(path, err.lineno, str(err)) from None
