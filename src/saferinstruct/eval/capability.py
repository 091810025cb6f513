"""Capability kept: how well each evaluated model still predicts held-out reference answers to ordinary instructions.

The measure is the mean per-token negative log-likelihood (NLL) of a reference answer, teacher-forced, with the model in
eval mode: the prompt is the instruction in the model's chat template (what the policy sees when it answers), the NLL
counts the answer's tokens only. A row's score is its mean NLL per answer token; a model's score is the mean over rows,
with a 95% percentile-bootstrap interval over rows, and its paired difference to base (same rows, bootstrapped the
same way). Lower is better; a safety-tuned model whose NLL rises a lot has forgotten how to answer ordinary requests.

The reference answers (data/raw/capability/) come from a file no stage reads; a row whose normalised instruction is a
training prompt is still dropped and counted, like the evaluation sets' rows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from saferinstruct.hashing import sample_rows, text_sha256
from saferinstruct.io import RowError, read_json, write_json
from saferinstruct.llm.base import ChatRequest
from saferinstruct.llm.local import aux_sha256, render_prompt, resolve_device, weights_sha256
from saferinstruct.params import Params
from saferinstruct.sources.readers import BadField, parse_rows
from saferinstruct.sources.text import match_key


class CapabilityParams(Params):
    """params.yaml ``evaluate.capability``: how many reference answers (a seeded sample; 0 = skip the measure)."""

    reference_n: int | None = Field(default=60, ge=0)
    seed: int = 0
    max_answer_tokens: int = Field(default=256, ge=1)  # longer answers are cut (CPU time grows with length)
    # Reference rows per forward (length-sorted, right-padded); 1 = one at a time, no padding. On a CPU batching does
    # not pay (the forward is compute-bound; bench/evaluate.py: 8 rows one at a time 3.7 CPU-s, batched 4.4): a GPU
    # gains from 8 or more.
    batch_size: int = Field(default=1, ge=1)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    device: str = "auto"


@dataclass(frozen=True)
class Reference:
    id: str
    instruction: str
    answer: str


def load_references(path: Path | str, train_prompts: Iterable[str], n: int | None, seed: int,
                    ) -> tuple[list[Reference], int]:
    """A seeded sample of the reference rows (``{"id", "instruction", "output"}`` jsonl) that share no normalised text
    with a training prompt, and how many were dropped for sharing it."""

    def parse(rec: dict) -> Reference:
        for name in ("id", "instruction", "output"):
            if not isinstance(rec.get(name), str) or not rec[name].strip():
                raise BadField(name, "missing or empty")
        return Reference(rec["id"], rec["instruction"].strip(), rec["output"].strip())

    rows = [ref for _, ref in parse_rows(path, parse, fmt="jsonl", allow_empty=True)]
    if not rows:
        raise RowError(path, None, "no reference answers: add rows or set evaluate.capability.reference_n to 0")
    trained = {match_key(t) for t in train_prompts}
    clean = [r for r in rows if match_key(r.instruction) not in trained]
    return sample_rows(clean, n, seed), len(rows) - len(clean)


def encode(tokenizer: Any, instruction: str, answer: str, max_answer_tokens: int,
           chat_template: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of the templated prompt (as the policy sees it when answering) and of the answer that follows it."""
    prompt = render_prompt(tokenizer, ChatRequest.chat(instruction), chat_template)
    prompt_ids = tokenizer(prompt, add_special_tokens=not chat_template)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    return prompt_ids, answer_ids


def answer_nll(model: Any, prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> float:
    """Mean NLL per answer token, teacher-forced: position i's logits predict token i+1; prompt tokens score nothing."""
    import torch

    if not answer_ids:
        raise ValueError("answer_nll: the answer has no tokens")
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids):]).item()


