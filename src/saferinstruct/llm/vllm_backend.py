"""The optional ``vllm`` backend for GPU users: same options and outputs as ``transformers``, much faster on a GPU.

Registered only when vLLM is importable (``pip install 'saferinstruct[gpu]'``): importing this module without vLLM
raises ModuleNotFoundError('vllm'), which the backend loader skips. Select it with ``induce.backend: vllm`` (or any
stage's ``backend`` param). Not exercised by the test suite (no GPU there). Each request is sampled with its own seed
derived exactly as in the transformers backend, so candidates are reproducible; outputs still differ from the
transformers backend's (different kernels), hence a different identity prefix and separate cache entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import vllm  # noqa: F401  - fails fast when vLLM is missing, so the backend never registers
from pydantic import Field

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.llm.local import aux_sha256, cut_at_stop, render_prompt, row_seed, weights_sha256
from saferinstruct.params import Params


class VllmOptions(Params):
    model_path: str
    batch_size: int = Field(default=256, ge=1)  # requests handed to vLLM at once; it schedules its own batches
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_input_tokens: int = Field(default=2048, ge=1)
    chat_template: bool = True
    device: Literal["auto", "cuda"] = "auto"
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)


@register_backend
class VllmBackend(Backend):
    name = "vllm"
    Options = VllmOptions
    options: VllmOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.llm = None

    def unkeyed_options(self) -> set[str]:
        return {"batch_size", "device", "gpu_memory_utilization"}

    def identity(self) -> str:
        o = self.options
        return (f"vllm:{weights_sha256(o.model_path)}+{aux_sha256(o.model_path)}"
                f";chat_template={int(o.chat_template)};dtype={o.dtype};max_input={o.max_input_tokens}")

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        from vllm import LLM, SamplingParams

        o = self.options
        if self.llm is None:
            self.llm = LLM(model=o.model_path, dtype=o.dtype, gpu_memory_utilization=o.gpu_memory_utilization)
        tok = self.llm.get_tokenizer()
        for start in range(0, len(requests), o.batch_size):
            chunk, prompts, ids = [], [], []
            for i in range(start, min(start + o.batch_size, len(requests))):
                text = render_prompt(tok, requests[i], o.chat_template)
                tokens = tok(text, add_special_tokens=not o.chat_template)["input_ids"]
                if len(tokens) > o.max_input_tokens:  # same outcome as the transformers backend, never truncated
                    yield i, ChatResult(text="", outcome="invalid_prompt", prompt_tokens=len(tokens),
                                        error=f"prompt has {len(tokens)} tokens > max_input_tokens "
                                              f"{o.max_input_tokens}")
                    continue
                chunk.append(i), prompts.append(text), ids.append({"prompt_token_ids": tokens})
            sampling = [SamplingParams(
                max_tokens=requests[i].params.max_tokens, temperature=requests[i].params.temperature,
                top_p=requests[i].params.top_p, stop=list(requests[i].params.stop) or None,
                seed=row_seed(requests[i].params.seed, requests[i].sample_index, p)) for i, p in zip(chunk, prompts)]
            outs = self.llm.generate(ids, sampling, use_tqdm=False) if chunk else []
            for i, out in zip(chunk, outs):
                comp = out.outputs[0]
                text, _ = cut_at_stop(comp.text, requests[i].params.stop)
                yield i, ChatResult(text=text.strip(), finish_reason=comp.finish_reason,
                                    prompt_tokens=len(out.prompt_token_ids), completion_tokens=len(comp.token_ids))

    def close(self) -> None:
        self.llm = None
