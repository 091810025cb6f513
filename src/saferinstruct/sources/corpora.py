"""One loader per corpus format, each mapping the corpus's own labels onto the pipeline's categories.

A loader yields a :class:`Candidate` per record: the raw text, its category and labels, or the reason it cannot be
used (``empty_text``, ``artefact``, ``unmapped_label``, ``no_positive_label``). Clean-up and filtering happen later,
the same way for every corpus (see saferinstruct.sources.ingest). A user's own jsonl/CSV/JSON file is the ``user``
format: ``text_field`` names the text, and either ``category`` fixes one category for every row or
``category_field`` + ``category_map`` map a label column (a value equal to a category name maps to itself).
``hh_rlhf`` reads Anthropic hh-rlhf red-team transcripts (harmless-base): the source text is the last assistant turn
of the ``rejected`` transcript, the answer that complied with a harmful request; its human turns are checked against
the evaluation prompts like any other text of the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, model_validator

from saferinstruct.io import Quarantine
from saferinstruct.params import Params
from saferinstruct.records import CATEGORIES, Category
from saferinstruct.sources.hh_rlhf import parse_hh
from saferinstruct.sources.readers import BadField, field_id, field_int, field_str, parse_rows

MODERATION_FLAGS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
ARTEFACTS = frozenset({"#NAME?", "#VALUE!", "#REF!", "#N/A", "nan", "NaN", "None", "null"})


@dataclass
class Candidate:
    line: int
    text: str
    category: str | None = None
    labels: dict = field(default_factory=dict)
    reject: tuple[str, str] | None = None  # (reason, detail)
    also_match: tuple[str, ...] = ()  # other texts of the record that must not equal an evaluation prompt
    key: str | None = None  # the record's own id, when the corpus has one


class CorpusBase(Params):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: str
    licence: str = Field(min_length=1)
    cap_per_category: int | None = Field(default=None, ge=0)  # rows kept per category, a seeded sample
    min_chars: int | None = Field(default=None, ge=1)  # overrides ingest.min_chars for this corpus
    unescape_html: bool = False


class SaferInstructCorpus(CorpusBase):
    """Safer-Instruct sample CSVs: the source text is `rejected` (empty for illegal/nsfw rows in the release)."""

    format: Literal["safer_instruct"]
    label_map: dict[str, Category | None] = Field(default_factory=lambda: {
        "hate": "hate", "self-harm": "self-harm", "illegal": "illegal", "nsfw": "sexual"})


class DavidsonCorpus(CorpusBase):
    """Davidson et al. tweets: class 0 hate speech, 1 offensive, 2 neither (null = drop)."""

    format: Literal["davidson"]
    class_map: dict[int, Category | None] = Field(default_factory=lambda: {0: "hate", 1: None, 2: None})
    unescape_html: bool = True


class ModerationCorpus(CorpusBase):
    """OpenAI moderation samples: 0/1 flags; the first positive flag in map order gives the category."""

    format: Literal["openai_moderation"]
    label_map: dict[str, Category] = Field(default_factory=lambda: {
        "SH": "self-harm", "S3": "sexual", "S": "sexual", "V2": "violence", "V": "violence",
        "H2": "hate", "H": "hate", "HR": "hate"})


class RmhdCorpus(CorpusBase):
    """Reddit mental-health posts: subreddit -> category (case-insensitive); unmapped subreddits are dropped."""

    format: Literal["rmhd"]
    subreddit_map: dict[str, Category] = Field(default_factory=lambda: {
        "suicidewatch": "self-harm", "depression": "self-harm", "edanonymous": "self-harm", "guns": "violence"})
    unescape_html: bool = True  # posts arrive with "&amp;"


class HhRlhfCorpus(CorpusBase):
    """hh-rlhf red-team transcripts: the source text is the last assistant turn of ``side`` (the harmful answer)."""

    format: Literal["hh_rlhf"]
    side: Literal["rejected", "chosen"] = "rejected"
    category: Category = "other"  # the red-team data mixes harms and carries no per-row harm label
    max_user_turns: int | None = Field(default=1, ge=1)  # longer conversations: the answer depends on earlier turns


class UserCorpus(CorpusBase):
    """A user's own file, mapped by params (see the module docstring)."""

    format: Literal["user"]
    file_format: Literal["auto", "csv", "jsonl", "json"] = "auto"
    text_field: str = "text"
    category: Category | None = None
    category_field: str | None = None
    category_map: dict[str, Category | None] = Field(default_factory=dict)
    id_field: str | None = None

    @model_validator(mode="after")
    def _one_category_rule(self) -> UserCorpus:
        if (self.category is None) == (self.category_field is None):
            raise ValueError("set exactly one of category (fixed) or category_field (+ category_map)")
        return self


Corpus = Annotated[SaferInstructCorpus | DavidsonCorpus | ModerationCorpus | RmhdCorpus | HhRlhfCorpus | UserCorpus,
                   Field(discriminator="format")]


