"""The transformers backend: batching must not change outputs, sampling is reproducible per request, results stream."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from saferinstruct.llm.base import ChatRequest, GenerationParams, backend_class
from saferinstruct.llm.gateway import Gateway
from saferinstruct.llm.local import LocalBackend, token_budget_batches, weights_sha256

PROMPTS = ["Write a short poem about the sea.", "How do I bake bread?", "The quick brown fox",
           "You are a helpful and harmless assistant. Please answer safely. " * 3, "Mix flour, water, salt",
           "I'm sorry", "Below is a response to a certain instruction.", "0123456789 abc"]


def _reqs(prompts=PROMPTS, **gen):
    return [ChatRequest.chat(p, params=GenerationParams(**{"max_tokens": 10, **gen})) for p in prompts]


def _texts(backend, reqs):
    return [r.text for _, r in sorted(backend.run(reqs), key=lambda x: x[0])]


def _full(backend, reqs):
    return [(r.text, r.completion_tokens, r.finish_reason) for _, r in sorted(backend.run(reqs), key=lambda x: x[0])]


@pytest.mark.parametrize("chat_template,stop", [(True, []), (False, []), (False, ["e"])])
def test_batched_greedy_equals_per_item(varied_model_dir, chat_template, stop):
    """Same texts, token counts and finish reasons; with a stop string some rows finish while others go on."""
    opts = {"model_path": str(varied_model_dir), "chat_template": chat_template}
    batched = _full(LocalBackend({**opts, "batch_size": 8}), _reqs(stop=stop))
    single = _full(LocalBackend({**opts, "batch_size": 1}), _reqs(stop=stop))
    assert batched == single
    assert len({t for t, _, _ in batched}) == len(PROMPTS)  # real, distinct outputs: the comparison means something
    if stop:
        assert {f for _, _, f in batched} == {"stop", "length"}
        assert all((n < 10) == (f == "stop") and "e" not in t for t, n, f in batched)


def test_token_budget_batches():
    """Rows sorted longest first; a batch closes at batch_size rows or when rows x its longest prompt would pass the
    budget; a prompt longer than the budget still gets a batch of its own; no budget = batch_size alone."""
    lengths = [300, 200, 100, 40, 40, 30, 20, 10]
    items = list(range(len(lengths)))
    assert token_budget_batches(items, lengths, 64, 400) == [[0], [1, 2], [3, 4, 5, 6, 7]]
    assert token_budget_batches(items, lengths, 3, 400) == [[0], [1, 2], [3, 4, 5], [6, 7]]
    assert token_budget_batches(items, lengths, 3, None) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert token_budget_batches(items, lengths, 8, 100) == [[0], [1], [2], [3, 4], [5, 6, 7]]
    assert token_budget_batches([], [], 8, 100) == []


def test_token_budget_changes_batches_not_outputs(varied_model_dir):
    """The budget splits the long prompts off into their own batches; texts equal the per-item ones."""
    opts = {"model_path": str(varied_model_dir)}
    budget = LocalBackend({**opts, "batch_size": 8, "max_batch_tokens": 60})
    stream = budget.run(_reqs())
    next(stream)
    assert budget.generated < len(PROMPTS)  # the longest prompt (~50 tokens) went alone: 2 x its length > 60
    rest = sorted([*stream], key=lambda x: x[0])
    assert budget.generated == len(PROMPTS) and len(rest) == len(PROMPTS) - 1
    assert _full(LocalBackend({**opts, "batch_size": 8, "max_batch_tokens": 60}), _reqs()) == \
        _full(LocalBackend({**opts, "batch_size": 1}), _reqs())
    assert "max_batch_tokens" not in budget.identity()  # how requests are batched does not key the call cache


def test_raw_prompt_output_is_the_continuation_only(varied_model_dir):
    """chat_template=False feeds the text as is; the result is exactly the generated part, prompt stripped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(varied_model_dir)
    model = AutoModelForCausalLM.from_pretrained(varied_model_dir)
    enc = tok(PROMPTS[0], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    [(_, result)] = LocalBackend({"model_path": str(varied_model_dir), "chat_template": False}).run(_reqs(PROMPTS[:1]))
    assert result.text == expected
    assert result.prompt_tokens == enc["input_ids"].shape[1]
    assert result.completion_tokens == 10 and result.finish_reason == "length"


def test_results_stream_per_batch(varied_model_dir):
    backend = LocalBackend({"model_path": str(varied_model_dir), "batch_size": 3})
    stream = backend.run(_reqs())
    first = [next(stream) for _ in range(3)]
    assert backend.generated == 3  # the first batch is handed over before the second is generated
    rest = list(stream)
    assert backend.generated == len(PROMPTS) and len(first) + len(rest) == len(PROMPTS)
    longest = max(range(len(PROMPTS)), key=lambda i: len(PROMPTS[i]))
    assert longest in {i for i, _ in first}  # sorted by length, longest first


def test_sampling_is_reproducible_per_request(varied_model_dir):
    backend = LocalBackend({"model_path": str(varied_model_dir), "batch_size": 4})
    gen = {"temperature": 1.0, "top_p": 0.95, "seed": 7, "max_tokens": 12}
    cands = [ChatRequest.chat(PROMPTS[0], params=GenerationParams(**gen), sample_index=n) for n in range(3)]
    alone = _texts(backend, cands)
    mixed = _texts(LocalBackend({"model_path": str(varied_model_dir), "batch_size": 2}), _reqs(**gen) + cands)
    assert mixed[-3:] == alone  # same draw whatever shares the batch
    assert len(set(alone)) == 3  # each sample_index is a different draw
    other_seed = [ChatRequest.chat(PROMPTS[0], params=GenerationParams(**{**gen, "seed": 8}), sample_index=n)
                  for n in range(3)]
    assert _texts(backend, other_seed) != alone


def test_stop_strings_cut_the_output(varied_model_dir):
    backend = LocalBackend({"model_path": str(varied_model_dir)})
    full = _texts(backend, _reqs(PROMPTS[:1], max_tokens=16))[0]
    stop = re.search(r"[A-Za-z]{2}", full[2:]).group()  # plain letters: a broken byte cannot match in token space
    assert full.find(stop) > 0
    [(_, cut)] = backend.run(_reqs(PROMPTS[:1], max_tokens=16, stop=[stop]))
    assert cut.text == full[:full.find(stop)].strip()
    assert cut.finish_reason == "stop" and cut.completion_tokens < 16


def test_too_long_prompt_is_an_outcome_not_a_crash(varied_model_dir):
    backend = LocalBackend({"model_path": str(varied_model_dir), "max_input_tokens": 40})
    results = dict(backend.run(_reqs([PROMPTS[0], "word " * 200])))
    assert results[0].outcome == "ok"
    assert results[1].outcome == "invalid_prompt" and "max_input_tokens 40" in results[1].error


def test_identity_pins_weights_and_output_affecting_options(varied_model_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(varied_model_dir, model)
    ident = LocalBackend({"model_path": str(model)}).identity()
    assert ident.startswith(f"transformers:{weights_sha256(model)}")
    assert LocalBackend({"model_path": str(model), "batch_size": 1}).identity() == ident
    assert LocalBackend({"model_path": str(model), "chat_template": False}).identity() != ident
    (model / "model_info.json").write_text(json.dumps({"weights_sha256": "ab" * 32}))
    assert LocalBackend({"model_path": str(model)}).identity().startswith("transformers:" + "ab" * 32)


def test_registered_and_cached_through_the_gateway(varied_model_dir, tmp_path):
    assert backend_class("transformers") is LocalBackend
    first = LocalBackend({"model_path": str(varied_model_dir)})
    texts = [r.text for r in Gateway(first, cache_dir=tmp_path).complete(_reqs())]
    again = LocalBackend({"model_path": str(varied_model_dir)})
    cached = Gateway(again, cache_dir=tmp_path).complete(_reqs())
    assert [r.text for r in cached] == texts and all(r.cached for r in cached)
    assert first.generated == len(PROMPTS) and again.generated == 0 and again.model is None


def _nucleus(probs, top_p):
    """The top-p nucleus computed independently: numpy, largest first, the smallest prefix whose mass reaches top_p."""
    import numpy as np

    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order])
    keep = order[: int(np.searchsorted(mass, top_p)) + 1]
    nucleus = np.zeros_like(probs)
    nucleus[keep] = probs[keep]
    return nucleus / nucleus.sum()


