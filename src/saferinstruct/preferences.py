"""build_preferences: kept instructions + safe expert responses + source texts -> TRL preference pairs, mixed with
helpfulness pairs.

Safety pair: prompt = the induced instruction, chosen = the expert's response (outcome ``ok`` and judged safe by
self-evaluation), rejected = the original harmful source text; provenance names the source corpus and licence, the
induction model, the judges' labels and scores, the expert model and every cache key. Helpfulness pairs come from
Anthropic hh-rlhf transcripts (``hh_rlhf``: the last assistant turns of chosen and rejected, the turns before them
the prompt) or any prompt/chosen/rejected file (``pairs``), sampled to ``helpful_ratio`` helpful pairs per safety
pair (1:1 by default). ``safety_pairs: human`` swaps the Safer-Instruct safety half for as many human-annotated
pairs (``human_pairs``: hh-rlhf harmless-base chosen vs rejected), the paper's baseline; the helpful half stays the
same pairs. Any prompt equal to an evaluation prompt (by match key) is removed and counted, as are
duplicate prompts. The train/test split is a seeded hash of the id within each kind, so the mix holds in both.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from saferinstruct.hashing import in_holdout, seeded_sample
from saferinstruct.helpful_pairs import HelpfulSource, load_helpful
from saferinstruct.io import Quarantine, RowError
from saferinstruct.params import Params
from saferinstruct.records import (ChatTurn, ExpertResponse, InducedInstruction, PreferencePair, RejectedRow,
                                   SourceText, Verdict, as_text)
from saferinstruct.rejects import Rejects
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.text import match_key

STAGE = "build_preferences"
_SHOWN = 2000


class PreferenceParams(Params):
    """params.yaml `build_preferences`."""

    seed: int = 0
    format: Literal["plain", "conversational"] = "plain"  # TRL's two standard preference shapes
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    helpful_ratio: float = Field(default=1.0, ge=0.0)  # helpful pairs per safety pair
    helpful_max_turns: int = Field(default=1, ge=1)  # user turns in a helpful prompt (1: single-turn only)
    # rejected side of a helpful pair: the corpus' own (original) or one of this dataset's expert refusals
    # (expert_refusal): a contrast pair that teaches DPO not to refuse harmless requests
    helpful_rejected: Literal["original", "expert_refusal"] = "original"
    # with expert_refusal: the share of helpful pairs (a seeded draw by pair id) that take a refusal as rejected side;
    # the rest keep the corpus' rejected answer (1.0: all contrast pairs; between, a mixture of the two pair kinds)
    contrast_share: float = Field(default=1.0, ge=0.0, le=1.0)
    # which helpful pairs join the mix: a seeded random sample (random), or for each safety prompt the most similar
    # unused helpful prompt by all-MiniLM-L6-v2 cosine (nearest): harmless look-alikes of the safety prompts, a
    # contrast meant to teach refusing the harm rather than the prompt's shape or topic
    helpful_selection: Literal["random", "nearest"] = "random"
    embedding_model: str = ""  # nearest: "" = the bundled all-MiniLM-L6-v2
    safe_response_labels: list[str] = Field(default_factory=lambda: ["safe"])
    require_response_verdict: bool = True  # false: a response without a self-eval verdict counts as safe
    max_safety_pairs: int | None = Field(default=None, ge=1)
    eval_files: list[EvalFile] = Field(default_factory=list)
    helpful: list[HelpfulSource] = Field(default_factory=list)
    # the safety half: safer_instruct (expert answer vs source text) | human (human-annotated pairs from human_pairs,
    # a seeded sample as large as the Safer-Instruct half would be, mixed with the same helpful pairs)
    safety_pairs: Literal["safer_instruct", "human"] = "safer_instruct"
    human_pairs: HelpfulSource | None = None
    human_max_turns: int = Field(default=1, ge=1)  # user turns in a human pair's prompt

    @model_validator(mode="after")
    def _human_needs_a_file(self) -> "PreferenceParams":
        if self.safety_pairs == "human" and self.human_pairs is None:
            raise ValueError("safety_pairs: human needs human_pairs (e.g. {name: hh_rlhf_harmless_base, format: "
                             "hh_rlhf, path: data/raw/sources/hh_rlhf_harmless_base_test.jsonl.gz, licence: MIT})")
        return self


@dataclass
class _Pair:
    id: str
    prompt: list[tuple[str, str]]  # (role, content) turns, ending with a user turn
    chosen: str
    rejected: str
    category: str
    kind: str
    parent_id: str | None = None
    provenance: dict = field(default_factory=dict)


@dataclass
class Inputs:
    sources: Sequence[SourceText]
    instructions: Sequence[InducedInstruction]
    instruction_verdicts: Sequence[Verdict]
    responses: Sequence[ExpertResponse]
    response_verdicts: Sequence[Verdict]


@dataclass
class PreferenceResult:
    train: list[PreferencePair] = field(default_factory=list)
    test: list[PreferencePair] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)  # model and judge identities, for the data card


class _Builder:
    def __init__(self, p: PreferenceParams, embedder=None):
        self.p, self.eval_keys, self.seen, self.embedder = p, eval_prompt_keys(p.eval_files), {}, embedder
        self.res, self.rejects = PreferenceResult(), Rejects(STAGE, groups=("safety", "helpful"))
        self.res.rejected = self.rejects.rows

    def reject(self, kind: str, row_id: str, reason: str, detail: str, row: dict | None = None,
               parent_id: str | None = None) -> None:
        self.rejects.add(kind, row_id, reason, detail, row, parent_id)

    def prompt_ok(self, kind: str, pair: _Pair) -> bool:
        """Leakage and duplicate checks shared by both kinds."""
        shown = {"prompt": as_text([ChatTurn(role=r, content=c) for r, c in pair.prompt])[:_SHOWN]}
        if any(match_key(c) in self.eval_keys for r, c in pair.prompt if r == "user"):
            self.reject(kind, pair.id, "eval_leak", "prompt equals an evaluation prompt", shown, pair.parent_id)
            return False
        key = match_key(" ".join(c for _, c in pair.prompt))
        if key in self.seen:
            self.reject(kind, pair.id, "duplicate_prompt", f"same prompt as {self.seen[key]}", shown, pair.parent_id)
            return False
        self.seen[key] = pair.id
        return True

    def safety(self, data: Inputs) -> list[_Pair]:
        sources = {s.id: s for s in data.sources}
        ivs = _first_by_parent(data.instruction_verdicts)
        rvs = _first_by_parent(data.response_verdicts)
        responses: dict[str, list[ExpertResponse]] = {}
        for r in data.responses:
            responses.setdefault(r.parent_id or "", []).append(r)
        pairs = []
        for ins in data.instructions:
            pid = f"safety:{ins.id}"
            src = sources.get(ins.parent_id or "")
            if src is None:
                self.reject("safety", pid, "no_source", f"source {ins.parent_id} is not in the sources file",
                            parent_id=ins.id)
                continue
            resp, why = self._safe_response(responses.get(ins.id, []), rvs)
            if resp is None:
                self.reject("safety", pid, why[0], why[1], {"instruction": ins.instruction[:_SHOWN]}, ins.id)
                continue
            pair = _Pair(pid, [("user", ins.instruction.strip())], resp.response.strip(), src.text, src.category,
                         "safety", parent_id=resp.id, provenance=_provenance(src, ins, ivs.get(ins.id), resp,
                                                                              rvs.get(resp.id)))
            if self.prompt_ok("safety", pair):
                pairs.append(pair)
        if self.p.max_safety_pairs is not None and len(pairs) > self.p.max_safety_pairs:
            pairs = self._sample("safety", pairs, self.p.max_safety_pairs)
        return pairs

    def _safe_response(self, candidates: list[ExpertResponse], rvs: dict[str, Verdict]):
        """The first response that is ``ok`` and judged safe, else (None, (reason, detail)) for the first one."""
        if not candidates:
            return None, ("no_response", "no expert response for this instruction")
        why = None
        for resp in candidates:
            verdict = rvs.get(resp.id)
            if resp.outcome != "ok":
                why = why or (f"response_{resp.outcome}", f"expert outcome {resp.outcome}")
            elif not resp.response.strip():
                why = why or ("empty_response", "")
            elif verdict is None and self.p.require_response_verdict:
                why = why or ("no_response_verdict", f"response {resp.id} has no self-evaluation verdict")
            elif verdict is not None and (not verdict.parse_ok or verdict.label not in self.p.safe_response_labels):
                label = verdict.label if verdict.parse_ok else "unparsed"
                why = why or (f"response_judged_{label}", f"self-evaluation label {label}")
            else:
                return resp, None
        return None, why

    def helpful(self) -> list[_Pair]:
        return [pair for spec in self.p.helpful
                for pair in self._pool("helpful", spec, self.p.helpful_max_turns, "helpful", "helpful")]

    def human(self, n: int) -> list[_Pair]:
        """``n`` human-annotated pairs (seeded sample) standing in for the Safer-Instruct safety half."""
        spec = self.p.human_pairs
        assert spec is not None  # PreferenceParams checks it
        pool = self._pool("safety", spec, self.p.human_max_turns, "human", "human")
        if len(pool) < n:
            raise RowError(spec.path, None, f"{len(pool)} usable human pairs, the Safer-Instruct half has {n}: raise "
                           "build_preferences.human_max_turns or set max_safety_pairs <= "
                           f"{len(pool)} (see data/rejected/build_preferences.jsonl)")
        return self._sample("safety", pool, n, "human")

    def _pool(self, kind: str, spec: HelpfulSource, max_turns: int, prefix: str, category: str) -> list[_Pair]:
        """One pair file's usable pairs (sides stripped) that pass the leakage and duplicate checks."""
        pool: list[_Pair] = []
        # public transcript dumps hold a few broken records (hh-rlhf: 9 of 2,354 end without an answer):
        # they are counted, not fatal
        quarantine = Quarantine()
        loaded = load_helpful(spec, quarantine)
        for bad in quarantine.rows:
            self.reject(kind, f"{prefix}:{spec.name}:{bad.line}", "malformed", bad.error)
        for line, (prompt, chosen, rejected) in loaded:
            pid = f"{prefix}:{spec.name}:{line}"
            users = sum(r == "user" for r, _ in prompt)
            if users > max_turns:
                self.reject(kind, pid, "too_many_turns", f"{users} user turns")
                continue
            if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
                self.reject(kind, pid, "empty_or_identical_sides", "")
                continue
            provenance = {"corpus": spec.name, "licence": spec.licence, "file": spec.path, "line": line}
            if prefix == "human":
                provenance["annotation"] = "human"
            pair = _Pair(pid, prompt, chosen.strip(), rejected.strip(), category, kind, provenance=provenance)
            if self.prompt_ok(kind, pair):
                pool.append(pair)
        return pool

    def mix(self, pool: list[_Pair], safety: list[_Pair], n_target: int) -> list[_Pair]:
        if len(pool) <= n_target:
            return pool
        if self.p.helpful_selection == "random":
            return self._sample("helpful", pool, n_target)
        if self.embedder is None:
            from saferinstruct.embeddings import Embedder

            self.embedder = Embedder(self.p.embedding_model or None)
        keep = set(nearest_unused(self.embedder.encode(_user_text(safety)), self.embedder.encode(_user_text(pool)),
                                  n_target, f"{self.p.seed}:nearest"))
        for i, pair in enumerate(pool):
            if i not in keep:
                self.reject("helpful", pair.id, "not_sampled", f"mix keeps the {n_target} nearest to safety prompts",
                            parent_id=pair.parent_id)
        return [pair for i, pair in enumerate(pool) if i in keep]

    def _sample(self, kind: str, pairs: list[_Pair], n: int, label: str | None = None) -> list[_Pair]:
        chosen = set(seeded_sample(len(pairs), n, f"{self.p.seed}:{label or kind}"))
        for i, pair in enumerate(pairs):
            if i not in chosen:
                self.reject(kind, pair.id, "not_sampled", f"mix/cap keeps {n}", parent_id=pair.parent_id)
        return [pair for i, pair in enumerate(pairs) if i in chosen]


