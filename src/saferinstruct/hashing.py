"""Content hashes for files and directories (model identities, data hashes in checkpoint configs, cache keys) and the
seeded choices built on them: held-out splits and samples."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
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


def in_holdout(row_id: str, fraction: float, salt: int | str = 0) -> bool:
    """Whether a row belongs to a held-out split: its seeded hash, read as a number in [0, 1), is below ``fraction``.

    The answer depends only on (salt, id, fraction), never on the other rows or their order, so adding or removing
    rows never moves another row across the split (a top-k rank would); the held-out share is ``fraction`` on
    average, not exactly.
    """
    return int(text_sha256(f"{salt}\x00{row_id}")[:8], 16) / 0x1_0000_0000 < fraction


def seeded_sample(count: int, n: int | None, seed: int | str) -> list[int]:
    """Ascending indices of a seeded sample of ``n`` of ``count`` rows (all of them when ``n`` is None or not
    smaller): the one sampler every stage uses, so a given (seed, count, n) always keeps the same rows.
    ``random.Random(seed).sample``: the draw the committed outputs were made with (changing it re-picks rows)."""
    if n is None or n >= count:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), n))


def sample_rows(rows: Sequence, n: int | None, seed: int | str) -> list:
    """The rows :func:`seeded_sample` keeps, in their original order."""
    return [rows[i] for i in seeded_sample(len(rows), n, seed)]
