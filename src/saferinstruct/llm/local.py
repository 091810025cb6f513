"""The ``transformers`` backend: a local Hugging Face causal LM run in process.

Requests are grouped by decoding settings, sorted by prompt length (long first, so memory trouble shows at once) and
generated in left-padded batches; results are yielded per batch so the gateway caches each batch as it finishes.
Sampling uses one random generator per request, seeded from (seed, sample_index, prompt): a request's sample does not
depend on which other requests share its batch, and candidate ``sample_index`` n is a different, reproducible draw.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from saferinstruct.hashing import dir_sha256, file_sha256
from saferinstruct.io import read_json
from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, GenerationParams, register_backend
from saferinstruct.llm.engine import EngineMixin, EngineOptions

# Small files besides the weights that change what a model says (tokenisation, chat template, special tokens).
_AUX_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "generation_config.json")
_WEIGHT_HASHES: dict[tuple[str, float], str] = {}


class LocalOptions(EngineOptions):
    model_path: str
    batch_size: int = Field(default=16, ge=1)
    # A batch also stops growing once rows x its longest prompt would pass this many tokens (null: batch_size
    # alone): left padding makes every row pay the longest prompt's prefill, so short prompts take wide batches
    # (decoding gains from them) and long ones narrow batches.
    max_batch_tokens: int | None = Field(default=None, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    max_input_tokens: int = Field(default=2048, ge=1)
    # False: the messages' contents are the raw prompt (the paper's reverse template), no chat markup added.
    chat_template: bool = True
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    def replica_options(self) -> dict[str, Any]:
        opts = super().replica_options()
        if opts["device"] == "auto":  # the device Ray gives the replica, whatever the driver has
            opts["device"] = "cuda" if self.replica_gpus() > 0 else "cpu"
        return opts


def weights_sha256(model_path: Path | str) -> str:
    """sha256 of a model's weights: as recorded in model_info.json when there, else hashed (once per process)."""
    root = Path(model_path)
    info = root / "model_info.json"
    if info.exists():
        recorded = read_json(info)
        for key in ("sha256", "weights_sha256"):  # prepare_base records the hash as weights_sha256
            if isinstance(recorded, dict) and isinstance(recorded.get(key), str):
                return recorded[key]
    weights = sorted(root.glob("*.safetensors")) or sorted(root.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"{root}: no *.safetensors weights (is this a Hugging Face model directory?)")
    memo = (str(root.resolve()), max(w.stat().st_mtime for w in weights))
    if memo not in _WEIGHT_HASHES:
        _WEIGHT_HASHES[memo] = dir_sha256(root, "*.safetensors") if weights[0].suffix == ".safetensors" \
            else dir_sha256(root, "*.bin")
    return _WEIGHT_HASHES[memo]


def aux_sha256(model_path: Path | str) -> str:
    """Short hash of the tokenizer / chat-template / generation-config files."""
    h = hashlib.sha256()
    for name in _AUX_FILES:
        f = Path(model_path) / name
        if f.exists():
            h.update(name.encode() + file_sha256(f).encode())
    return h.hexdigest()[:16]


def row_seed(seed: int | None, sample_index: int, prompt: str) -> int:
    """Per-request seed: reproducible for a given seed, different for each sample index and prompt."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    digest = hashlib.sha256(f"{seed}\x00{sample_index}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def render_prompt(tokenizer: Any, request: ChatRequest, chat_template: bool) -> str:
    """The exact text fed to the model: the chat template with a generation prompt, or the raw message contents."""
    if not chat_template:
        return "\n\n".join(m.content for m in request.messages)
    msgs = [m.model_dump() for m in request.messages]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def token_budget_batches(items: list[int], lengths: list[int], batch_size: int,
                         max_batch_tokens: int | None) -> list[list[int]]:
    """Consecutive batches of items sorted longest first: at most batch_size rows, and (when set) at most
    max_batch_tokens padded prompt tokens, i.e. rows x the batch's first (longest) length; never an empty batch."""
    batches: list[list[int]] = []
    for item, length in zip(items, lengths):
        if batches and len(batches[-1]) < batch_size and (
                max_batch_tokens is None or (len(batches[-1]) + 1) * batches[-1][0][1] <= max_batch_tokens):
            batches[-1].append((item, length))
        else:
            batches.append([(item, length)])
    return [[item for item, _ in batch] for batch in batches]