def _user_text(pairs: list[_Pair]) -> list[str]:
    return ["\n\n".join(c for r, c in pair.prompt if r == "user") for pair in pairs]


def nearest_unused(queries: np.ndarray, candidates: np.ndarray, n: int, seed: str) -> list[int]:
    """Indices of ``n`` candidate rows: query rows take turns (seeded order, cycling while n is not reached), each
    taking its most similar candidate not yet taken (dot product: cosine for unit embeddings)."""
    ranked = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    n, taken, free, next_rank = min(n, len(candidates)), [], np.ones(len(candidates), bool), [0] * len(queries)
    while len(taken) < n:
        for q in order[:n - len(taken)]:
            while not free[ranked[q, next_rank[q]]]:
                next_rank[q] += 1
            j = int(ranked[q, next_rank[q]])
            free[j] = False
            taken.append(j)
    return taken


def _contrast(helpful: list[_Pair], safety: list[_Pair], seed: int, share: float = 1.0) -> list[_Pair]:
    """Helpful pairs whose rejected side is a refusal the expert wrote for a safety pair (seeded choice), for the
    ``share`` of them drawn by id hash; the others are returned unchanged."""
    rng = random.Random(f"{seed}:contrast")
    out = []
    for pair in helpful:
        donor = rng.choice(safety)  # drawn for every pair, so a pair's donor does not depend on the share
        if not in_holdout(pair.id, share, f"{seed}:contrast_share"):
            out.append(pair)
            continue
        out.append(replace(pair, rejected=donor.chosen,
                           provenance=pair.provenance | {"rejected_from": f"expert_refusal:{donor.id}"}))
    return out


