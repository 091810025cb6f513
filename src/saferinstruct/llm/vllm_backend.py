"""The optional ``vllm`` backend for GPU users: same options and outputs as ``transformers``, much faster on a GPU.

Registered only when vLLM is importable (``pip install 'saferinstruct[gpu]'``): importing this module without vLLM
raises ModuleNotFoundError('vllm'), which the backend loader skips. Select it with ``induce.backend: vllm`` (or any
stage's ``backend`` param). Never run here (no GPU): the suite checks its options and what ``vllm.LLM`` is built
with against a stand-in ``vllm`` module. Parallelism: ``tensor_parallel_size`` / ``pipeline_parallel_size`` split one
engine over GPUs; data parallel is one engine per Ray replica (``engine: ray``, see llm.engine). Each request is
sampled with its own seed derived exactly as in the transformers backend, so candidates are reproducible; outputs
still differ from the transformers backend's (different kernels), hence a different identity prefix and separate
cache entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import vllm  # noqa: F401  - fails fast when vLLM is missing, so the backend never registers
from pydantic import Field, model_validator

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.llm.engine import EngineMixin, EngineOptions, option_conflict
from saferinstruct.llm.local import aux_sha256, cut_at_stop, render_prompt, row_seed, weights_sha256

# Options that only say how the work is spread or how memory is used (not what the model says): not in the identity.
_PARALLEL_KEYS = {"tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization",
                  "enforce_eager"}


class VllmOptions(EngineOptions):
    model_path: str
    batch_size: int = Field(default=256, ge=1)  # requests handed to vLLM at once; it schedules its own batches
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_input_tokens: int = Field(default=2048, ge=1)
    chat_template: bool = True
    device: Literal["auto", "cuda"] = "auto"
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)  # GPUs one engine's layers are split across (one node)
    pipeline_parallel_size: int = Field(default=1, ge=1)  # stages one engine's layers are cut into
    # Engines, each on tensor x pipeline GPUs. Offline vLLM runs one engine per process, so more than one means
    # replicas on the Ray engine (engine: ray), one engine each: the same as num_replicas.
    data_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)  # prompt + completion tokens; null: the model's own
    enforce_eager: bool = False  # true: no CUDA graphs (less memory, slower)
    quantization: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$")  # vLLM's method name, e.g. fp8, awq

    @classmethod
    def engine_keys(cls) -> set[str]:
        return super().engine_keys() | {"data_parallel_size"}

    def replicas(self) -> int:
        return max(self.num_replicas, self.data_parallel_size)

    def replica_gpus(self) -> float:
        engine_gpus = self.tensor_parallel_size * self.pipeline_parallel_size
        return engine_gpus if self.num_gpus_per_replica is None else self.num_gpus_per_replica

    @model_validator(mode="after")
    def _parallelism_fits(self) -> VllmOptions:
        if self.data_parallel_size > 1 and self.engine != "ray":
            raise option_conflict(self, "data_parallel_size", self.data_parallel_size,
                                  "offline vLLM runs one engine per process: add `engine: ray` to run one replica "
                                  "per engine")
        if self.data_parallel_size > 1 and self.num_replicas not in (1, self.data_parallel_size):
            raise option_conflict(self, "num_replicas", self.num_replicas,
                                  f"differs from data_parallel_size ({self.data_parallel_size}): set one of them")
        engine_gpus = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.engine == "ray" and self.replica_gpus() < engine_gpus:
            raise option_conflict(self, "num_gpus_per_replica", self.num_gpus_per_replica,
                                  f"below tensor_parallel_size x pipeline_parallel_size ({engine_gpus}): each "
                                  "replica's engine needs that many GPUs")
        if self.max_model_len is not None and self.max_model_len <= self.max_input_tokens:
            raise option_conflict(self, "max_model_len", self.max_model_len,
                                  f"must exceed max_input_tokens ({self.max_input_tokens}), or a prompt that "
                                  "passes the check cannot fit; lower max_input_tokens or raise max_model_len")
        return self


@register_backend
class VllmBackend(EngineMixin, Backend):
    name = "vllm"
    Options = VllmOptions
    options: VllmOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.llm = None

    def unkeyed_options(self) -> set[str]:
        return {"batch_size", "device"} | _PARALLEL_KEYS | VllmOptions.engine_keys()

    def identity(self) -> str:
        o = self.options
        extra = "".join(f";{key}={getattr(o, key)}" for key in ("max_model_len", "quantization")
                        if getattr(o, key) is not None)  # only when set: earlier cache keys stay valid
        return (f"vllm:{weights_sha256(o.model_path)}+{aux_sha256(o.model_path)}"
                f";chat_template={int(o.chat_template)};dtype={o.dtype};max_input={o.max_input_tokens}{extra}")

    def engine_kwargs(self) -> dict[str, Any]:
        """What ``vllm.LLM`` is built with: the model, its precision and the parallelism of one engine."""
        o = self.options
        kwargs: dict[str, Any] = {
            "model": o.model_path, "dtype": o.dtype, "gpu_memory_utilization": o.gpu_memory_utilization,
            "tensor_parallel_size": o.tensor_parallel_size, "pipeline_parallel_size": o.pipeline_parallel_size,
            "enforce_eager": o.enforce_eager}
        kwargs.update({key: getattr(o, key) for key in ("max_model_len", "quantization") if getattr(o, key)})
        return kwargs

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        if self.runs_on_ray():  # one engine per Ray replica (data parallel)
            yield from self.run_on_ray(requests)
            return
        from vllm import LLM, SamplingParams

        o = self.options
        if self.llm is None:
            self.llm = LLM(**self.engine_kwargs())
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
        self.close_engine()
        self.llm = None
