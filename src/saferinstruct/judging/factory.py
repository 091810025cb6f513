"""``JudgeSpec`` (a params section) -> a ready :class:`~saferinstruct.judging.base.Judge`.

``backend`` is either a registered judge (:func:`~saferinstruct.judging.base.register_judge`: the offline
``embedding_classifier`` in judging.classifier, ``safe_response`` in judging.safe_response, ``refusal_keywords`` in
judging.refusal, and ``saferinstruct.judges`` plugins; no key, no server, no GPU) or any gateway backend (``openai``,
``transformers``, ``vllm``, ``fake``, plugins), which makes an :class:`~saferinstruct.judging.llm_judge.LLMJudge` with
a prompt file and a call cache. This module imports no judge: a stage imports the offline judge modules it offers, so
its import closure (its dvc.yaml deps) holds only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.judging.backend_options import PriceParams, checked_backend_class, with_model
from saferinstruct.judging.base import Judge, Task, registered_judge, registered_judges
from saferinstruct.llm.base import GenerationParams, make_backend
from saferinstruct.params import Params, ParamsError


class JudgeSpec(Params):
    backend: str = "embedding_classifier"
    task: Task = "instruction"
    # LLM backends: the model name (openai: `model`; transformers/vllm: `model_path`). Unused by offline judges.
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=128))
    # embedding_classifier: P(unsafe) at or above which the label is `unsafe` (null: the trained head's own);
    # LLM harm judges: the StrongREJECT-style rubric score at or above which an answer is `harmful` (null: 0.5).
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    # LLM judges: the prompt file, instead of the stage's default (e.g. prompts/eval_harm_strongreject.md).
    prompt: str | None = None
    prices: PriceParams = Field(default_factory=PriceParams)
    budget_usd: float | None = Field(default=None, gt=0.0)


class JudgeStageSpec(JudgeSpec):
    """A judging stage's own section (``judge_instructions``, ``self_evaluate``): the judge plus the share of its calls
    that may still fail after retries (those rows are dropped and counted; above it the stage fails and writes
    nothing)."""

    max_error_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


def build_judge(spec: JudgeSpec, prompt_path: Path | str | None = None, cache_dir: Path | str | None = None,
                secrets: Mapping[str, str] | None = None, classifier_dir: Path | str | None = None,
                section: str = "judge_instructions") -> Judge:
    """The judge ``spec`` describes. ``prompt_path`` and ``cache_dir`` are for LLM judges, ``classifier_dir`` (the
    output of train_safety_classifier) for the embedding classifier; ``secrets`` maps env var names to values;
    ``section`` is the params section ``spec`` came from (named in option errors)."""
    offline = registered_judge(spec.backend)
    if offline is not None:
        task, build = offline
        if spec.task != task:
            raise ParamsError(f"judge backend '{spec.backend}' does task '{task}', not '{spec.task}'")
        return build(spec, classifier_dir, section)
    from saferinstruct.judging.llm_judge import LLMJudge
    from saferinstruct.judging.prompts import PromptTemplate
    from saferinstruct.llm.gateway import Gateway, Prices

    prompt_path = spec.prompt or prompt_path
    if prompt_path is None:
        raise ParamsError(f"an LLM judge (backend '{spec.backend}') needs a prompt file ({section}.prompt)")
    prompt = PromptTemplate.load(prompt_path)
    checked_backend_class(spec.backend, also=f"; offline judges here: {', '.join(registered_judges()) or 'none'}")
    backend = make_backend(spec.backend, with_model(spec.backend, spec.options, spec.model), secrets=secrets,
                           section=f"{section}.options")
    gateway = Gateway(backend, cache_dir=cache_dir, prices=Prices(spec.prices.prompt, spec.prices.completion),
                      budget_usd=spec.budget_usd)
    return LLMJudge(spec.task, gateway, prompt, spec.generation, name=f"llm:{backend.identity()}",
                    harm_threshold=spec.threshold if spec.task == "harm" else None)

