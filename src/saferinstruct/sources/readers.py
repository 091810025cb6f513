"""Readers for raw corpus files (CSV, jsonl, jsonl.gz, JSON arrays) with the same error rules as saferinstruct.io.

Every record comes with the line it starts on. A malformed record (bad JSON, invalid UTF-8, wrong field count, an
oversized CSV field, a missing or wrongly typed field found by the caller's parser) raises :class:`RowError` naming
file and line, or, when the caller passes a :class:`Quarantine`, is kept there verbatim and counted. Problems of the
whole file (missing, empty, a required CSV column absent, not gzip, a JSON array that does not parse) always raise.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from saferinstruct.io import BadJSON, Quarantine, RowError, check_unicode, loads_json, require_file

T = TypeVar("T")
_BOM = b"\xef\xbb\xbf"


class BadField(ValueError):
    """Raised by a row parser for a missing or wrongly typed field; becomes a file:line error or a quarantine."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")


class _Malformed(ValueError):
    pass


def detect_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".csv", "csv"), (".json", "json")):
        if name.endswith(suffix):
            return fmt
    raise RowError(path, None, "unknown file type (expected .csv, .jsonl, .jsonl.gz or .json); set format in params")


def _csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict | _Malformed, str]]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so a bad byte fails its own record, not the file
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as err:
            raise RowError(path, 1, f"bad CSV header: {err}") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise RowError(path, 1, f"missing column(s) {missing} (found: {header})")
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                msg = str(err).replace("field larger than field limit", "CSV field longer than the limit")
                yield start, _Malformed(msg), ""
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            # the verbatim record for a quarantine, undecodable bytes shown as U+FFFD
            raw = ",".join(fields).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if not any(f.strip() for f in fields):
                continue
            if any(_has_bad_bytes(f) for f in fields):
                yield line, _Malformed("invalid UTF-8"), raw
            elif len(fields) != len(header):
                yield line, _Malformed(f"{len(fields)} fields where the header has {len(header)} "
                                       "(an unbalanced quote?)"), raw
            else:
                yield line, dict(zip(header, fields, strict=True)), raw


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | _Malformed, str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            shown = raw.decode("utf-8", errors="replace")
            try:
                obj = loads_json(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield lineno, _Malformed(f"invalid UTF-8 at byte {err.start}"), shown
                continue
            except BadJSON as err:
                yield lineno, _Malformed(str(err)), shown
                continue
            yield lineno, obj if isinstance(obj, dict) else _Malformed("expected a JSON object"), shown


def _json_array_records(path: Path) -> Iterator[tuple[int, dict | _Malformed, str]]:
    """Items of a top-level JSON array, each with the line it starts on (parsed one item at a time). An item holding
    a lone surrogate is a malformed record; one that does not parse (or nests too deeply), or anything after the
    closing bracket, fails the whole file."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RowError(path, data.count(b"\n", 0, err.start) + 1, f"invalid UTF-8 at byte {err.start}") from None
    if not text.strip():
        return
    decoder, pos = json.JSONDecoder(), _skip_ws(text, 0)
    line, counted = 1, 0  # line numbers are counted incrementally: one pass over the text in all
    try:
        if text[pos] != "[":
            raise json.JSONDecodeError("expected a JSON array", text, pos)
        pos = _skip_ws(text, pos + 1)
        while pos < len(text) and text[pos] != "]":
            obj, end = _decode_item(decoder, text, pos)
            line, counted = line + text.count("\n", counted, pos), pos
            yield line, _checked_object(obj, text[pos:end]), text[pos:end]
            pos = _skip_ws(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_ws(text, pos + 1)
            elif pos >= len(text) or text[pos] != "]":
                raise json.JSONDecodeError("expected ',' or ']'", text, min(pos, len(text) - 1))
        if pos >= len(text):
            raise json.JSONDecodeError("unterminated array", text, len(text) - 1)
        if _skip_ws(text, pos + 1) < len(text):  # a second value after the array would be silently dropped
            raise json.JSONDecodeError("extra content after the top-level array", text, _skip_ws(text, pos + 1))
    except json.JSONDecodeError as err:
        raise RowError(path, err.lineno, f"bad JSON: {err.msg} (column {err.colno})") from None


def _decode_item(decoder: json.JSONDecoder, text: str, pos: int) -> tuple[object, int]:
    try:
        return decoder.raw_decode(text, pos)
    except RecursionError:  # the item's end is unknown, so the rest of the array cannot be read either
        raise json.JSONDecodeError("nested too deeply", text, pos) from None


def _checked_object(obj: object, source: str) -> dict | _Malformed:
    if not isinstance(obj, dict):
        return _Malformed("expected a JSON object")
    try:
        check_unicode(obj, source)
    except BadJSON as err:
        return _Malformed(str(err))
    return obj


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def parse_rows(path: Path | str, parse: Callable[[dict], T | None], quarantine: Quarantine | None = None,
               fmt: str = "auto", required: Sequence[str] = (), allow_empty: bool = False) -> Iterator[tuple[int, T]]:
    """Yield ``(line, parse(record))`` for every record of a raw file; ``parse`` returning None skips the record.

    ``required`` CSV columns are checked against the header; for JSON formats ``parse`` raises :class:`BadField`.
    A file without records is an error unless ``allow_empty`` (the caller then says what is empty).
    """
    path = require_file(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    records = {"csv": lambda: _csv_records(path, required), "jsonl": lambda: _jsonl_records(path),
               "json": lambda: _json_array_records(path)}[fmt]()
    seen = 0
    try:
        for line, rec, raw in records:
            seen += 1
            try:
                if isinstance(rec, _Malformed):
                    raise rec
                out = parse(rec)
            except (_Malformed, BadField) as err:
                if quarantine is None:
                    raise RowError(path, line, str(err)) from None
                quarantine.add(path, line, str(err), raw)
                continue
            if out is not None:
                yield line, out
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise RowError(path, None, f"not a valid gzip file ({err})") from None
    if seen == 0 and not allow_empty:
        raise RowError(path, None, "file is empty (no rows)")


def field_str(rec: dict, name: str, allow_empty: bool = True) -> str:
    """A string field (CSV cells are always strings; JSON values must be)."""
    if name not in rec or rec[name] is None:
        raise BadField(name, "missing")
    value = rec[name]
    if not isinstance(value, str):
        raise BadField(name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BadField(name, "empty")
    return value


def field_int(rec: dict, name: str) -> int:
    """An integer field, from a JSON int or a CSV cell holding one."""
    if name not in rec or rec[name] is None:
        raise BadField(name, "missing")
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadField(name, f"expected an integer, got {type(value).__name__}")
    try:
        return int(value)
    except ValueError:
        raise BadField(name, f"expected an integer, got {value[:40]!r}") from None


def field_id(rec: dict, name: str) -> str | None:
    """A record's own id (a string or integer field), or None when it is absent or empty."""
    value = rec.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadField(name, f"expected a string or integer id, got {type(value).__name__}")
    return str(value)


class LineKeys:
    """Keys for records that have no id of their own, made from the line they start on and never repeated: the line,
    then ``<line>_2``, ``<line>_3``... for further records starting on that line (a JSON array written on one line)."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}

    def __call__(self, line: int) -> str:
        n = self._seen[line] = self._seen.get(line, 0) + 1
        return str(line) if n == 1 else f"{line}_{n}"
