"""Content hashes for files and directories: model identities, data hashes in checkpoint configs, cache keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def dir_sha256(path: Path | str, pattern: str = "*") -> str:
    """Hash of a directory's files (relative names + contents), stable across machines."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob(pattern) if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_split(ids: Iterable[str], fraction: float, seed: int | str = 0) -> set[str]:
    """The ids of a deterministic held-out split: the round(n * fraction) ids with the smallest seeded hash.

    Each id's rank depends only on (seed, id), so adding or removing a row moves at most a row or two across the
    split instead of reshuffling it, and the split never depends on row order.
    """
    ids = list(dict.fromkeys(ids))
    k = round(len(ids) * fraction)
    ranked = sorted(ids, key=lambda i: text_sha256(f"{seed}:{i}"))
    return set(ranked[:k])
