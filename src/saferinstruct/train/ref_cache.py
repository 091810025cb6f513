"""Stored DPO reference log-probs, keyed by what they depend on, so a beta sweep never recomputes them.

The reference log-probs of a pair depend only on the reference model's weights (and tokenizer), the exact rows fed to
DPO, ``max_length`` and trl's tokenisation code; not on beta, the learning rate or anything else a sweep changes. One
JSON file per key lives in the cache directory (a DVC output of train_dpo), so switching back to an earlier reference
model or data version is a hit too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from saferinstruct.errors import InputError
from saferinstruct.io import write_json
from saferinstruct.train.common import model_dir_sha256


@dataclass(frozen=True)
class RefKey:
    ref_weights_sha256: str
    data_sha256: str
    max_length: int
    trl_version: str
    precision: str = "float32"  # the reference pass's arithmetic: bf16 log-probs differ from fp32 ones

    @property
    def digest(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass
class RefLogps:
    ids: list[str]
    chosen: list[float]
    rejected: list[float]


def make_key(ref_dir: Path, rows: list[dict[str, Any]], max_length: int, precision: str = "float32") -> RefKey:
    """Data hash = the rows exactly as DPO receives them (format, subset and order included)."""
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return RefKey(model_dir_sha256(ref_dir), hashlib.sha256(blob).hexdigest(), max_length, version("trl"), precision)


def _path(cache_dir: Path, key: RefKey) -> Path:
    return Path(cache_dir) / f"{key.digest}.json"


def load(cache_dir: Path, key: RefKey) -> RefLogps | None:
    """The stored log-probs for ``key``, or None (a miss) when nothing was stored under it."""
    path = _path(cache_dir, key)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        logps = RefLogps(ids=doc["ids"], chosen=doc["ref_chosen_logps"], rejected=doc["ref_rejected_logps"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(path, f"corrupt reference log-prob cache entry ({err}); delete the file") from None
    if not len(logps.ids) == len(logps.chosen) == len(logps.rejected):
        raise InputError(path, "corrupt reference log-prob cache entry (length mismatch); delete the file")
    return logps


def save(cache_dir: Path, key: RefKey, logps: RefLogps) -> Path:
    path = _path(cache_dir, key)
    write_json(path, {"key": key.__dict__, "digest": key.digest, "rows": len(logps.ids), "ids": logps.ids,
                      "ref_chosen_logps": logps.chosen, "ref_rejected_logps": logps.rejected})
    return path