def generated_lengths(out: Any, n_prompt: int, eos_ids: list[int], stops: Any) -> list[tuple[int, bool]]:
    """(tokens each row really generated, whether it stopped) for a batch from ``generate``.

    A finished row is padded until the whole batch stops, so its length is where it ended: its first end token
    (counted) or where a stop string completed, found by replaying the stopping criteria over the output prefixes.
    """
    import torch

    new = out[:, n_prompt:]
    done = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    if len(stops):
        for j in range(new.shape[1]):
            done[:, j] |= stops(out[:, :n_prompt + j + 1], None)
    ends = []
    for row in done.tolist():
        first = row.index(True) if True in row else None
        ends.append((first + 1, True) if first is not None else (len(row), False))
    return ends


@register_backend
class LocalBackend(EngineMixin, Backend):
    name = "transformers"
    Options = LocalOptions
    options: LocalOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.model: Any = None
        self.tokenizer: Any = None
        self.generated = 0  # sequences generated by this instance (tests count these to prove resumability)
        self._identity: str | None = None
        self._stops: dict[tuple[str, ...], Any] = {}

    def unkeyed_options(self) -> set[str]:
        return {"batch_size", "max_batch_tokens", "device"} | LocalOptions.engine_keys()

    def identity(self) -> str:
        if self._identity is None:
            o = self.options
            dtype = self._dtype_name()
            self._identity = (f"transformers:{weights_sha256(o.model_path)}+{aux_sha256(o.model_path)}"
                              f";chat_template={int(o.chat_template)};dtype={dtype};max_input={o.max_input_tokens}")
        return self._identity

    def _dtype_name(self) -> str:
        if self.options.dtype != "auto":
            return self.options.dtype
        device = self.options.replica_options()["device"] if self.runs_on_ray() else self.options.device
        return "bfloat16" if resolve_device(device) == "cuda" else "float32"

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.options.model_path
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: model directory not found (train or prepare the model first)")
        self.device = resolve_device(self.options.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self._dtype_name()))
        self.model.to(self.device).eval()

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        if self.runs_on_ray():  # replicas of this backend on Ray actors; the model is never loaded here
            yield from self.run_on_ray(requests)
            return
        self.load()
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):  # one batch shares decoding settings; the seed is per request
            p = req.params
            groups.setdefault((p.max_tokens, p.temperature, p.top_p, tuple(p.stop)), []).append(i)
        for idxs in groups.values():
            yield from self._run_group(requests, idxs)

    def _run_group(self, requests: Sequence[ChatRequest], idxs: list[int]) -> Iterator[tuple[int, ChatResult]]:
        prompts: dict[int, str] = {}
        ids: dict[int, list[int]] = {}
        for i in idxs:
            prompts[i] = render_prompt(self.tokenizer, requests[i], self.options.chat_template)
            ids[i] = self.tokenizer(prompts[i], add_special_tokens=not self.options.chat_template)["input_ids"]
            if len(ids[i]) > self.options.max_input_tokens:
                yield i, ChatResult(text="", outcome="invalid_prompt", prompt_tokens=len(ids[i]),
                                    error=f"prompt has {len(ids[i])} tokens > max_input_tokens "
                                          f"{self.options.max_input_tokens}")
        todo = sorted((i for i in idxs if len(ids[i]) <= self.options.max_input_tokens), key=lambda i: -len(ids[i]))
        for batch in token_budget_batches(todo, [len(ids[i]) for i in todo], self.options.batch_size,
                                          self.options.max_batch_tokens):
            texts = self.generate_batch([ids[i] for i in batch], requests[batch[0]].params,
                                        [row_seed(requests[i].params.seed, requests[i].sample_index, prompts[i])
                                         for i in batch])
            for i, result in zip(batch, texts):
                yield i, result

    def generate_batch(self, input_ids: list[list[int]], params: GenerationParams,
                       seeds: list[int]) -> list[ChatResult]:
        """One left-padded batch through ``generate``; the prompt is stripped from each output."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        enc = self.tokenizer.pad({"input_ids": input_ids}, padding=True, return_tensors="pt").to(self.device)
        config = GenerationConfig(do_sample=False, max_new_tokens=params.max_tokens,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids())
        processors = LogitsProcessorList()
        if params.temperature > 0:  # sample inside a processor so each row draws from its own generator
            processors.append(RowSampler(seeds, params.temperature, params.top_p))
        stops = self._stop_criteria(tuple(params.stop))
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, logits_processor=processors,
                                      stopping_criteria=stops)
        self.generated += len(input_ids)
        n_prompt = enc["input_ids"].shape[1]
        ends = generated_lengths(out, n_prompt, config.eos_token_id, stops)
        results = []
        for row, prompt, (end, finished) in zip(out[:, n_prompt:].tolist(), input_ids, ends):
            text, _ = cut_at_stop(self.tokenizer.decode(row[:end], skip_special_tokens=True), params.stop)
            results.append(ChatResult(text=text.strip(), finish_reason="stop" if finished else "length",
                                      prompt_tokens=len(prompt), completion_tokens=end))
        return results

    def _eos_ids(self) -> list[int]:
        """The model's end tokens and the tokenizer's (what trl appends to every trained completion)."""
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return sorted(ids | {self.tokenizer.eos_token_id} - {None})

    def _stop_criteria(self, stop: tuple[str, ...]) -> Any:
        """Built once per stop tuple: building one scans the whole vocabulary (~0.3 s for SmolLM2) on every call."""
        from transformers import StoppingCriteriaList
        from transformers.generation.stopping_criteria import StopStringCriteria

        if stop not in self._stops:
            self._stops[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))] if stop else [])
        return self._stops[stop]

    def close(self) -> None:
        self.close_engine()
        self.model = None
        self.tokenizer = None


class RowSampler:
    """A logits processor that samples each row with its own generator, then leaves only that token for argmax.

    Probabilities are computed in float32 on the CPU so a request's draw is the same on any device and batch. The
    nucleus comes from ``topk`` (a row falls back to a full sort only when its top ``NUCLEUS_K`` tokens do not reach
    top_p) and each row inverts its own cumulative distribution with one uniform draw: a full-vocabulary sort plus
    ``torch.multinomial`` per row cost ~70 ms of every ~200 ms decoding step at batch 16 on a 2-core CPU.
    """

    NUCLEUS_K = 256

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float().cpu() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            top_v, top_i = probs.topk(min(self.NUCLEUS_K, probs.shape[-1]), dim=-1)  # sorted, largest first
            reach = top_v.cumsum(-1)[:, -1] > self.top_p
        picks = []
        for r, gen in enumerate(self.gens):
            if self.top_p >= 1.0:
                weights, ids = probs[r], None
            else:
                p, ids = (top_v[r], top_i[r]) if reach[r] else probs[r].sort(descending=True)
                weights = p.masked_fill(p.cumsum(-1) - p > self.top_p, 0.0)  # the smallest prefix reaching top_p
            cdf = weights.cumsum(-1)
            u = torch.rand(1, generator=gen) * cdf[-1]
            pos = min(int(torch.searchsorted(cdf, u)), len(cdf) - 1)
            picks.append(pos if ids is None else int(ids[pos]))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks)), torch.tensor(picks, device=scores.device)] = 0.0
        return out
