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

from saferinstruct.eval.capability import CapabilityParams, capability_metrics, load_references, model_nlls
from saferinstruct.eval.metrics import MetricsParams, compute_metrics, plot_rows
from saferinstruct.eval.sets import EvalPrompt, SetsParams, build_eval_sets
from saferinstruct.judging import refusal  # noqa: F401 - registers the offline `refusal_keywords` judge
from saferinstruct.judging.base import Judge, JudgeItem
from saferinstruct.judging.factory import JudgeSpec, build_judge
from saferinstruct.llm.base import ChatRequest, ChatResult, GenerationParams, make_backend
from saferinstruct.llm.gateway import Gateway, check_call_errors
from saferinstruct.params import Params, ParamsError
from saferinstruct.records import EvalResult

ModelName = Literal["base", "sft", "dpo"]


class GenerationSettings(Params):
    """How the policies under evaluation are run (greedy, short answers by default: refusals show in 64 tokens)."""

    backend: str = "transformers"
    backend_options: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16})
    system_prompt: str | None = None
    params: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=64))


def generate(model_path: Path | str, prompts: Sequence[EvalPrompt], settings: GenerationSettings,
             cache_dir: Path | str | None) -> tuple[list[ChatResult], dict]:
    """One model's answers to ``prompts``, in order, with the gateway counters."""
    backend = make_backend(settings.backend, {**settings.backend_options, "model_path": str(model_path)},
                           section="evaluate.generation.backend_options")
    gateway = Gateway(backend, cache_dir=cache_dir)
    requests = [ChatRequest.chat(p.prompt, system=settings.system_prompt, params=settings.params) for p in prompts]
    start = time.perf_counter()
    try:
        results = gateway.complete(requests)
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
                    ) -> tuple[list[EvalResult], dict]:
    """Results for every (model, prompt) pair and per-model stats (calls, cache hits, tokens, seconds). Calls that
    failed after their retries drop their row (counted under ``dropped.call_error``) up to ``max_error_fraction`` of
    all generation and judge calls; more raise :class:`~saferinstruct.llm.gateway.CallsFailed`."""
    results: list[EvalResult] = []
    stats: dict[str, dict] = {}
    calls = failed = 0
    cause: str | None = None
    for name, path in models.items():
        cache_dir = Path(cache_root) / name if cache_root else None
        answers, stats[name] = generate(path, prompts, settings, cache_dir)
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
                       train_prompts: Sequence[str], metrics: Mapping) -> dict:
    """The ``capability`` block: reference-answer NLL per model and the answered rate of Alpaca validation."""
    refs, overlap = load_references(reference, train_prompts, params.capability.reference_n, params.capability.seed)
    chat_template = bool(params.generation.backend_options.get("chat_template", True))
    nlls = {name: model_nlls(path, refs, params.capability, chat_template) for name, path in models.items()}
    safe = {name: metrics["models"].get(name, {}).get("safe", {}).get("alpaca_val") for name in models}
    return capability_metrics(nlls, safe, params.capability,
                              {"file": str(reference), "n": len(refs), "train_overlap": overlap})


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


@dataclass
class EvalRun:
    results: list[EvalResult]
    metrics: dict
    plots: dict[str, list[dict]]
    stats: dict


def run_evaluation(params: EvaluateParams, models_dir: Path | str, files: EvalFiles, train_prompts: Sequence[str],
                   cache_root: Path | str | None, secrets: Mapping[str, str] | None = None,
                   judge: Judge | None = None) -> EvalRun:
    """Load the sets, generate with every model, judge, and compute metrics and plot rows (``judge`` overrides the
    one ``params.judge`` describes; tests pass a fake)."""
    models = {name: Path(models_dir) / name for name in params.models}
    missing = [str(p) for p in models.values() if not p.is_dir()]
    if missing:
        raise ParamsError(f"model director{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} not found: "
                          "build them (dvc repro) or drop them from evaluate.models")
    prompts, report = build_eval_sets(params.sets, files.advbench, files.safer_instruct_test, files.xstest,
                                      train_prompts, files.root, files.donotanswer, files.alpaca_val)
    if judge is None:
        judge = build_judge(params.judge, prompt_path=files.judge_prompt, secrets=secrets, section="evaluate.judge",
                            cache_dir=Path(cache_root) / "judge" if cache_root else None)
    try:
        results, model_stats = evaluate_models(models, prompts, params.generation, judge, cache_root,
                                               params.max_error_fraction)
    finally:
        judge.close()
    metrics = compute_metrics(results, params.metrics, judge={"name": judge.name, "task": judge.task})
    start = time.perf_counter()
    if files.capability_reference and params.capability.reference_n != 0:
        metrics["capability"] = measure_capability(params, models, files.capability_reference, train_prompts, metrics)
    capability_seconds = round(time.perf_counter() - start, 3)
    plots = {"sets": plot_rows(results, params.metrics), "categories": plot_rows(results, params.metrics, True)}
    stats = {"prompts": len(prompts), "sets": {"read": report.read, "train_overlap": report.train_overlap,
                                              "kept": report.kept},
             "models": model_stats, "judge": judge.stats(), "capability_seconds": capability_seconds}
    return EvalRun(results, metrics, plots, stats)