def _first_by_parent(verdicts: Sequence[Verdict]) -> dict[str, Verdict]:
    out: dict[str, Verdict] = {}
    for v in verdicts:
        out.setdefault(v.parent_id or "", v)
    return out


def _provenance(src: SourceText, ins: InducedInstruction, iv: Verdict | None, resp: ExpertResponse,
                rv: Verdict | None) -> dict:
    prov = {"source_id": src.id, "corpus": src.provenance.corpus, "licence": src.provenance.licence,
            "file": src.provenance.file, "line": src.provenance.line, "instruction_id": ins.id,
            "induction_model": ins.model, "induction_cache_key": ins.cache_key, "expert_model": resp.model,
            "expert_cache_key": resp.cache_key}
    for prefix, v in (("instruction_judge", iv), ("response_judge", rv)):
        if v is not None:
            prov |= {prefix: v.judge, f"{prefix}_label": v.label, f"{prefix}_score": v.score,
                     f"{prefix}_cache_key": v.cache_key}
    return prov


def _render(pair: _Pair, fmt: str) -> PreferencePair:
    if fmt == "conversational":
        prompt: str | list[ChatTurn] = [ChatTurn(role=r, content=c) for r, c in pair.prompt]
        chosen: str | list[ChatTurn] = [ChatTurn(role="assistant", content=pair.chosen)]
        rejected: str | list[ChatTurn] = [ChatTurn(role="assistant", content=pair.rejected)]
    else:  # plain: a single user turn as is; earlier turns as a "User:/Assistant:" transcript
        prompt = pair.prompt[0][1] if len(pair.prompt) == 1 else "\n\n".join(
            f"{r.capitalize()}: {c}" for r, c in pair.prompt)
        chosen, rejected = pair.chosen, pair.rejected
    return PreferencePair(id=pair.id, parent_id=pair.parent_id, prompt=prompt, chosen=chosen, rejected=rejected,
                          category=pair.category, kind=pair.kind, provenance=pair.provenance)


