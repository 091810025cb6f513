"""Anthropic hh-rlhf transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") split into turns: the one parser
behind the red-team corpus (ingest), the helpful reverse pairs (reverse_pairs) and the helpful preference pairs
(build_preferences).
"""

from __future__ import annotations

import re

from saferinstruct.sources.readers import BadField

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
Turns = list[tuple[str, str]]  # (role, content)


def parse_hh(transcript: str, field: str = "chosen") -> Turns:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> [("user", ...), ("assistant", ...)]."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise BadField(field, "text before the first 'Human:' turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [(roles[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
