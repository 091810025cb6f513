"""Helpful preference pairs for build_preferences' mix: Anthropic hh-rlhf transcripts, or any prompt/chosen/rejected
file.

``hh_rlhf``: "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts; chosen and rejected share every turn but the last, so the
shared turns are the prompt and the two last assistant turns the sides. ``pairs``: TRL rows, each field a string or a
list of {role, content} turns.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from saferinstruct.io import Quarantine
from saferinstruct.params import Params
from saferinstruct.records import ChatTurn, as_text
from saferinstruct.sources.hh_rlhf import Turns, parse_hh
from saferinstruct.sources.readers import BadField, field_str, parse_rows


class HelpfulSource(Params):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: Literal["hh_rlhf", "pairs"]  # pairs: prompt/chosen/rejected strings or TRL conversational lists
    path: str
    licence: str = Field(min_length=1)
    file_format: Literal["auto", "csv", "jsonl", "json"] = "auto"


def _hh_pair(rec: dict) -> tuple[Turns, str, str]:
    chosen, rejected = parse_hh(field_str(rec, "chosen")), parse_hh(field_str(rec, "rejected"), "rejected")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if len(turns) < 2 or turns[-1][0] != "assistant" or turns[-2][0] != "user":
            raise BadField(name, "a transcript must end with a Human turn then an Assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise BadField("rejected", "chosen and rejected transcripts differ before their last turn")
    return chosen[:-1], chosen[-1][1], rejected[-1][1]


def _side(rec: dict, name: str, role: str) -> Turns:
    value = rec.get(name)
    if isinstance(value, str):
        return [(role, value)]
    try:
        return [(t.role, t.content) for t in (ChatTurn.model_validate(x) for x in value)]
    except (TypeError, ValueError):
        raise BadField(name, "expected a string or a list of {role, content} turns") from None


def _pairs_pair(rec: dict) -> tuple[Turns, str, str]:
    prompt = _side(rec, "prompt", "user")
    chosen, rejected = _side(rec, "chosen", "assistant"), _side(rec, "rejected", "assistant")
    return prompt, as_text([ChatTurn(role=r, content=c) for r, c in chosen]), \
        as_text([ChatTurn(role=r, content=c) for r, c in rejected])


def load_helpful(spec: HelpfulSource, quarantine: Quarantine | None = None,
                 ) -> list[tuple[int, tuple[Turns, str, str]]]:
    """(line, (prompt turns, chosen, rejected)) per usable record; malformed ones raise or go to ``quarantine``."""
    parse = _hh_pair if spec.format == "hh_rlhf" else _pairs_pair
    return list(parse_rows(spec.path, parse, quarantine, fmt=spec.file_format))
