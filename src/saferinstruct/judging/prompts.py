"""Prompt files (one per role, under prompts/) and rendering with untrusted text delimited as data.

A prompt file is Markdown: ``# system``, ``# user`` and ``# assistant`` headings start messages, in order; the last
message must be a user message (the request), earlier user/assistant pairs are few-shot examples. ``<!-- -->``
comments are dropped. Placeholders are ``{{instruction}}``, ``{{response}}``, ``{{source_text}}`` and
``{{data_tag}}`` (the name of the delimiter tag, so the prompt can tell the model what is data).

Why delimiting holds: each untrusted value is wrapped in ``<data-NONCE>`` ... ``</data-NONCE>`` where NONCE is a hash
of all the values being rendered. Text that tries to close the block would have to contain the hash of itself, so an
injected "ignore previous instructions" or a fake closing tag stays inside the data. The nonce is deterministic, so the
rendered prompt, and with it the call-cache key, is stable across runs. Substitution is one pass over the template
only: a value containing ``{{instruction}}`` is never expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from saferinstruct.errors import InputError
from saferinstruct.hashing import text_sha256
from saferinstruct.io import RowError
from saferinstruct.llm.base import Message

FIELDS = ("instruction", "response", "source_text")
# Two answers to one instruction, for the pairwise comparison (eval/pairwise.py); hashed into the nonce only when
# given, so every other prompt renders (and caches) as before.
PAIR_FIELDS = ("response_a", "response_b")
_HEADING = re.compile(r"^#\s+(system|user|assistant)\s*$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
MISSING = "(not available)"
_NONCE_LEN = 16
# A data block as render() writes it, when a judge's reply reproduces it; an unclosed one runs to the end of the reply.
_DATA_BLOCK = re.compile(rf"<(data-[0-9a-f]{{{_NONCE_LEN}}})\b[^>]*>.*?(?:</\1\s*>|\Z)", re.DOTALL)
_DATA_CLOSE = re.compile(rf"</data-[0-9a-f]{{{_NONCE_LEN}}}\s*>")


def strip_data_blocks(reply: str) -> str:
    """``reply`` without the spans that reproduce delimited data: whole blocks, an unclosed block to the end, and
    everything before a stray closing tag (a quote that began inside a block)."""
    reply = _DATA_BLOCK.sub(" ", reply)
    closings = list(_DATA_CLOSE.finditer(reply))
    return reply[closings[-1].end():] if closings else reply


@dataclass(frozen=True)
class PromptTemplate:
    path: str
    messages: tuple[tuple[str, str], ...]  # (role, template text)
    sha256: str

    @classmethod
    def load(cls, path: Path | str) -> PromptTemplate:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "prompt file not found")
        text = path.read_text(encoding="utf-8")
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, path: str = "<prompt>") -> PromptTemplate:
        # blank out comments but keep their newlines, so error line numbers stay right
        body = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        messages: list[tuple[str, list[str]]] = []
        for lineno, line in enumerate(body.splitlines(), start=1):
            heading = _HEADING.match(line)
            if heading:
                messages.append((heading.group(1).lower(), []))
            elif messages:
                messages[-1][1].append(line)
            elif line.strip():
                raise RowError(path, lineno, "text before the first '# system' / '# user' heading")
            for name in _PLACEHOLDER.findall(line):
                if name not in (*FIELDS, *PAIR_FIELDS, "data_tag"):
                    raise RowError(path, lineno, f"unknown placeholder {{{{{name}}}}} (known: "
                                                 f"{', '.join((*FIELDS, *PAIR_FIELDS))}, data_tag)")
        if not messages or messages[-1][0] != "user":
            raise RowError(path, None, "the last message must be a '# user' message (the request)")
        msgs = tuple((role, "\n".join(lines).strip()) for role, lines in messages)
        return cls(path=path, messages=msgs, sha256=text_sha256(text))

    def placeholders(self) -> set[str]:
        return {n for _, t in self.messages for n in _PLACEHOLDER.findall(t)}

    def render(self, values: dict[str, str | None], delimit: bool = True,
               examples: int | None = None) -> tuple[Message, ...]:
        """Messages with placeholders filled; ``examples`` keeps only the first N few-shot pairs (None = all)."""
        keys = (*FIELDS, *(k for k in PAIR_FIELDS if k in values))
        nonce = text_sha256("\x00".join(f"{k}={values.get(k) or ''}" for k in keys))[:_NONCE_LEN]
        tag = f"data-{nonce}"

        def fill(match: re.Match) -> str:
            name = match.group(1)
            if name == "data_tag":
                return tag
            value = values.get(name)
            value = MISSING if value is None else value
            if not delimit:
                return value
            safe = value.replace(tag, f"data_{nonce}")  # can only happen by a hash collision; cheap to rule out
            return f'<{tag} field="{name}">\n{safe}\n</{tag}>'

        kept = self._select_examples(examples)
        return tuple(Message(role=role, content=_PLACEHOLDER.sub(fill, text)) for role, text in kept)

    def _select_examples(self, examples: int | None) -> list[tuple[str, str]]:
        if examples is None:
            return list(self.messages)
        system = [m for m in self.messages[:1] if m[0] == "system"]
        shots = list(self.messages[len(system):-1])
        return system + shots[: 2 * examples] + [self.messages[-1]]