def build_preferences(p: PreferenceParams, data: Inputs, embedder=None) -> PreferenceResult:
    """Join, filter, mix, split and render; raises RowError when not one safety pair survives. ``embedder`` (an
    ``encode(texts) -> unit rows`` object) serves helpful_selection nearest; None loads params' model when needed."""
    b = _Builder(p, embedder)
    safety = b.safety(data)
    if not safety:
        raise RowError("kept instructions", None, f"no safety pairs: of {len(data.instructions)} kept instructions none has a safe expert "
                         f"response ({dict(b.rejects.counts['safety'])}); check the upstream stages' stats")
    pool = b.helpful()
    helpful = b.mix(pool, safety, round(len(safety) * p.helpful_ratio))
    if p.helpful_rejected == "expert_refusal":
        helpful = _contrast(helpful, safety, p.seed, p.contrast_share)
    if p.safety_pairs == "human":  # after the mix: the helpful half stays the very pairs the default trains on
        safety = b.human(len(safety))
    res = b.res
    for kind, pairs in (("safety", safety), ("helpful", helpful)):
        # by id hash against test_fraction: a row keeps its split whatever rows are added or removed around it
        test_ids = {x.id for x in pairs if in_holdout(x.id, p.test_fraction, f"{p.seed}:{kind}")}
        res.train += [_render(x, p.format) for x in pairs if x.id not in test_ids]
        res.test += [_render(x, p.format) for x in pairs if x.id in test_ids]
    res.models = {"induction": sorted({i.model for i in data.instructions}),
                  "instruction_judge": sorted({v.judge for v in data.instruction_verdicts}),
                  "expert": sorted({r.model for r in data.responses}),
                  "response_judge": sorted({v.judge for v in data.response_verdicts})}
    res.stats = {**_stats(data, safety, helpful, len(pool), b.rejects.counts, res), "safety_pairs": p.safety_pairs}
    return res


def _count(rows: Sequence[PreferencePair], key: str) -> dict[str, int]:
    return dict(sorted(Counter(f"{r.kind}/{r.provenance.get(key, '') if key != 'category' else r.category}"
                               for r in rows).items()))


def _stats(data: Inputs, safety: list, helpful: list, pool: int, reasons: dict, res: PreferenceResult) -> dict:
    rows = res.train + res.test
    return {
        "funnel": {"source_texts": len(data.sources), "kept_instructions": len(data.instructions),
                   "expert_responses": len(data.responses),
                   "responses_ok": sum(r.outcome == "ok" for r in data.responses),
                   "safety_pairs": len(safety), "helpful_pool": pool, "helpful_pairs": len(helpful)},
        "helpful_per_safety": round(len(helpful) / len(safety), 4),
        "eval_leak": {k: reasons[k].get("eval_leak", 0) for k in ("safety", "helpful")},
        "rejected": {k: dict(sorted(v.items())) for k, v in reasons.items()},
        "train": len(res.train), "test": len(res.test),
        "by_category": _count(rows, "category"), "by_corpus": _count(rows, "corpus"),
        "by_licence": _count(rows, "licence"),
    }
