"""The evaluation harness: every model answers every prompt through the gateway, the judge labels every answer.

Models run one at a time (one in memory), each with its own call cache directory, so re-evaluating after only the DPO
model changed regenerates nothing for base and SFT, and a crash resumes where it stopped. A generation the backend
could not make (an over-long prompt, an error) is kept with ``parse_ok=False`` and its outcome as the label, so it is
counted next to the judge's parse failures instead of being scored as an answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from saferinstruct.eval.capability import CapabilityParams, cached_model_nlls, capability_metrics, load_references
from saferinstruct.eval.metrics import MetricsParams, compute_metrics, plot_rows
from saferinstruct.eval.pairwise import (NOT_MEASURED, PairwiseParams, build_pairwise_judge, load_pairwise_prompt,
                                         pairs_against, rates)
from saferinstruct.eval.sets import EvalPrompt, SetsParams, build_eval_sets
from saferinstruct.judging import refusal  # noqa: F401 - registers the offline `refusal_keywords` judge
from saferinstruct.judging.base import Judge, JudgeItem
from saferinstruct.judging.factory import JudgeSpec, build_judge, check_judge
from saferinstruct.judging.prompts import PromptTemplate
from saferinstruct.llm.base import ChatRequest, ChatResult, GenerationParams
from saferinstruct.llm.gateway import check_call_errors
from saferinstruct.llm.roles import RoleRun, check_role, open_role
from saferinstruct.params import Params, ParamsError
from saferinstruct.progress import complete
from saferinstruct.records import EvalResult

ModelName = Literal["base", "sft", "dpo"]


GENERATION = "evaluate.generation"


class GenerationSettings(RoleRun):
    """params.yaml ``evaluate.generation``: how the policies under evaluation are run, a role whose model is each
    policy in turn (greedy, short answers by default: refusals show in 64 tokens)."""

    options: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16})
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=64))
    system_prompt: str | None = None


def generate(model_path: Path | str, prompts: Sequence[EvalPrompt], settings: GenerationSettings,
             cache_dir: Path | str | None, progress: bool = True, desc: str = "evaluate"
             ) -> tuple[list[ChatResult], dict]:
    """One model's answers to ``prompts``, in order, with the gateway counters (``progress``: a bar named ``desc``
    with the time left on stderr, cached answers counted as done)."""
    gateway = open_role(settings.model_copy(update={"options": {**settings.options, "model_path": str(model_path)}}),
                        GENERATION, cache_dir)
    requests = [ChatRequest.chat(p.prompt, system=settings.system_prompt, params=settings.generation)
                for p in prompts]
    start = time.perf_counter()
    try:
        results = complete(gateway, requests, desc, unit="answers", enabled=progress)
    finally:
        gateway.close()
    return results, {**gateway.stats.as_dict(), "seconds": round(time.perf_counter() - start, 3)}


def judge_answers(model_name: str, prompts: Sequence[EvalPrompt], answers: Sequence[ChatResult],
                  judge: Judge) -> list[EvalResult]:
    """Judge the answers that exist; generations the backend declined (e.g. invalid_prompt) are kept, labelled by
    their outcome, parse_ok False. A call that failed after its retries (generation or judge) is no row at all: the
    caller counts it against ``max_error_fraction``."""
    ok = [i for i, a in enumerate(answers) if a.outcome == "ok"]
    verdicts = dict(zip(ok, judge.judge([JudgeItem(id=f"{model_name}:{prompts[i].id}", instruction=prompts[i].prompt,
                                                   response=answers[i].text) for i in ok])))
    out = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        v = verdicts.get(i)
        if a.outcome == "error" or (v is not None and judge.call_failed(v)):
            continue
        out.append(EvalResult(id=f"{model_name}:{p.id}", parent_id=p.id, model_name=model_name, eval_set=p.eval_set,
                              group=p.group, prompt=p.prompt, prompt_label=p.kind, response=a.text,
                              judge_label=v.label if v else a.outcome, parse_ok=bool(v and v.parse_ok)))
    return out


def evaluate_models(models: dict[str, Path | str], prompts: Sequence[EvalPrompt], settings: GenerationSettings,
                    judge: Judge, cache_root: Path | str | None, max_error_fraction: float = 0.0,
                    progress: bool = True) -> tuple[list[EvalResult], dict]:
    """Results for every (model, prompt) pair and per-model stats (calls, cache hits, tokens, seconds). Calls that
    failed after their retries drop their row (counted under ``dropped.call_error``) up to ``max_error_fraction`` of
    all generation and judge calls; more raise :class:`~saferinstruct.llm.gateway.CallsFailed`."""
    results: list[EvalResult] = []
    stats: dict[str, dict] = {}
    calls = failed = 0
    cause: str | None = None
    for name, path in models.items():
        cache_dir = Path(cache_root) / name if cache_root else None
        answers, stats[name] = generate(path, prompts, settings, cache_dir, progress, f"evaluate: {name}")
        stats[name]["generation_failures"] = sum(a.outcome != "ok" for a in answers)
        rows = judge_answers(name, prompts, answers, judge)
        answered = sum(a.outcome == "ok" for a in answers)
        calls += len(answers) + answered  # one generation per prompt, one judge call per answer
        stats[name]["dropped"] = {"call_error": len(answers) - len(rows)} if len(rows) < len(answers) else {}
        failed += len(answers) - len(rows)
        cause = judge.last_call_error() or next((a.error for a in answers if a.outcome == "error"), cause)
        results += rows
    check_call_errors("evaluate", failed, calls, max_error_fraction, cause)
    return results, stats


class EvaluateParams(Params):
    """params.yaml ``evaluate``: which models, which prompts, how they generate, who judges, what counts."""

    models: list[ModelName] = Field(default_factory=lambda: ["base", "sft", "dpo"], min_length=1)
    sets: SetsParams = Field(default_factory=SetsParams)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    judge: JudgeSpec = Field(default_factory=lambda: JudgeSpec(backend="refusal_keywords", task="refusal"))
    metrics: MetricsParams = Field(default_factory=MetricsParams)
    capability: CapabilityParams = Field(default_factory=CapabilityParams)
    pairwise: PairwiseParams = Field(default_factory=PairwiseParams)  # win rate against base (LLM judges only)
    # Share of generation and judge calls that may still fail after retries: their rows are dropped (counted under
    # dropped.call_error per model); above it the stage fails and writes nothing.
    max_error_fraction: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each model may be listed once")
        return v

    @field_validator("judge")
    @classmethod
    def _refusal_task(cls, v: JudgeSpec) -> JudgeSpec:
        if v.task not in ("refusal", "harm"):
            raise ValueError("the evaluation judge must do task 'refusal' (labels refusal | compliance | partial) "
                             "or 'harm' (labels harmful | harmless)")
        return v

    @model_validator(mode="after")
    def _harm_labels_counted(self) -> EvaluateParams:
        # a harm judge's labels are harmful | harmless: harmless_rate must count its own label, not refusals
        if self.judge.task == "harm" and "harmless" not in self.metrics.harmless_labels:
            raise ValueError("evaluate.judge does task 'harm': set evaluate.metrics.harmless_labels: [harmless]")
        return self


def measure_capability(params: EvaluateParams, models: Mapping[str, Path], reference: Path | str,
                       train_prompts: Sequence[str], metrics: Mapping, cache_dir: Path | str | None = None,
                       ) -> tuple[dict, list[str]]:
    """The ``capability`` block: reference-answer NLL per model and the answered rate of Alpaca validation; and the
    models whose NLLs came from ``cache_dir`` (unchanged since they were scored)."""
    refs, overlap = load_references(reference, train_prompts, params.capability.reference_n, params.capability.seed)
    chat_template = bool(params.generation.options.get("chat_template", True))
    scored = {name: cached_model_nlls(path, refs, params.capability, chat_template, cache_dir)
              for name, path in models.items()}
    nlls = {name: values for name, (values, _) in scored.items()}
    safe = {name: metrics["models"].get(name, {}).get("safe", {}).get("alpaca_val") for name in models}
    block = capability_metrics(nlls, safe, params.capability,
                               {"file": str(reference), "n": len(refs), "train_overlap": overlap})
    return block, [name for name, (_, hit) in scored.items() if hit]


def measure_pairwise(params: EvaluateParams, results: Sequence[EvalResult], prompt: PromptTemplate,
                     cache_root: Path | str | None, secrets: Mapping[str, str] | None) -> tuple[dict, dict]:
    """The ``pairwise`` block (what was compared, or why not) and its stats; each model's win / tie / loss rates
    against base go into ``metrics.models.<model>.pairwise_vs_base`` (see :mod:`saferinstruct.eval.pairwise`)."""
    others = [m for m in params.models if m != "base"]
    if "base" not in params.models or not others:
        return {"measured": False, "why": "not measured: needs base and another model in evaluate.models"}, {}
    judge = build_pairwise_judge(params.judge, prompt, Path(cache_root) / "pairwise" if cache_root else None,
                                 secrets)
    if judge is None:
        return {"measured": False, "why": NOT_MEASURED}, {}
    start, per_model, failed = time.perf_counter(), {}, 0
    try:
        for name in others:
            outcomes, errors = judge.outcomes(pairs_against(results, name, "base", params.pairwise.sets))
            per_model[name], failed = rates(outcomes), failed + errors
    finally:
        judge.close()
    gateway = judge.gateway.stats
    check_call_errors("evaluate (pairwise)", failed, gateway.requests, params.max_error_fraction, gateway.last_error)
    block = {"measured": True, "baseline": "base", "sets": list(params.pairwise.sets), "judge": judge.name,
             "prompt": prompt.path, "prompt_sha256": prompt.sha256, "models": per_model}
    return block, {**gateway.as_dict(), "seconds": round(time.perf_counter() - start, 3)}


@dataclass
class EvalFiles:
    advbench: Path | str
    safer_instruct_test: Path | str
    xstest: Path | str
    judge_prompt: Path | str | None = None
    root: Path | str = "."  # user sets' paths are relative to it
    donotanswer: Path | str | None = None  # directory of Do-Not-Answer's risk-area files (its evaluation half is used)
    alpaca_val: Path | str | None = None  # Alpaca validation instructions (over-refusal on ordinary requests)
    capability_reference: Path | str | None = None  # reference answers for the capability NLL (None: not measured)
    pairwise_prompt: Path | str | None = None  # the pairwise judge's prompt (None: the win rate is not measured)


@dataclass
class EvalRun:
    results: list[EvalResult]
    metrics: dict
    plots: dict[str, list[dict]]
    stats: dict


def run_evaluation(params: EvaluateParams, models_dir: Path | str, files: EvalFiles, train_prompts: Sequence[str],
                   cache_root: Path | str | None, secrets: Mapping[str, str] | None = None,
                   judge: Judge | None = None, progress: bool = True) -> EvalRun:
    """Load the sets, generate with every model, judge, and compute metrics and plot rows (``judge`` overrides the
    one ``params.judge`` describes; tests pass a fake; ``progress``: one generation bar per model on stderr)."""
    check_role(params.generation, GENERATION)  # a misspelled backend or option fails before any work
    if judge is None:
        check_judge(params.judge, "evaluate.judge")
    models = {name: Path(models_dir) / name for name in params.models}
    missing = [str(p) for p in models.values() if not p.is_dir()]
    if missing:
        raise ParamsError(f"model director{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} not found: "
                          "build them (dvc repro) or drop them from evaluate.models")
    prompts, report = build_eval_sets(params.sets, files.advbench, files.safer_instruct_test, files.xstest,
                                      train_prompts, files.root, files.donotanswer, files.alpaca_val)
    # read before any generation, so a missing or broken prompt file or an unknown set fails at once
    pairwise_prompt = load_pairwise_prompt(files.pairwise_prompt) if files.pairwise_prompt is not None else None
    unknown = sorted(set(params.pairwise.sets) - set(report.read)) if pairwise_prompt else []
    if unknown:
        raise ParamsError(f"evaluate.pairwise.sets: no evaluation set {', '.join(unknown)} "
                          f"(sets: {', '.join(report.read)})")
    if judge is None:
        judge = build_judge(params.judge, prompt_path=files.judge_prompt, secrets=secrets, section="evaluate.judge",
                            cache_dir=Path(cache_root) / "judge" if cache_root else None)
    try:
        results, model_stats = evaluate_models(models, prompts, params.generation, judge, cache_root,
                                               params.max_error_fraction, progress)
    finally:
        judge.close()
    metrics = compute_metrics(results, params.metrics, judge={"name": judge.name, "task": judge.task})
    start, nll_cached = time.perf_counter(), []
    if files.capability_reference and params.capability.reference_n != 0:
        metrics["capability"], nll_cached = measure_capability(params, models, files.capability_reference,
                                                               train_prompts, metrics,
                                                               Path(cache_root) / "nll" if cache_root else None)
    capability_seconds = round(time.perf_counter() - start, 3)
    pairwise_stats: dict = {}
    if pairwise_prompt is not None:
        metrics["pairwise"], pairwise_stats = measure_pairwise(params, results, pairwise_prompt, cache_root, secrets)
        for name, entry in metrics["pairwise"].pop("models", {}).items():
            if name in metrics["models"]:  # a model none of whose answers survived has no entry to extend
                metrics["models"][name]["pairwise_vs_base"] = entry
    plots = {"sets": plot_rows(results, params.metrics), "categories": plot_rows(results, params.metrics, True)}
    stats = {"prompts": len(prompts), "sets": {"read": report.read, "train_overlap": report.train_overlap,
                                              "kept": report.kept},
             "models": model_stats, "judge": judge.stats(), "capability_seconds": capability_seconds,
             "capability_cached": nll_cached,
             "pairwise": pairwise_stats}
    return EvalRun(results, metrics, plots, stats)
