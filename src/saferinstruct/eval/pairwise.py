"""AlpacaEval-style pairwise win rate of each model against base, on held-out helpful prompts, by an LLM judge.

The judge sees the instruction and two answers and names the better one (``a``, ``b`` or ``tie``; prompt file
prompts/eval_pairwise.md). Judges favour a position, so every prompt is judged in both orders (the model's answer as
A, then as B): a *win* is the model preferred in both orders, a *loss* base preferred in both, a *tie* anything else
(the orders disagree, or the judge says tie in either). Two identical answers are a tie without a call. A prompt with
an order the judge's reply does not settle (unparseable, refused, failed call) is left out of n and counted. Rates
carry 95% Wilson intervals. Calls go through the judge's content-addressed call cache, so a re-run pays only for
changed answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from saferinstruct.errors import InputError
from saferinstruct.eval.stats import wilson_interval
from saferinstruct.judging.base import registered_judge
from saferinstruct.judging.factory import JudgeSpec
from saferinstruct.judging.parse import parse_verdict
from saferinstruct.judging.prompts import PromptTemplate
from saferinstruct.llm.base import ChatRequest, ChatResult, GenerationParams
from saferinstruct.llm.gateway import Gateway
from saferinstruct.llm.roles import open_role
from saferinstruct.params import Params
from saferinstruct.records import EvalResult

Outcome = Literal["win", "tie", "loss", "unknown"]
NOT_GENERATED = {"content_filter", "refused", "invalid_prompt"}  # evaluate's label for an answer never generated
NOT_MEASURED = "not measured: needs an LLM judge (evaluate.judge.backend openai, transformers, ...), not an offline one"


class PairwiseParams(Params):
    """params.yaml ``evaluate.pairwise``: the evaluated sets whose prompts are compared (held-out, helpful)."""

    sets: list[str] = Field(default_factory=lambda: ["alpaca_val"], min_length=1)


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    instruction: str
    model_answer: str
    base_answer: str


def _side(label: str, model_first: bool) -> str:
    """The judge's ``a``/``b``/``tie`` as ``model``/``base``/``tie``, given which answer was shown as A."""
    if label == "tie":
        return "tie"
    return "model" if (label == "a") == model_first else "base"


def combine(first: str, second: str) -> Outcome:
    """One prompt's outcome from the two orders' sides (``model``, ``base``, ``tie`` or ``unknown``)."""
    if "unknown" in (first, second):
        return "unknown"
    if first == second == "model":
        return "win"
    if first == second == "base":
        return "loss"
    return "tie"


class PairwiseJudge:
    """Asks an LLM (through a gateway with a call cache) which of two answers is better, in both orders."""

    def __init__(self, gateway: Gateway, prompt: PromptTemplate, generation: GenerationParams | None = None):
        self.gateway, self.prompt = gateway, prompt
        self.generation = generation or GenerationParams(max_tokens=128)
        self.name = f"llm:{gateway.identity}"

    def request(self, instruction: str, answer_a: str, answer_b: str) -> ChatRequest:
        values = {"instruction": instruction, "response_a": answer_a, "response_b": answer_b}
        return ChatRequest(messages=self.prompt.render(values), params=self.generation)

    def side(self, result: ChatResult, pair: Pair, model_first: bool) -> str:
        if result.outcome != "ok":
            return "unknown"
        parsed = parse_verdict(result.text, "pairwise", quoted=(pair.instruction, pair.model_answer, pair.base_answer))
        return _side(parsed.label, model_first) if parsed.ok else "unknown"

    def outcomes(self, pairs: Sequence[Pair]) -> tuple[list[Outcome], int]:
        """Each pair's outcome, and how many judge calls failed after retries (outcome ``error``)."""
        asked = [p for p in pairs if p.model_answer != p.base_answer]
        requests = [r for p in asked for r in (self.request(p.instruction, p.model_answer, p.base_answer),
                                               self.request(p.instruction, p.base_answer, p.model_answer))]
        results = self.gateway.complete(requests)
        by_id = {p.prompt_id: combine(self.side(results[2 * i], p, True), self.side(results[2 * i + 1], p, False))
                 for i, p in enumerate(asked)}
        failed = sum(r.outcome == "error" for r in results)
        return [by_id.get(p.prompt_id, "tie") for p in pairs], failed

    def close(self) -> None:
        self.gateway.close()


def load_pairwise_prompt(path: Path | str) -> PromptTemplate:
    """The pairwise prompt file, checked to show the instruction and both answers."""
    prompt = PromptTemplate.load(path)
    missing = {"instruction", "response_a", "response_b"} - prompt.placeholders()
    if missing:
        raise InputError(path, f"a pairwise prompt must contain {', '.join('{{' + m + '}}' for m in sorted(missing))}")
    return prompt


def build_pairwise_judge(spec: JudgeSpec, prompt: PromptTemplate, cache_dir: Path | str | None,
                         secrets: Mapping[str, str] | None = None, section: str = "evaluate.judge",
                         ) -> PairwiseJudge | None:
    """The pairwise judge on the evaluation judge's LLM backend (model, options, prices, budget), or None when that
    judge is an offline one (no model to ask)."""
    if registered_judge(spec.backend) is not None:
        return None
    return PairwiseJudge(open_role(spec, section, cache_dir, secrets=secrets), prompt, spec.generation)


def pairs_against(results: Sequence[EvalResult], model: str, base: str, sets: Sequence[str]) -> list[Pair]:
    """(instruction, model answer, base answer) for the prompts of ``sets`` both models answered; a prompt whose
    generation failed or was declined (no row, or its outcome as the label) for either model is left out."""
    answers: dict[str, dict[str, EvalResult]] = {}
    for r in results:
        if r.eval_set in sets and r.model_name in (model, base) and r.judge_label not in NOT_GENERATED:
            answers.setdefault(r.parent_id, {})[r.model_name] = r
    return [Pair(pid, rows[model].prompt, rows[model].response, rows[base].response)
            for pid, rows in answers.items() if model in rows and base in rows]


def rates(outcomes: Sequence[Outcome]) -> dict:
    """Win, tie and loss counts and rates over the settled prompts, each rate with its 95% Wilson interval."""
    counts = Counter(outcomes)
    n = counts["win"] + counts["tie"] + counts["loss"]
    out: dict = {"n": n, "unsettled": counts["unknown"]}
    for name, plural in (("win", "wins"), ("tie", "ties"), ("loss", "losses")):
        low, high = wilson_interval(counts[name], n)
        out |= {plural: counts[name], f"{name}_rate": round(counts[name] / n, 4) if n else None,
                f"{name}_ci": [round(low, 6), round(high, 6)] if n else None}
    return out
