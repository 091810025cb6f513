"""The ingest step: raw safety corpora -> clean, categorised, deduplicated SourceText rows with provenance.

Per record, in order: the corpus loader's own verdict (empty text, artefact, unmapped label), whitespace
normalisation, PII scrubbing, length bounds, evaluation-prompt leakage (the text, or another text of the same record
such as a Safer-Instruct instruction, equals an evaluation prompt), exact duplicates across all corpora (first kept).
A record whose id (its ``id_field`` value, else its line) was already used is rejected as ``duplicate_id`` before
anything else, so no two rows ever share an id. Then a seeded per-(corpus, category) cap keeps the default run small.
Every dropped record becomes a RejectedRow with its reason; malformed records are either an error naming file and line
or, with ``quarantine: true``, rejects with reason ``malformed``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from saferinstruct.hashing import seeded_sample
from saferinstruct.io import Quarantine
from saferinstruct.params import Params
from saferinstruct.records import Provenance, RejectedRow, SourceText
from saferinstruct.rejects import Rejects
from saferinstruct.sources.corpora import LOADERS, Candidate, Corpus
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.readers import LineKeys
from saferinstruct.sources.text import match_key, normalise_whitespace, scrub_pii

STAGE = "ingest"
_SHOWN = 2000  # characters of a rejected text kept in the rejects file (a 10 MB line stays a small reject)


class IngestParams(Params):
    """params.yaml `ingest`."""

    seed: int = 0
    min_chars: int = Field(default=20, ge=1)
    max_chars: int = Field(default=1000, ge=1)
    scrub_pii: bool = True
    quarantine: bool = False  # true: malformed records become counted rejects instead of stopping the stage
    eval_files: list[EvalFile] = Field(default_factory=list)
    corpora: list[Corpus] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IngestParams:
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpus names must be unique, got {names}")
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars is larger than max_chars")
        return self


@dataclass
class IngestResult:
    kept: list[SourceText] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


class _Run:
    """Accumulates kept rows, rejects and counters over all corpora."""

    def __init__(self, params: IngestParams):
        self.p = params
        self.eval_keys = eval_prompt_keys(params.eval_files)
        self.seen: dict[str, str] = {}
        self.id_lines: dict[str, int] = {}  # every id given out so far -> the line it came from
        self.groups: dict[tuple[str, str], list[SourceText]] = defaultdict(list)
        self.result = IngestResult()
        self.rejects = Rejects(STAGE)
        self.result.rejected = self.rejects.rows
        self.read: Counter = Counter()

    def reject(self, corpus: str, row_id: str, reason: str, detail: str, row: dict) -> None:
        self.rejects.add(corpus, row_id, reason, detail, row)

    def corpus(self, c: Corpus) -> None:
        quarantine, line_keys = (Quarantine() if self.p.quarantine else None), LineKeys()
        for cand in LOADERS[c.format](c, quarantine):
            self.read[c.name] += 1
            self.candidate(c, cand, f"{c.name}:{cand.key or line_keys(cand.line)}")
        for bad in quarantine.rows if quarantine else []:
            self.read[c.name] += 1
            self.reject(c.name, f"{c.name}:{bad.line}", "malformed", bad.error,
                        {"file": bad.file, "line": bad.line, "raw": bad.raw[:_SHOWN]})

    def candidate(self, c: Corpus, cand: Candidate, row_id: str) -> None:
        shown = {"corpus": c.name, "line": cand.line, "text": cand.text[:_SHOWN]}
        if row_id in self.id_lines:  # a later stage keys rows by id: a second row would overwrite the first
            return self.reject(c.name, row_id, "duplicate_id", f"id already used on line {self.id_lines[row_id]}",
                               shown)
        self.id_lines[row_id] = cand.line
        if cand.reject:
            return self.reject(c.name, row_id, *cand.reject, shown)
        text = normalise_whitespace(cand.text, c.unescape_html)
        pii: Counter = Counter()
        if self.p.scrub_pii:
            text, pii = scrub_pii(text)
        min_chars = c.min_chars or self.p.min_chars
        if len(text) < min_chars or len(text) > self.p.max_chars:
            reason = "too_short" if len(text) < min_chars else "too_long"
            return self.reject(c.name, row_id, reason, f"{len(text)} characters", shown)
        key = match_key(text)
        if key in self.eval_keys or any(match_key(t) in self.eval_keys for t in cand.also_match):
            return self.reject(c.name, row_id, "eval_leak", "equals an evaluation prompt", shown)
        if key in self.seen:
            return self.reject(c.name, row_id, "duplicate", f"same text as {self.seen[key]}", shown)
        self.seen[key] = row_id
        row = SourceText(id=row_id, text=text, category=cand.category, labels=cand.labels, pii_scrubbed=dict(pii),
                         provenance=Provenance(corpus=c.name, licence=c.licence, file=c.path, line=cand.line))
        self.groups[(c.name, cand.category)].append(row)

    def cap(self) -> None:
        caps = {c.name: c.cap_per_category for c in self.p.corpora}
        keep: set[str] = set()
        for (corpus, category), rows in self.groups.items():
            n = caps[corpus]
            chosen = seeded_sample(len(rows), n, f"{self.p.seed}:{corpus}:{category}")
            keep.update(rows[i].id for i in chosen)
        for c in self.p.corpora:  # corpus order, then file order: stable output
            for row in (r for (name, _), rows in self.groups.items() if name == c.name for r in rows):
                if row.id in keep:
                    self.result.kept.append(row)
                else:
                    self.reject(c.name, row.id, "over_cap", f"cap_per_category={caps[c.name]}",
                                {"corpus": c.name, "line": row.provenance.line, "text": row.text[:_SHOWN]})


def ingest(params: IngestParams) -> IngestResult:
    """Read every configured corpus; returns kept rows, rejects (with reasons) and the stats dict."""
    run = _Run(params)
    for c in params.corpora:
        run.corpus(c)
    run.cap()
    kept = Counter(r.provenance.corpus for r in run.result.kept)
    total, pii = Counter(), Counter()
    total.update(run.rejects.total())
    for row in run.result.kept:
        pii.update(row.pii_scrubbed)
    run.result.stats = {
        "read": sum(run.read.values()), "kept": len(run.result.kept), "rejected": dict(sorted(total.items())),
        "malformed": total.get("malformed", 0), "eval_prompts": len(run.eval_keys),
        "by_category": dict(sorted(Counter(r.category for r in run.result.kept).items())),
        "pii_scrubbed": dict(sorted(pii.items())),
        "by_corpus": {c.name: {"read": run.read[c.name], "kept": kept[c.name],
                               "rejected": run.rejects.of(c.name)} for c in params.corpora},
    }
    return run.result
