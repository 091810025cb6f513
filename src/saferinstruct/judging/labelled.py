"""Labelled prompt files for the safety classifier: read, normalise, drop evaluation overlap, split deterministically.

Readers cover the formats the repo ships: CSV with an ``instruction`` / ``prompt`` / ``goal`` column (Safer-Instruct,
AdvBench, XSTest), a JSON list of ``{"instruction": ...}`` (Alpaca), and jsonl(.gz) with such a field or with an
hh-rlhf ``chosen`` transcript (its first human turn is the prompt). A ``label`` column of ``safe``/``unsafe`` (XSTest)
overrides the label a file was given.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from saferinstruct.hashing import in_holdout as _hash_in_holdout
from saferinstruct.io import RowError
from saferinstruct.sources.readers import parse_rows
from saferinstruct.sources.text import match_key

TEXT_FIELDS = ("instruction", "prompt", "goal")
SPREADSHEET_ARTEFACTS = {"#NAME?", "#VALUE!", "#REF!"}
_HUMAN_TURN = re.compile(r"\n\nHuman:\s*(.*?)(?:\n\nAssistant:|$)", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    text: str
    file: str
    line: int
    label: str  # "unsafe" | "safe"


def _text_of(row: dict, path: Path, line: int) -> str:
    for key in TEXT_FIELDS:
        if isinstance(row.get(key), str):
            return row[key]
    if isinstance(row.get("chosen"), str):  # hh-rlhf transcript
        match = _HUMAN_TURN.search(row["chosen"])
        return match.group(1).strip() if match else ""
    raise RowError(path, line, f"no text field (expected one of {', '.join(TEXT_FIELDS)}, or an hh-rlhf 'chosen')")


def read_prompts(path: Path | str, label: str) -> tuple[list[Prompt], int]:
    """Prompts of one file with ``label`` (unless a row's own safe/unsafe label says otherwise); and the number of
    unusable rows skipped (empty text, spreadsheet artefacts such as ``#NAME?``)."""
    path = Path(path)
    prompts, skipped = [], 0
    for line, row in parse_rows(path, dict, allow_empty=True):  # the one raw-file reader (sources.readers)
        text = _text_of(row, path, line).strip()
        if not text or text in SPREADSHEET_ARTEFACTS:
            skipped += 1
            continue
        own = str(row.get("label", "")).strip().lower()
        prompts.append(Prompt(text, str(path), line, own if own in ("safe", "unsafe") else label))
    return prompts, skipped


@dataclass
class TrainingSet:
    train: list[Prompt] = field(default_factory=list)
    holdout: list[Prompt] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    per_file: dict[str, int] = field(default_factory=dict)


def in_holdout(text: str, fraction: float, seed: int) -> bool:
    """A split by content hash (of the normalised text): stable whatever the order or the other rows are."""
    return _hash_in_holdout(match_key(text), fraction, seed)


def build_training_set(prompts: Sequence[Prompt], eval_prompts: Sequence[Prompt], holdout_fraction: float,
                       seed: int) -> TrainingSet:
    """Drop rows equal (normalised) to an evaluation prompt, duplicates and label conflicts; split the rest."""
    out = TrainingSet()
    eval_keys = {match_key(p.text) for p in eval_prompts}
    labels_by_key: dict[str, set[str]] = {}
    for p in prompts:
        labels_by_key.setdefault(match_key(p.text), set()).add(p.label)
    seen: set[str] = set()
    for p in prompts:
        key = match_key(p.text)
        if key in eval_keys:
            out.dropped[f"eval_overlap:{Path(p.file).name}"] += 1
        elif len(labels_by_key[key]) > 1:
            out.dropped["label_conflict"] += 1
        elif key in seen:
            out.dropped["duplicate"] += 1
        else:
            seen.add(key)
            (out.holdout if in_holdout(p.text, holdout_fraction, seed) else out.train).append(p)
            out.per_file[Path(p.file).name] = out.per_file.get(Path(p.file).name, 0) + 1
    return out
