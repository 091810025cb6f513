"""Mid-run checkpoints of a training stage: where they live, when a run resumes from one, and when they go.

A pre-empted multi-hour run must not restart from zero, and a checkpoint must never become part of a DVC output (it
would change the output's hash, and a half-run's state is not a result). So the trainer writes ``checkpoint-<step>``
folders into ``<root>/<key>/`` (root: ``checkpoints/<stage>`` at the repo root, git- and dvc-ignored), where ``key``
hashes everything the run depends on (params, input model weights, data): a rerun with the same inputs resumes, a
changed config starts afresh. The folder is deleted once the final model is saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

# knobs that say how often to save, not what is trained: changing them keeps the run resumable
_NOT_IN_KEY = ("save_steps", "save_total_limit", "logging_steps")


def run_key(doc: dict[str, Any]) -> str:
    """16 hex digits naming a run: the stage, its params and the identities of its inputs (``doc`` as written to
    training_config.json: stage, params, base_model, reference_model, data)."""
    params = {k: v for k, v in doc.get("params", {}).items() if k not in _NOT_IN_KEY}
    blob = json.dumps({**doc, "params": params}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_dir(root: Path, doc: dict[str, Any]) -> Path:
    """Where the trainer of the run ``doc`` describes writes its checkpoints: ``root/<key>``."""
    return Path(root) / run_key(doc)


def remove_other_runs(path: Path) -> None:
    """Delete the runs of other keys beside ``path``: a stale config's state is never resumed, and each holds
    weights plus optimizer state (~1.6 GB for a 135M model in fp32). Main process only."""
    path = Path(path)
    if path.parent.is_dir():
        for other in path.parent.iterdir():
            if other.is_dir() and other != path:
                shutil.rmtree(other, ignore_errors=True)


def last_checkpoint(path: Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` in ``path``, or None. The trainer writes trainer_state.json last,
    so a folder without it (killed mid-save) is skipped."""
    path = Path(path)
    if not path.is_dir():
        return None
    done = [d for d in path.glob("checkpoint-*") if (d / "trainer_state.json").exists() and d.name[11:].isdigit()]
    return str(max(done, key=lambda d: int(d.name[11:]))) if done else None


def step_of(checkpoint: str | None) -> int:
    """The optimizer step a checkpoint was saved at (0: none, a fresh start)."""
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def remove_run(path: Path) -> None:
    """After the final model is saved the checkpoints are dead weight."""
    shutil.rmtree(path, ignore_errors=True)
    parent = Path(path).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
