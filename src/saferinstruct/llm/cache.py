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

from saferinstruct.llm.base import ChatResult


class CallCache:
    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root else None
        self._dirs: set[Path] = set()  # shard directories known to exist

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResult | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn entry from an old crash is simply recomputed
        return ChatResult.model_validate(data).model_copy(update={"cached": True, "cache_key": key})

    def put(self, key: str, result: ChatResult) -> None:
        if self.root is None:
            return
        stored = result.model_copy(update={"cached": False, "cache_key": key})
        path = self._path(key)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")  # unique enough: one writer per key per process
        try:
            tmp.write_text(stored.model_dump_json(), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def __len__(self) -> int:
        return 0 if self.root is None or not self.root.exists() else sum(1 for _ in self.root.glob("*/*.json"))
