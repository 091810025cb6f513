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

from pydantic import Field

from saferinstruct.judging.base import Judge, Task, registered_judge, registered_judges
from saferinstruct.llm.base import GenerationParams
from saferinstruct.llm.roles import PaidRole, Role, backend_class_at, check_role, open_role, takes_model_path
from saferinstruct.params import ParamsError


class JudgeSpec(PaidRole):
    """A judge role: an offline judge (backend names it; model, revision and generation unused) or an LLM judge."""

    backend: str = "embedding_classifier"
    task: Task = "instruction"
    generation: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=128))
    # embedding_classifier: P(unsafe) at or above which the label is `unsafe` (null: the trained head's own);
    # LLM harm judges: the StrongREJECT-style rubric score at or above which an answer is `harmful` (null: 0.5);
    # self_evaluate: an answer whose verdict score (P(unsafe)) is at or above it is not kept (null: the label decides).
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    # LLM judges: the prompt file, instead of the stage's default (e.g. prompts/eval_harm_strongreject.md).
    prompt: str | None = None


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

    prompt_path = spec.prompt or prompt_path
    if prompt_path is None:
        raise ParamsError(f"an LLM judge (backend '{spec.backend}') needs a prompt file ({section}.prompt)")
    prompt = PromptTemplate.load(prompt_path)
    backend_class_at(spec.backend, section, also=registered_judges())
    gateway = open_role(spec, section, cache_dir, secrets=secrets)
    return LLMJudge(spec.task, gateway, prompt, spec.generation, name=f"llm:{gateway.backend.identity()}",
                    harm_threshold=spec.threshold if spec.task == "harm" else None)



def check_judge(spec: JudgeSpec, section: str) -> None:
    """Fail at once on a misspelled judge backend or LLM-judge option (before a stage reads its inputs); an offline
    judge's options are checked when it is built."""
    if registered_judge(spec.backend) is None:
        backend_class_at(spec.backend, section, also=registered_judges())
        check_role(spec, section)


EXPERT = "expert"


class SelfEvalSpec(JudgeStageSpec):
    """params.yaml ``self_evaluate``: by default (``backend: expert``) the expert judges its own answers."""

    backend: str = EXPERT
    task: Task = "response"


def embedded_expert(expert: Role) -> bool:
    """The expert is the embedded local model: a local backend on the stage's default model (models/base)."""
    cls = backend_class_at(expert.backend, "respond")
    return takes_model_path(cls) and expert.model is None and "model_path" not in expert.options


def self_eval_spec(spec: SelfEvalSpec, expert: PaidRole, fallback: str = "safe_response") -> SelfEvalSpec:
    """The self-evaluation judge ``spec`` means. ``backend: expert`` is the paper's design, the expert judging its
    own answers (with prompts/self_eval.md): the ``respond`` role's backend, model, revision and options (the
    self_evaluate options merged over them), its prices unless self_evaluate sets its own, and self_evaluate's
    generation, threshold, budget and error share. When the expert is the embedded local model (a 135M model judges
    itself worse than a rule), the offline ``fallback`` rule judges instead, with the self_evaluate options."""
    if spec.backend != EXPERT:
        return spec
    for key in ("model", "revision"):
        if getattr(spec, key) is not None:
            raise ParamsError(f"params.yaml: 'self_evaluate.{key}': backend 'expert' judges with respond.{key}; "
                              f"remove it, or name a backend")
    if embedded_expert(expert):
        return spec.model_copy(update={"backend": fallback})
    paid = spec.prices if spec.prices.prompt or spec.prices.completion else expert.prices
    return spec.model_copy(update={"backend": expert.backend, "model": expert.model, "revision": expert.revision,
                                   "options": {**expert.options, **spec.options}, "prices": paid})