@pytest.mark.parametrize("logits_kind,top_p", [("peaked", 0.9), ("flat", 0.9), ("peaked", 1.0)])
def test_row_sampler_draws_from_the_nucleus(logits_kind, top_p):
    """Draw frequencies match the nucleus distribution; nothing outside it is drawn. `flat` needs ~900 of 1,000
    tokens for top_p, past the sampler's top-k shortcut: the full-sort fallback must give the same nucleus."""
    import numpy as np
    import torch

    from saferinstruct.llm.local import RowSampler

    vocab, rows, temperature = 1000, 6000, 0.7
    logits = (-torch.arange(vocab, dtype=torch.float32) * (0.5 if logits_kind == "peaked" else 0.001))
    logits = logits[torch.randperm(vocab, generator=torch.Generator().manual_seed(0))]  # the nucleus is not a prefix
    want = _nucleus(torch.softmax(logits / temperature, -1).double().numpy(), top_p)
    sampler = RowSampler(list(range(rows)), temperature, top_p)
    out = sampler(None, logits.expand(rows, vocab).clone())
    picks = out.argmax(-1).numpy()
    assert (out == 0).sum(-1).eq(1).all()  # exactly one token left per row
    assert want[picks].min() > 0  # never outside the nucleus
    freq = np.bincount(picks, minlength=vocab) / rows
    assert np.abs(freq - want).max() < 0.02
    assert np.abs(freq - want).sum() < (0.1 if logits_kind == "peaked" else 0.5)  # flat: 900 cells of ~7 draws
    again = RowSampler([5, 4, 3], temperature, top_p)(None, logits.expand(3, vocab).clone()).argmax(-1)
    assert again.tolist() == picks[[5, 4, 3]].tolist()  # a row's draw depends on its seed only