def _rows(corpus: CorpusBase, parse: Callable[[dict], Candidate], quarantine: Quarantine | None,
          required: list[str], fmt: str = "auto") -> Iterator[Candidate]:
    for line, cand in parse_rows(corpus.path, parse, quarantine, fmt=fmt, required=required):
        cand.line = line
        yield cand


def load_safer_instruct(c: SaferInstructCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    def parse(rec: dict) -> Candidate:
        text, label = field_str(rec, "rejected"), field_str(rec, "label").strip()
        cand = Candidate(0, text, c.label_map.get(label), {"label": label},
                         also_match=(field_str(rec, "instruction"),))
        if not text.strip():
            cand.reject = ("empty_text", "the release removed this text")
        elif text.strip() in ARTEFACTS:
            cand.reject = ("artefact", text.strip())
        elif cand.category is None:
            cand.reject = ("unmapped_label", f"label {label!r}")
        return cand

    return _rows(c, parse, q, ["instruction", "rejected", "label"])


def load_davidson(c: DavidsonCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    def parse(rec: dict) -> Candidate:
        cls = field_int(rec, "class")
        labels = {k: field_int(rec, k) for k in ("count", "hate_speech", "offensive_language", "neither") if k in rec}
        cand = Candidate(0, field_str(rec, "tweet"), c.class_map.get(cls), {"class": cls, **labels})
        if cls not in c.class_map:
            cand.reject = ("unmapped_label", f"class {cls}")
        elif cand.category is None:
            cand.reject = ("dropped_class", f"class {cls}")
        return cand

    return _rows(c, parse, q, ["class", "tweet"])


def load_moderation(c: ModerationCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    def parse(rec: dict) -> Candidate:
        text = field_str(rec, "prompt")
        known = dict.fromkeys([*MODERATION_FLAGS, *c.label_map])
        flags = {k: field_int(rec, k) for k in known if k in rec}
        if any(v not in (0, 1) for v in flags.values()):
            bad = next(k for k, v in flags.items() if v not in (0, 1))
            raise BadField(bad, f"expected 0 or 1, got {flags[bad]}")
        positive = [k for k, v in flags.items() if v == 1]
        mapped = [k for k in c.label_map if flags.get(k) == 1]
        cand = Candidate(0, text, c.label_map[mapped[0]] if mapped else None, flags)
        if not positive:
            cand.reject = ("no_positive_label", "every flag is 0")
        elif not mapped:
            cand.reject = ("unmapped_label", f"flags {positive}")
        return cand

    return _rows(c, parse, q, [])


def load_rmhd(c: RmhdCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    lower = {k.casefold(): v for k, v in c.subreddit_map.items()}

    def parse(rec: dict) -> Candidate:
        sub = field_str(rec, "subreddit").strip()
        cand = Candidate(0, field_str(rec, "post"), lower.get(sub.casefold()), {"subreddit": sub})
        if cand.category is None:
            cand.reject = ("unmapped_label", f"subreddit {sub!r}")
        return cand

    return _rows(c, parse, q, ["subreddit", "post"])


def load_hh_rlhf(c: HhRlhfCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    def parse(rec: dict) -> Candidate:
        turns = parse_hh(field_str(rec, c.side), c.side)
        if not turns or turns[-1][0] != "assistant":
            raise BadField(c.side, "a transcript must end with an Assistant turn")
        asked = tuple(text for role, text in turns if role == "user")
        cand = Candidate(0, turns[-1][1], c.category, {"user_turns": len(asked)}, also_match=asked)
        if c.max_user_turns is not None and len(asked) > c.max_user_turns:
            cand.reject = ("multi_turn", f"{len(asked)} user turns > max_user_turns={c.max_user_turns}")
        return cand

    return _rows(c, parse, q, [c.side])


def load_user(c: UserCorpus, q: Quarantine | None) -> Iterator[Candidate]:
    def parse(rec: dict) -> Candidate:
        cand = Candidate(0, field_str(rec, c.text_field))
        if c.id_field:
            cand.key = field_id(rec, c.id_field)
        if c.category is not None:
            cand.category = c.category
            return cand
        label = rec.get(c.category_field)
        if not isinstance(label, str | int) or isinstance(label, bool):
            raise BadField(c.category_field, f"expected a string label, got {type(label).__name__}")
        label = str(label).strip()
        cand.labels = {c.category_field: label}
        cand.category = c.category_map.get(label, label if label in CATEGORIES else None)
        if cand.category is None:
            cand.reject = ("unmapped_label", f"{c.category_field} {label!r}")
        return cand

    required = [c.text_field] + ([c.category_field] if c.category_field else [])
    return _rows(c, parse, q, required, fmt=c.file_format)


LOADERS: dict[str, Callable[..., Iterator[Candidate]]] = {
    "safer_instruct": load_safer_instruct, "davidson": load_davidson, "openai_moderation": load_moderation,
    "rmhd": load_rmhd, "hh_rlhf": load_hh_rlhf, "user": load_user}