def batch_nlls(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[float]:
    """:func:`answer_nll` for several (prompt ids, answer ids) rows in one right-padded forward: causal attention
    never lets a real token see the padding after it, and positions start at 0 as unpadded, so each row's scores are
    those of its own forward (up to float rounding in the matrix kernels)."""
    import torch

    if any(not answer for _, answer in rows):
        raise ValueError("batch_nlls: an answer has no tokens")
    seqs = [list(prompt) + list(answer) for prompt, answer in rows]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long, device=model.device)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(seqs):
        ids[r, :len(seq)] = torch.tensor(seq, device=model.device)
        mask[r, :len(seq)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    out = []
    for r, (prompt, answer) in enumerate(rows):
        start, end = len(prompt), len(prompt) + len(answer)
        out.append(torch.nn.functional.cross_entropy(logits[r, start - 1:end - 1], ids[r, start:end]).item())
    return out


def model_nlls(model_path: Path | str, references: Sequence[Reference], params: CapabilityParams,
               chat_template: bool = True) -> list[float]:
    """Per reference row, the model's mean NLL per answer token (float32, eval mode), in ``references`` order. Rows go
    through the model in batches of ``params.batch_size`` sorted by length (little padding); 1 = one row at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.to(resolve_device(params.device)).eval()
    encoded = [encode(tokenizer, r.instruction, r.answer, params.max_answer_tokens, chat_template)
               for r in references]
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    nlls: list[float] = [0.0] * len(encoded)
    for start in range(0, len(order), params.batch_size):
        chunk = order[start:start + params.batch_size]
        values = [answer_nll(model, *encoded[chunk[0]])] if len(chunk) == 1 else \
            batch_nlls(model, [encoded[i] for i in chunk])
        for i, value in zip(chunk, values):
            nlls[i] = value
    return nlls


def nll_cache_key(model_path: Path | str, references: Sequence[Reference], params: CapabilityParams,
                  chat_template: bool) -> str:
    """Content address of one model's NLLs: its weights and tokenizer files, the rows, and what changes the scores
    (not the batch size or device, as for generation)."""
    blob = json.dumps({"model": f"{weights_sha256(model_path)}+{aux_sha256(model_path)}", "chat": chat_template,
                       "max_answer_tokens": params.max_answer_tokens,
                       "rows": [[r.id, r.instruction, r.answer] for r in references]}, sort_keys=True)
    return text_sha256(blob)


def cached_model_nlls(model_path: Path | str, references: Sequence[Reference], params: CapabilityParams,
                      chat_template: bool, cache_dir: Path | str | None) -> tuple[list[float], bool]:
    """:func:`model_nlls`, read from ``cache_dir`` when this model already scored these rows (an unchanged base
    model in a re-run or another recipe), and whether it was."""
    if cache_dir is None:
        return model_nlls(model_path, references, params, chat_template), False
    path = Path(cache_dir) / f"{nll_cache_key(model_path, references, params, chat_template)}.json"
    if path.is_file():
        cached = read_json(path)
        if isinstance(cached, list) and len(cached) == len(references):
            return [float(v) for v in cached], True
    nlls = model_nlls(model_path, references, params, chat_template)
    write_json(path, nlls)
    return nlls, False


def bootstrap_mean_ci(values: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (seeded: the same values give the same interval)."""
    rnd, n = random.Random(seed), len(values)
    means = sorted(sum(values[rnd.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(round(0.975 * (resamples - 1)))]


def _mean_entry(values: Sequence[float], params: CapabilityParams) -> tuple[float | None, list[float] | None]:
    if not values:
        return None, None
    low, high = bootstrap_mean_ci(values, params.bootstrap_resamples, params.seed)
    return round(sum(values) / len(values), 4), [round(low, 4), round(high, 4)]


def answered(safe_entry: Mapping | None) -> dict:
    """The answered rate of ordinary instructions: 1 - their refusal rate, with the mirrored Wilson interval."""
    if not safe_entry or safe_entry.get("refusal_rate") is None:
        return {"answered_rate": None, "answered_ci": None, "answered_n": (safe_entry or {}).get("judged", 0)}
    low, high = safe_entry["refusal_ci"]
    return {"answered_rate": round(1 - safe_entry["refusal_rate"], 4),
            "answered_ci": [round(1 - high, 6), round(1 - low, 6)], "answered_n": safe_entry["judged"]}


def capability_metrics(nlls: Mapping[str, Sequence[float]], answered_entries: Mapping[str, Mapping | None],
                       params: CapabilityParams, reference: Mapping[str, Any], base: str = "base") -> dict:
    """The ``capability`` block of metrics/eval.json: per model the NLL mean [95% CI] over rows, its paired difference
    to ``base`` [95% CI], and the answered rate of ordinary instructions."""
    models = {}
    for name, values in nlls.items():
        mean, ci = _mean_entry(values, params)
        diffs = [v - b for v, b in zip(values, nlls[base])] if base in nlls and name != base else []
        diff, diff_ci = _mean_entry(diffs, params)
        models[name] = {"nll_n": len(values), "nll_mean": mean, "nll_ci": ci, "nll_diff_to_base": diff,
                        "nll_diff_ci": diff_ci, **answered(answered_entries.get(name))}
    return {"reference": dict(reference), "models": models}
