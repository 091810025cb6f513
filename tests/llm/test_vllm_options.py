"""The vllm backend's parallelism and memory options reach ``vllm.LLM`` and are validated with one-line errors naming
``section.options.key``. vLLM cannot be installed here: a stand-in ``vllm`` module records what the engine is built
with."""

from __future__ import annotations

import importlib
import json
import sys
import types
from types import SimpleNamespace

import pytest

from saferinstruct.llm import base, engine
from saferinstruct.llm.base import ChatRequest, make_backend
from saferinstruct.params import ParamsError


class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return " ".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens):
        return {"input_ids": list(range(len(text.split())))}


class FakeLLM:
    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLLM.built.append(kwargs)

    def get_tokenizer(self):
        return FakeTokenizer()

    def generate(self, prompts, sampling, use_tqdm):
        return [SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                outputs=[SimpleNamespace(text=" ok", finish_reason="stop", token_ids=[7])])
                for p in prompts]


@pytest.fixture
def vllm_module(monkeypatch):
    """saferinstruct.llm.vllm_backend imported against the stand-in, and unregistered again afterwards."""
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(engine, "ray_installed", lambda: True)  # engine: ray validates without Ray installed
    sys.modules.pop("saferinstruct.llm.vllm_backend", None)
    FakeLLM.built.clear()
    yield importlib.import_module("saferinstruct.llm.vllm_backend")
    base._REGISTRY.pop("vllm", None)
    sys.modules.pop("saferinstruct.llm.vllm_backend", None)


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "model_info.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    return str(tmp_path)


def test_parallelism_and_memory_options_reach_vllm_llm(vllm_module, model_dir):
    backend = make_backend("vllm", {"model_path": model_dir, "tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                                    "gpu_memory_utilization": 0.5, "max_model_len": 4096, "enforce_eager": True,
                                    "quantization": "fp8", "dtype": "bfloat16"})
    [(_, result)] = backend.run([ChatRequest.chat("hello there")])
    assert result.text == "ok" and result.prompt_tokens == 2
    assert FakeLLM.built == [{"model": model_dir, "dtype": "bfloat16", "gpu_memory_utilization": 0.5,
                              "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "enforce_eager": True,
                              "max_model_len": 4096, "quantization": "fp8"}]


def test_defaults_leave_vllm_its_own_choices(vllm_module, model_dir):
    list(make_backend("vllm", {"model_path": model_dir}).run([ChatRequest.chat("hi")]))
    assert FakeLLM.built == [{"model": model_dir, "dtype": "auto", "gpu_memory_utilization": 0.85,
                              "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "enforce_eager": False}]


@pytest.mark.parametrize("options,key,says", [
    ({"tensor_parallel_size": 0}, "tensor_parallel_size", "greater than or equal to 1"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization", "less than or equal to 1"),
    ({"quantization": "FP 8"}, "quantization", "should match pattern"),
    ({"max_model_len": 1024}, "max_model_len", "must exceed max_input_tokens (2048)"),
    ({"data_parallel_size": 2}, "data_parallel_size", "add `engine: ray`"),
    ({"engine": "ray", "data_parallel_size": 2, "num_replicas": 3}, "num_replicas", "differs from data_parallel"),
    ({"engine": "ray", "tensor_parallel_size": 2, "num_gpus_per_replica": 1}, "num_gpus_per_replica",
     "below tensor_parallel_size x pipeline_parallel_size (2)"),
    ({"num_gpus_per_replica": 1}, "num_gpus_per_replica", "applies to engine 'ray' only"),
    ({"tensor_paralel_size": 2}, "tensor_paralel_size", "did you mean 'tensor_parallel_size'"),
])
def test_option_errors_name_the_key(vllm_module, model_dir, options, key, says):
    with pytest.raises(ParamsError) as err:
        make_backend("vllm", {"model_path": model_dir, **options}, section="induce.options")
    assert f"'induce.options.{key}'" in str(err.value) and says in str(err.value)
    assert "\n" not in str(err.value)


def test_data_parallel_is_one_engine_per_ray_replica(vllm_module, model_dir):
    opts = make_backend("vllm", {"model_path": model_dir, "engine": "ray", "data_parallel_size": 4,
                                 "tensor_parallel_size": 2}).options
    assert opts.replicas() == 4 and opts.replica_gpus() == 2
    replica = make_backend("vllm", opts.replica_options())  # what each actor builds: one engine, in process
    assert not replica.runs_on_ray() and replica.options.tensor_parallel_size == 2
    assert replica.options.data_parallel_size == 1


def test_spreading_the_work_keeps_the_cache_key(vllm_module, model_dir):
    def identity(**options):
        return make_backend("vllm", {"model_path": model_dir, **options}).identity()

    plain = identity()
    assert plain == identity(engine="ray", data_parallel_size=2, tensor_parallel_size=2, enforce_eager=True,
                             gpu_memory_utilization=0.5)
    assert plain != identity(quantization="fp8") and plain != identity(max_model_len=4096)


def test_engine_ray_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setattr(engine, "ray_installed", lambda: False)
    with pytest.raises(ParamsError, match=r"'respond.options.engine': .*pip install 'saferinstruct\[ray\]'"):
        make_backend("fake", {"engine": "ray"}, section="respond.options")


def test_ray_pool_without_ray_says_how_to_install(monkeypatch):
    from saferinstruct.llm.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    with pytest.raises(base.BackendConfigError, match=r"pip install 'saferinstruct\[ray\]'"):
        import_ray()
