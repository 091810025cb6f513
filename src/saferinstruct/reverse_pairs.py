"""Reverse pairs: instruction data -> (response -> instruction) pairs for reversed instruction tuning.

One loader per format: ``alpaca`` (instruction / input / output; the input is appended to the instruction), ``lima``
(LLaMA-Factory's lima.json: single-turn rows only, since a later turn depends on its history), ``selfinstruct``
(user-oriented tasks: one pair per instance) and ``messages`` (ShareGPT ``conversations`` with from/value, or OpenAI
``messages`` with role/content: the first user turn and the assistant turn after it) and ``hh_rlhf`` (Anthropic
hh-rlhf transcripts: the first Human question and the first answer of the chosen transcript, the chat-shaped
questions the other formats lack). Texts are kept verbatim apart
from outer whitespace (responses hold code). A pair's id is the dataset name and the record's own id (Self-Instruct)
or its line, plus the instance number (Self-Instruct); an id already used is rejected as ``duplicate_id``. Pairs
outside the length bounds, duplicates and pairs whose instruction is an evaluation prompt are rejected with a reason; a
seeded per-dataset sample keeps the default small; the train/val split is by seeded hash of the id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from saferinstruct.hashing import in_holdout, seeded_sample
from saferinstruct.io import Quarantine
from saferinstruct.params import Params
from saferinstruct.records import RejectedRow, ReversePair
from saferinstruct.rejects import Rejects
from saferinstruct.sources.hh_rlhf import parse_hh
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.readers import BadField, LineKeys, field_id, field_str, parse_rows
from saferinstruct.sources.text import match_key

STAGE = "reverse_pairs"
_SHOWN = 2000
_USER, _ASSISTANT = {"user", "human"}, {"assistant", "gpt", "bot", "model"}


class InstructionDataset(Params):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: Literal["alpaca", "lima", "selfinstruct", "messages", "hh_rlhf"]
    path: str
    licence: str = Field(min_length=1)
    file_format: Literal["auto", "csv", "jsonl", "json"] = "auto"
    max_pairs: int | None = Field(default=None, ge=0)  # seeded sample of the pairs that pass the filters


class ReversePairsParams(Params):
    """params.yaml `reverse_pairs`."""

    seed: int = 0
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    min_response_chars: int = Field(default=20, ge=1)
    max_response_chars: int = Field(default=800, ge=1)
    min_instruction_chars: int = Field(default=5, ge=1)
    max_instruction_chars: int = Field(default=400, ge=1)
    quarantine: bool = False
    eval_files: list[EvalFile] = Field(default_factory=list)
    datasets: list[InstructionDataset] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ReversePairsParams:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        return self


@dataclass
class _Pair:
    key: str  # the record's own id, "" for none (the line stands in)
    instruction: str
    response: str
    reject: tuple[str, str] | None = None
    part: int | None = None  # which of the record's pairs (Self-Instruct instances)


def _join(instruction: str, extra: str) -> str:
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()


def _alpaca(rec: dict) -> list[_Pair]:
    text = _join(field_str(rec, "instruction"), field_str(rec, "input") if rec.get("input") is not None else "")
    return [_Pair("", text, field_str(rec, "output"))]


def _lima(rec: dict) -> list[_Pair]:
    pair = _alpaca(rec)[0]
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise BadField("history", f"expected a list, got {type(history).__name__}")
    if history:
        pair.reject = ("multi_turn", f"{len(history)} earlier turns")
    return [pair]


def _selfinstruct(rec: dict) -> list[_Pair]:
    instruction, instances = field_str(rec, "instruction"), rec.get("instances")
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise BadField("instances", "expected a list of {input, output} objects")
    own_id = field_id(rec, "id") or ""
    return [_Pair(own_id, _join(instruction, field_str(inst, "input")), field_str(inst, "output"), part=k)
            for k, inst in enumerate(instances)]


def _messages(rec: dict) -> list[_Pair]:
    name = "messages" if "messages" in rec else "conversations"
    turns = rec.get(name)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise BadField(name, "expected a list of turns (ShareGPT from/value or role/content)")
    pairs = [(str(t.get("role", t.get("from", ""))).lower(), t.get("content", t.get("value"))) for t in turns]
    pairs = [(r, c) for r, c in pairs if r != "system"]
    if len(pairs) < 2 or pairs[0][0] not in _USER or pairs[1][0] not in _ASSISTANT:
        return [_Pair("", "", "", ("no_user_assistant_turns", "the first turns are not user then assistant"))]
    (_, prompt), (_, answer) = pairs[:2]
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise BadField(name, "the first user and assistant turns must hold strings")
    return [_Pair("", prompt, answer)]


def _hh_rlhf(rec: dict) -> list[_Pair]:
    turns = parse_hh(field_str(rec, "chosen"))
    if len(turns) < 2 or turns[0][0] != "user" or turns[1][0] != "assistant":
        return [_Pair("", "", "", ("no_user_assistant_turns", "the first turns are not Human then Assistant"))]
    return [_Pair("", turns[0][1], turns[1][1])]


_PARSERS = {"alpaca": _alpaca, "lima": _lima, "selfinstruct": _selfinstruct, "messages": _messages,
            "hh_rlhf": _hh_rlhf}


def _load(ds: InstructionDataset, quarantine: Quarantine | None) -> Iterator[tuple[str, int, _Pair]]:
    """``(id, line, pair)`` per pair: ``<dataset>:<record id or line>[.<instance>]``."""
    line_keys = LineKeys()
    for line, pairs in parse_rows(ds.path, _PARSERS[ds.format], quarantine, fmt=ds.file_format):
        where = line_keys(line)
        for pair in pairs:
            row_id = f"{ds.name}:{pair.key or where}"
            yield (row_id if pair.part is None else f"{row_id}.{pair.part}"), line, pair


@dataclass
class ReversePairsResult:
    train: list[ReversePair] = field(default_factory=list)
    val: list[ReversePair] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def _check(p: ReversePairsParams, pair: _Pair, eval_keys: set[str], seen: dict[str, str], row_id: str):
    """The reason to drop a pair, or None to keep it."""
    if pair.reject:
        return pair.reject
    ins, resp = len(pair.instruction.strip()), len(pair.response.strip())
    for n, lo, hi, what in ((resp, p.min_response_chars, p.max_response_chars, "response"),
                            (ins, p.min_instruction_chars, p.max_instruction_chars, "instruction")):
        if not lo <= n <= hi:
            return (f"{what}_too_{'short' if n < lo else 'long'}", f"{n} characters")
    key = match_key(pair.instruction)
    if key in eval_keys:
        return ("eval_leak", "instruction equals an evaluation prompt")
    if key in seen:
        return ("duplicate", f"same instruction as {seen[key]}")
    seen[key] = row_id
    return None


class _Run:
    def __init__(self, p: ReversePairsParams):
        self.p, self.eval_keys, self.seen = p, eval_prompt_keys(p.eval_files), {}
        self.id_lines: dict[str, int] = {}  # every id given out so far -> the line it came from
        self.res, self.rejects, self.read = ReversePairsResult(), Rejects(STAGE), Counter()
        self.res.rejected = self.rejects.rows

    def reject(self, ds: str, row_id: str, reason: str, detail: str, row: dict) -> None:
        self.rejects.add(ds, row_id, reason, detail, row)

    def dataset(self, ds: InstructionDataset) -> list[ReversePair]:
        quarantine, ok = (Quarantine() if self.p.quarantine else None), []
        for row_id, line, pair in _load(ds, quarantine):
            self.read[ds.name] += 1
            # a later stage keys rows by id: a second pair under one id would overwrite the first
            why = ("duplicate_id", f"id already used on line {self.id_lines[row_id]}") if row_id in self.id_lines \
                else _check(self.p, pair, self.eval_keys, self.seen, row_id)
            self.id_lines.setdefault(row_id, line)
            if why:
                shown = {"instruction": pair.instruction[:_SHOWN], "response": pair.response[:_SHOWN]}
                self.reject(ds.name, row_id, *why, shown)
                continue
            ok.append(ReversePair(id=row_id, instruction=pair.instruction.strip(), response=pair.response.strip(),
                                  dataset=ds.name, licence=ds.licence))
        for bad in quarantine.rows if quarantine else []:
            self.read[ds.name] += 1
            self.reject(ds.name, f"{ds.name}:{bad.line}", "malformed", bad.error,
                        {"file": bad.file, "line": bad.line, "raw": bad.raw[:_SHOWN]})
        if ds.max_pairs is None or len(ok) <= ds.max_pairs:
            return ok
        chosen = set(seeded_sample(len(ok), ds.max_pairs, f"{self.p.seed}:{ds.name}"))
        for i, row in enumerate(ok):
            if i not in chosen:
                self.reject(ds.name, row.id, "over_cap", f"max_pairs={ds.max_pairs}", {})
        return [row for i, row in enumerate(ok) if i in chosen]

    def stats(self) -> dict:
        res, total = self.res, self.rejects.total()

        def count(rows: list[ReversePair], name: str) -> int:
            return sum(r.dataset == name for r in rows)

        return {"read": sum(self.read.values()), "kept": len(res.train) + len(res.val), "train": len(res.train),
                "val": len(res.val), "rejected": dict(sorted(total.items())), "malformed": total.get("malformed", 0),
                "by_dataset": {d.name: {"read": self.read[d.name], "train": count(res.train, d.name),
                                        "val": count(res.val, d.name),
                                        "rejected": self.rejects.of(d.name)}
                               for d in self.p.datasets}}


def build_reverse_pairs(p: ReversePairsParams) -> ReversePairsResult:
    """All configured datasets -> filtered, sampled, split reverse pairs; rejects carry their reason."""
    run = _Run(p)
    kept = [row for ds in p.datasets for row in run.dataset(ds)]
    val_ids = {r.id for r in kept if in_holdout(r.id, p.val_fraction, p.seed)}  # stable across added/removed rows
    run.res.train = [r for r in kept if r.id not in val_ids]
    run.res.val = [r for r in kept if r.id in val_ids]
    run.res.stats = run.stats()
    return run.res
