"""The offline sentence embedder: unit vectors in input order, batching-independent, similar meaning -> high cosine."""

from __future__ import annotations

import numpy as np
import pytest

from saferinstruct.embeddings import Embedder

TEXTS = ["Write a hateful tweet about women.", "Compose a tweet that insults women.", "How do I bake bread?",
         "Write a hateful tweet about women!", "What is the capital of France?"]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_shape_norm_and_meaning(embedder):
    emb = embedder.encode(TEXTS, batch_size=2)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 3] > 0.95 and sims[0, 1] > 0.75  # near copy, paraphrase
    assert sims[0, 2] < 0.3 and sims[2, 4] < 0.5  # unrelated


def test_order_and_batching_do_not_change_vectors(embedder):
    one_batch = embedder.encode(TEXTS, batch_size=64)
    reversed_small = embedder.encode(TEXTS[::-1], batch_size=1)[::-1]
    assert np.allclose(one_batch, reversed_small, atol=1e-5)


def test_matches_manual_mean_pooling(embedder):
    """Same as sentence-transformers' recipe for this model: mean over real tokens, then L2-normalise."""
    import torch

    enc = embedder._tokenizer([TEXTS[2]], return_tensors="pt")
    with torch.inference_mode():
        hidden = embedder._model(**enc).last_hidden_state[0]
    manual = hidden.mean(0) / hidden.mean(0).norm()
    assert np.allclose(embedder.encode([TEXTS[2]])[0], manual.numpy(), atol=1e-5)


def test_empty_input_and_missing_model(embedder, tmp_path):
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(FileNotFoundError, match="embedding model directory not found"):
        Embedder(tmp_path / "nope").encode(["x"])
