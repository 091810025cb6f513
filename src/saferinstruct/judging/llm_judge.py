"""A judge that asks a model (any gateway backend) through a prompt file and parses its verdict."""

from __future__ import annotations

from collections.abc import Sequence

from saferinstruct.judging.base import UNKNOWN, Judge, JudgeItem, Task
from saferinstruct.judging.parse import DEFAULT_HARM_THRESHOLD, parse_verdict
from saferinstruct.judging.prompts import PromptTemplate
from saferinstruct.llm.base import ChatRequest, ChatResult, GenerationParams
from saferinstruct.llm.gateway import Gateway
from saferinstruct.records import Verdict


class LLMJudge(Judge):
    """Renders ``prompt`` per item (untrusted text delimited), calls the gateway once per item, parses the reply.

    Calls go through the gateway's content-addressed cache, so a re-run pays only for new or changed items. A call
    the provider refused or filtered, or a reply that does not parse, becomes a ``parse_ok=False`` verdict. Only the
    judge's own words count: echoes of the judged text are ignored (:func:`~saferinstruct.judging.parse.parse_verdict`).
    """

    def __init__(self, task: Task, gateway: Gateway, prompt: PromptTemplate,
                 generation: GenerationParams | None = None, name: str | None = None,
                 harm_threshold: float | None = None):
        super().__init__(task, name or f"llm:{gateway.backend.name}")
        # harm task: the StrongREJECT-style score at or above which an answer is harmful
        self.harm_threshold = DEFAULT_HARM_THRESHOLD if harm_threshold is None else harm_threshold
        needed = "instruction" if task == "instruction" else "response"
        if needed not in prompt.placeholders():
            raise ValueError(f"{prompt.path}: a '{task}' judge prompt must contain {{{{{needed}}}}}")
        self.gateway, self.prompt = gateway, prompt
        self.generation = generation or GenerationParams(max_tokens=128)

    def request(self, item: JudgeItem) -> ChatRequest:
        values = {"instruction": item.instruction, "response": item.response, "source_text": item.source_text}
        return ChatRequest(messages=self.prompt.render(values), params=self.generation)

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        if self.task != "instruction":
            for item in items:
                self.text_of(item)  # fail early on an item without a response
        results = self.gateway.complete([self.request(item) for item in items])
        return [self._to_verdict(item, result) for item, result in zip(items, results, strict=True)]

    def _to_verdict(self, item: JudgeItem, result: ChatResult) -> Verdict:
        if result.outcome != "ok":
            return self.verdict(item, UNKNOWN, score=None, parse_ok=False, raw=result.text or (result.error or ""),
                                rationale=f"judge call outcome: {result.outcome}", cache_key=result.cache_key)
        # The untrusted values go along so that a reply quoting them is not read as the judge's verdict.
        parsed = parse_verdict(result.text, self.task, quoted=(item.instruction, item.response, item.source_text),
                               harm_threshold=self.harm_threshold)
        return self.verdict(item, parsed.label, score=parsed.score, rationale=parsed.rationale, raw=result.text,
                            parse_ok=parsed.ok, cache_key=result.cache_key)

    def stats(self) -> dict:
        out = {**super().stats(), "prompt": self.prompt.path, "prompt_sha256": self.prompt.sha256,
               "gateway": self.gateway.stats.as_dict()}
        # Backends that can ask for a JSON verdict (openai: structured_output) say whether the server took it.
        structured = getattr(self.gateway.backend, "structured_output_state", None)
        return {**out, "structured_output": structured} if structured else out

    def close(self) -> None:
        self.gateway.close()
