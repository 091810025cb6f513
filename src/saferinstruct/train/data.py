"""Typed rows -> the dataset shapes trl expects (prompt/completion for SFT, prompt/chosen/rejected for DPO).

Preference rows are read in either of TRL's two standard shapes (plain strings or lists of chat messages) and written
out in the shape the params ask for, so the training stages do not depend on which variant build_preferences wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from saferinstruct.hashing import seeded_sample
from saferinstruct.io import read_rows
from saferinstruct.records import ChatTurn, PreferencePair, ReversePair, as_text
from saferinstruct.templates import ReverseTemplate, reverse_messages, reverse_prompt

DataFormat = Literal["conversational", "plain"]


def reverse_examples(pairs: Sequence[ReversePair], template: ReverseTemplate, tokenizer: Any = None,
                     max_length: int | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(response -> instruction) examples: the response is the prompt, the instruction the only trained completion.

    With a tokenizer and ``max_length``, a long response is cut (its start kept) so the instruction always fits: trl
    truncates from the end, which would otherwise cut away the very tokens the loss is on.
    """
    rows: list[dict[str, Any]] = []
    counts = {"dropped_empty": 0, "truncated_response": 0, "dropped_too_long": 0}
    for pair in pairs:
        instruction, response = pair.instruction.strip(), pair.response.strip()
        if not instruction or not response:
            counts["dropped_empty"] += 1
            continue
        if tokenizer is not None and max_length is not None:
            response = _fit_response(tokenizer, template, instruction, response, max_length, counts)
            if response is None:
                continue
        rows.append({"id": pair.id, **_reverse_row(template, instruction, response)})
    return rows, counts


def _reverse_row(template: ReverseTemplate, instruction: str, response: str) -> dict[str, Any]:
    if template == "paper":
        return {"prompt": reverse_prompt(response), "completion": instruction}
    return {"prompt": reverse_messages(response), "completion": [{"role": "assistant", "content": instruction}]}


_MIN_RESPONSE_TOKENS = 16
_BOUNDARY_SLACK = 4  # tokens that may merge differently where the response is spliced into the template


def _fit_response(tokenizer: Any, template: ReverseTemplate, instruction: str, response: str, max_length: int,
                  counts: dict[str, int]) -> str | None:
    row = _reverse_row(template, instruction, "")
    if template == "paper":
        overhead = len(tokenizer(row["prompt"] + instruction)["input_ids"]) + 1  # + EOS
    else:
        overhead = len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                                     return_dict=True)["input_ids"])
    budget = max_length - overhead - _BOUNDARY_SLACK
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return response
    if budget < _MIN_RESPONSE_TOKENS:
        counts["dropped_too_long"] += 1
        return None
    counts["truncated_response"] += 1
    return tokenizer.decode(ids[:budget]).strip()


def _messages(value: str | list[ChatTurn], role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else [m.model_dump() for m in value]


def _shape(row: PreferencePair, fmt: DataFormat, with_rejected: bool) -> dict[str, Any]:
    sides = ("chosen", "rejected") if with_rejected else ("chosen",)
    if fmt == "plain":
        return {"id": row.id, "prompt": as_text(row.prompt), **{s: as_text(getattr(row, s)) for s in sides}}
    return {"id": row.id, "prompt": _messages(row.prompt, "user"),
            **{s: _messages(getattr(row, s), "assistant") for s in sides}}


def load_preferences(path: Path, fmt: DataFormat, with_rejected: bool, max_pairs: int | None = None,
                     seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows in TRL's preference format; pairs with an empty side are dropped (counted), then an optional subset."""
    kept, counts = [], {"rows_in": 0, "dropped_empty": 0}
    for row in read_rows(path, PreferencePair):
        counts["rows_in"] += 1
        needed = [row.prompt, row.chosen] + ([row.rejected] if with_rejected else [])
        if any(not as_text(v).strip() for v in needed):
            counts["dropped_empty"] += 1
            continue
        kept.append(_shape(row, fmt, with_rejected))
    if max_pairs is not None and len(kept) > max_pairs:
        picked = seeded_sample(len(kept), max_pairs, seed)  # same subset on every run
        counts["dropped_max_pairs"] = len(kept) - max_pairs
        kept = [kept[i] for i in picked]
    counts["rows_used"] = len(kept)
    return kept, counts


def as_sft(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Preference rows -> prompt/completion on the chosen side (SFT on the preferred responses, as in the paper)."""
    return [{"id": r["id"], "prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
