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


def dvc_stages() -> dict[str, dict]:
    """The stages of the committed dvc.yaml, by name."""
    import yaml

    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stage_cmd_args(name: str) -> list[str]:
    """The click arguments of stage ``name`` exactly as dvc.yaml's ``cmd`` passes them (after the script path)."""
    import shlex

    words = shlex.split(dvc_stages()[name]["cmd"])
    assert words[:2] == ["python", f"stages/{name}.py"], f"dvc.yaml stage {name}: cmd must run stages/{name}.py"
    return words[2:]


def _option_key(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def stage_args(name: str, root: Path, params: Path | None = None, **paths: Path | str | list) -> list[str]:
    """Stage ``name``'s dvc.yaml arguments with every path but prompts/ re-rooted under ``root`` (outputs land there),
    ``paths`` replacing single options by python-style name (``live_dir=...``), and ``--params`` (default
    root/params.yaml) where the stage declares params. No test copies a stage's arguments by hand: a renamed option
    or path in dvc.yaml shows here."""
    words = stage_cmd_args(name)
    unknown = set(paths) - {_option_key(w) for w in words[::2]}
    assert not unknown, f"stage {name} has no option(s) {sorted(unknown)} in dvc.yaml's cmd"
    args: list[str] = []
    for option, value in zip(words[::2], words[1::2]):
        assert option.startswith("--"), f"dvc.yaml stage {name}: expected an option, got {option!r}"
        key = _option_key(option)
        if key not in paths:  # committed prompt files are inputs to read where they are, never outputs
            args += [option, str((REPO if value.startswith("prompts/") else root) / value)]
        elif option not in args:  # a list replaces every value of a repeated option (--safe a --safe b)
            given = paths[key]
            args += [a for v in (given if isinstance(given, (list, tuple)) else [given]) for a in (option, str(v))]
    if not dvc_stages()[name].get("params"):
        assert params is None, f"dvc.yaml stage {name} declares no params"
        return args
    return args + ["--params", str(params if params is not None else root / "params.yaml")]


def stage_path(name: str, root: Path, option: str) -> Path:
    """Where ``stage_args(name, root)`` puts the (single) path of ``option`` (e.g. "--stats")."""
    words = stage_cmd_args(name)
    values = [value for opt, value in zip(words[::2], words[1::2]) if opt == option]
    assert len(values) == 1, f"dvc.yaml stage {name}: {option} appears {len(values)} times"
    return root / values[0]


SMOLLM2_CACHE = Path.home() / ".cache" / "saferinstruct"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct (fp32 safetensors + tokenizer) converted from the GGUF that `make test` installs.
    Converted once per machine (~35 s) and cached under ~/.cache/saferinstruct keyed by the GGUF's sha256, so later
    sessions reuse it. Read-only: copy it before changing anything."""
    from saferinstruct.prepare_base import ModelSource, cached_conversion

    path, _ = cached_conversion(ModelSource(source="bundled"), str(SMOLLM2_CACHE))
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
