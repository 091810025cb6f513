"""Shared fixtures: offline environment, a tiny causal LM built from scratch, small row fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVCLIVE_OPEN", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Below is a response to a certain instruction. Write the instruction that the response is trying to complete.",
    "### Response:", "### Instruction:", "I'm sorry, but I can't help with that request.",
    "Write a short poem about the sea.", "The quick brown fox jumps over the lazy dog.",
    "How do I bake bread? Mix flour, water, salt and yeast, then knead and bake.",
    "You are a helpful and harmless assistant. Please answer safely.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-_/",
]


def build_tiny_model(path: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a few sentences: real code paths, ~1 MB, offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Path of a tiny saved causal LM + tokenizer; treat as read-only (copy it before training in place)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)  # CI has 2 cores; tiny models are slower with more threads
    yield


def import_stage(name: str):
    """Import stages/<name>.py (stages/ is not a package) and return the module; its click command is ``main``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_stage():
    """``load_stage("ingest").main`` is the stage's click command, ready for CliRunner."""
    return import_stage


SMOLLM2_CACHE = Path.home() / ".cache" / "saferinstruct"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct (fp32 safetensors + tokenizer) converted from the GGUF that `make test` installs.
    Converted once per machine (~35 s) and cached under ~/.cache/saferinstruct keyed by the GGUF's sha256, so later
    sessions reuse it. Read-only: copy it before changing anything."""
    from saferinstruct.prepare_base import BaseModelParams, cached_conversion

    path, _ = cached_conversion(BaseModelParams(source="bundled", cache_dir=str(SMOLLM2_CACHE)))
    return path


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with larger random weights: its greedy output varies token by token (the 0.02-std init of
    tiny_model_dir repeats one token), so generation tests can tell outputs apart. Read-only."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("varied") / "model"
    shutil.copytree(tiny_model_dir, path)
    model = AutoModelForCausalLM.from_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.save_pretrained(path)
    return path
