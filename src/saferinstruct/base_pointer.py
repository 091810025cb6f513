"""The reversed base when it is the policy base: a one-file pointer folder instead of a second copy of the weights.

prepare_base always writes ``models/reverse_base/`` so dvc.yaml stays static: the reversed model itself when
``prepare_base.reverse`` names its own source, else this pointer (``same_as.json``: the policy folder, relative to the
pointer's parent, and hashes of every file in it). train_reverse depends on ``models/reverse_base`` alone and resolves
the pointer to ``models/base``, so:
- by default it reads ``models/base`` exactly as before (same path string, so the same recorded identity and outputs);
- any change to ``models/base`` changes the pointer's bytes (both are written by prepare_base), so ``dvc repro``
  re-runs train_reverse when the policy base changes while they are the same, and when the user switches between the
  same base and an own one (the folder changes between pointer and model);
- with an own reversed base, changing the policy base does not re-train the reversed model (it is not a dependency).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from saferinstruct.errors import InputError
from saferinstruct.hashing import file_sha256
from saferinstruct.io import atomic_dir, read_json, write_json

POINTER_FILE = "same_as.json"
WEIGHTS_PATTERN = "*.safetensors"


def _files_sha256(model_dir: Path, weights_sha256: str) -> str:
    """Hash of every file of ``model_dir``: the weights by the hash prepare_base already recorded (not re-read: a large
    model's weights take minutes to hash), every other file by its content."""
    h = hashlib.sha256(weights_sha256.encode())
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.match(WEIGHTS_PATTERN)):
        h.update(str(f.relative_to(model_dir)).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def write_pointer(pointer_dir: Path | str, target_dir: Path | str, weights_sha256: str) -> dict:
    """Replace ``pointer_dir`` with a pointer to ``target_dir`` (a model prepare_base just wrote); returns it."""
    pointer_dir, target_dir = Path(pointer_dir), Path(target_dir)
    doc = {"same_as": os.path.relpath(target_dir, pointer_dir.parent), "weights_sha256": weights_sha256,
           "files_sha256": _files_sha256(target_dir, weights_sha256)}
    with atomic_dir(pointer_dir) as tmp:
        write_json(tmp / POINTER_FILE, doc)
    return doc


def resolve_base(base_dir: Path | str) -> Path:
    """The model folder ``base_dir`` stands for: itself when it holds a model, the policy folder when it is a pointer
    (as a normalised path relative to the same place, e.g. models/reverse_base -> models/base)."""
    base_dir = Path(base_dir)
    pointer = base_dir / POINTER_FILE
    if not pointer.is_file():
        return base_dir
    doc = read_json(pointer)
    target = Path(os.path.normpath(base_dir.parent / doc["same_as"]))
    info = target / "model_info.json"
    if not info.is_file():
        raise InputError(pointer, f"points at {target}, which holds no model (run `dvc repro prepare_base`)")
    if read_json(info).get("weights_sha256") != doc["weights_sha256"]:
        raise InputError(pointer, f"{target} changed since prepare_base wrote this pointer (run `dvc repro "
                                  "prepare_base`)")
    return target
