"""Evaluation prompts as match keys, so training data can drop any text an evaluation set will ask about."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from saferinstruct.params import Params
from saferinstruct.sources.readers import field_str, parse_rows
from saferinstruct.sources.text import match_key


class EvalFile(Params):
    """One evaluation file, the field holding its prompt, and (for the safety classifier's measured flag rates) the
    label its prompts carry unless a row's own ``label`` column says otherwise."""

    path: str
    field: str
    label: Literal["unsafe", "safe"] | None = None
    format: Literal["auto", "csv", "jsonl", "json"] = "auto"


def eval_prompt_keys(files: Iterable[EvalFile]) -> set[str]:
    """Match keys of every prompt in the files (strict: a malformed evaluation file is an error)."""
    keys: set[str] = set()
    for spec in files:
        rows = parse_rows(spec.path, lambda rec, f=spec.field: field_str(rec, f), fmt=spec.format,
                          required=[spec.field])
        keys.update(match_key(text) for _, text in rows if text.strip())
    return keys
