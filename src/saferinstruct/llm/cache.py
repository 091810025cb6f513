"""Content-addressed call cache: one small JSON file per call, sharded by key prefix.

One file per entry makes every completed call durable on its own (atomic rename), so a crashed stage resumes without
paying twice, and it lets DVC push only new entries. Each stage owns its cache directory as a persistent DVC output.

Entries are renamed into place without fsync: a crashed *process* loses nothing (the kernel holds the data), and after
a crash of the *machine* a torn entry reads as a miss and is recomputed. An fsync per call (~4 ms here) would cost
more than the call it protects: it halved a 32-way concurrent stage's throughput.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pydantic import ValidationError

from saferinstruct.errors import WriteError
from saferinstruct.llm.base import ChatResult


# The standard cache-directory tag (https://bford.info/cachedir/): backup tools skip the folder, and a stage whose
# judge makes no model call still leaves a non-empty cache output (DVC warns "is empty" for an empty one).
CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# saferinstruct model-call cache: one JSON file per call, safe to delete (calls are paid again).\n")


def create_cache_dir(root: Path | str) -> Path:
    """The stage's cache folder, tagged (``CACHEDIR.TAG``), created even when the stage makes no model call: it is a
    DVC output either way."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tag = root / "CACHEDIR.TAG"
    if not tag.is_file():
        tag.write_text(CACHEDIR_TAG, encoding="utf-8")
    return root


class CallCache:
    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root else None
        self._dirs: set[Path] = set()  # shard directories known to exist
        # Entries that exist but cannot be used (torn, or written by a version with other fields): read as misses.
        self.invalid = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResult | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):  # not there (a file as cache folder fails at put, named)
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.invalid += 1  # a torn entry from an old crash is simply recomputed
            return None
        try:
            result = ChatResult.model_validate(data)
        except ValidationError:
            self.invalid += 1  # an unknown or missing field: recomputed (and overwritten) like a torn entry
            return None
        return result.model_copy(update={"cached": True, "cache_key": key})

    def put(self, key: str, result: ChatResult) -> None:
        if self.root is None:
            return
        stored = result.model_copy(update={"cached": False, "cache_key": key})
        path = self._path(key)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")  # unique enough: one writer per key per process
        try:
            if path.parent not in self._dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(path.parent)
            tmp.write_text(stored.model_dump_json(), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(tmp)
            if isinstance(err, OSError):  # a full disk or read-only cache folder: one line, not a traceback
                raise WriteError(path, err) from None
            raise

    def __len__(self) -> int:
        return 0 if self.root is None or not self.root.exists() else sum(1 for _ in self.root.glob("*/*.json"))
