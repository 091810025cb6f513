"""On-policy sides for the preference pairs: the policy model's own answers replace the corpus texts where they fit.

The Safer-Instruct pairs pit an expert refusal against the original harmful text, and (in the mix) a corpus answer
against a refusal. Neither side is anything the policy would say, and on a small model that shows:

- SFT on a corpus' helpful answers (hh-rlhf's short chat replies) pulls the model off its own distribution, and the
  one repeated refusal becomes its safest mode: it refuses nearly everything.
- DPO learns little from lowering the likelihood of a tweet the model would never write.

So, per pair, the policy (the model about to be aligned, before alignment) answers the prompt greedily, and by params:
``helpful_chosen: policy`` makes its answer the chosen side of a helpful pair when it does not refuse (self-
distillation: SFT keeps the model's own helpful behaviour and learns the refusals), and ``safety_rejected: policy``
makes its answer the rejected side of a safety pair when it complies (DPO then lowers what the policy would really
do). Where the answer does not fit (a refusal to a helpful prompt, a refusal or degenerate text for a harmful one),
the original side stays and the stats count it. Answers go through the gateway's call cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from saferinstruct.respond import answer_text
from saferinstruct.llm.base import ChatRequest, GenerationParams, Message
from saferinstruct.llm.gateway import check_call_errors
from saferinstruct.hashing import in_holdout
from saferinstruct.llm.roles import Role, open_role
from saferinstruct.progress import complete
from saferinstruct.records import ChatTurn, PreferencePair, as_text
from saferinstruct.response_rules import classify_refusal, degenerate


class OnPolicyParams(Role):
    """params.yaml `onpolicy_pairs`: the policy role (model null: the stage's --model, models/base, for a local
    backend) and which sides its answers replace."""

    helpful_chosen: Literal["original", "policy"] = "policy"
    safety_rejected: Literal["original", "policy"] = "policy"
    # Share of the pairs of each kind set to `policy` that may take the policy's answer (a seeded draw by pair id,
    # stable when pairs are added or removed); the rest keep the corpus side. 1.0: all; between, a mixture of the
    # two pair kinds (the paper's and the on-policy ones): the frontier between their over- and under-refusal.
    policy_share: float = Field(default=1.0, ge=0.0, le=1.0)
    options: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16})
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=64))
    trim_truncated: bool = True  # an answer cut by max_tokens is trimmed back to its last full sentence
    min_chars: int = Field(default=20, ge=1)  # shorter answers are not used as a side
    # Share of calls that may still fail after retries: those pairs are dropped (counted under dropped.call_error);
    # above it the stage fails and writes nothing.
    max_error_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass
class OnPolicyRun:
    pairs: dict[str, list[PreferencePair]]
    stats: dict = field(default_factory=dict)


def prompt_messages(prompt: str | list[ChatTurn]) -> tuple[Message, ...]:
    turns = [ChatTurn(role="user", content=prompt)] if isinstance(prompt, str) else prompt
    return tuple(Message(role=t.role, content=t.content) for t in turns)


def _like(old: str | list[ChatTurn], text: str) -> str | list[ChatTurn]:
    """``text`` in the shape of the side it replaces (plain string or one assistant turn)."""
    return text if isinstance(old, str) else [ChatTurn(role="assistant", content=text)]


def fit(pair: PreferencePair, answer: str, params: OnPolicyParams) -> tuple[str | None, str]:
    """(side to replace or None, reason) for one pair and the policy's answer to its prompt."""
    want = "chosen" if pair.kind == "helpful" else "rejected"
    if (params.helpful_chosen if pair.kind == "helpful" else params.safety_rejected) == "original":
        return None, "original_by_params"
    if not in_holdout(pair.id, params.policy_share, salt="onpolicy_pairs.policy_share"):
        return None, "original_by_share"
    if len(answer) < params.min_chars or degenerate(answer):
        return None, "degenerate"
    # A refusal is no chosen answer to a harmless prompt, and no rejected one to a harmful prompt (the policy is
    # already safe there: the original harmful text stays the rejected side).
    if classify_refusal(answer)[0] != "compliance":
        return None, "policy_refused"
    if answer == as_text(pair.chosen if want == "rejected" else pair.rejected):
        return None, "same_as_other_side"
    return want, "policy"


def _drop_failed_calls(out: dict[str, list[PreferencePair]], results: Mapping[tuple[Message, ...], Any]) -> int:
    """Remove (in place) the pairs whose policy call failed after its retries; returns how many."""
    n = 0
    for name, rows in out.items():
        out[name] = [p for p in rows if results[prompt_messages(p.prompt)].outcome != "error"]
        n += len(rows) - len(out[name])
    return n


def onpolicy_pairs(splits: Mapping[str, Sequence[PreferencePair]], params: OnPolicyParams,
                   cache_dir: str | None, default_model: str | None = None,
                   secrets: Mapping[str, str] | None = None, progress: bool = True) -> OnPolicyRun:
    """Each split's pairs with policy answers swapped in where they fit; one generation per distinct prompt
    (``progress``: a bar with the time left on stderr, cached answers counted as done)."""
    out = {name: list(rows) for name, rows in splits.items()}
    wanted = params.helpful_chosen == "policy" or params.safety_rejected == "policy"
    if not wanted or not any(out.values()):
        return OnPolicyRun(out, {"pairs": {k: len(v) for k, v in out.items()}, "replaced": {}, "kept_original": {}})
    gateway = open_role(params, "onpolicy_pairs", cache_dir, default_model, secrets)
    requests: dict[tuple[Message, ...], ChatRequest] = {}
    for rows in out.values():
        for pair in rows:
            msgs = prompt_messages(pair.prompt)
            requests.setdefault(msgs, ChatRequest(messages=msgs, params=params.generation))
    try:
        answers = complete(gateway, list(requests.values()), "onpolicy_pairs", unit="answers", enabled=progress)
        results = dict(zip(requests, answers, strict=True))
    finally:
        gateway.close()
    check_call_errors("onpolicy_pairs", sum(r.outcome == "error" for r in results.values()), len(results),
                      params.max_error_fraction, gateway.stats.last_error)
    failed = _drop_failed_calls(out, results)
    replaced, kept = Counter(), Counter()
    for name, rows in out.items():
        for i, pair in enumerate(rows):
            result = results[prompt_messages(pair.prompt)]
            answer = answer_text(result, params.trim_truncated) if result.outcome == "ok" else ""
            side, reason = fit(pair, answer, params)
            if side is None:
                kept[f"{pair.kind}:{reason}"] += 1
                continue
            replaced[f"{pair.kind}_{side}"] += 1
            prov = {**pair.provenance, f"{side}_from": "policy", "policy_model": gateway.identity,
                    "policy_cache_key": result.cache_key, f"original_{side}": as_text(getattr(pair, side))}
            rows[i] = pair.model_copy(update={side: _like(getattr(pair, side), answer), "provenance": prov})
    return OnPolicyRun(out, {
        "pairs": {k: len(v) for k, v in out.items()}, "prompts": len(requests),
        "replaced": dict(sorted(replaced.items())), "kept_original": dict(sorted(kept.items())),
        "dropped": {"call_error": failed} if failed else {}, "policy_model": gateway.identity,
        "gateway": gateway.stats.as_dict()})
