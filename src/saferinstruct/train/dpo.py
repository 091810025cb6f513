"""DPO of the SFT policy against an explicit reference model, with stored reference log-probs.

trl's ``precompute_ref_log_probs`` computes the reference log-probs once before training; here they are also stored
(``ref_cache``) under a key of reference weights + data + max_length, so a later run that changes only beta, the
learning rate or the step count loads them instead of loading the reference model and running it over the data.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from saferinstruct.io import OutputSet
from saferinstruct.progress import Progress
from saferinstruct.train import ref_cache
from saferinstruct.train.common import (TrainParams, checkpointed, data_identity, load_dtype, load_model,
                                        model_identity, output_dir, peft_config, train_and_save, trainer_kwargs,
                                        use_bf16)
from saferinstruct.train.data import DataFormat, load_preferences
from saferinstruct.train.ref_cache import RefLogps


class DpoParams(TrainParams):
    beta: float = Field(default=0.1, gt=0)
    format: DataFormat = "conversational"
    max_pairs: int | None = Field(default=None, ge=1)  # a fixed random subset, to size a CPU run (None: all pairs)
    ref_batch_size: int = Field(default=8, ge=1)  # batch for the one-off reference forward passes
    # trl's loss terms, summed with loss_weights: ["sigmoid"] is DPO; ["sigmoid", "sft"] adds the chosen side's NLL
    # (RPO), which keeps the SFT policy's safe answers likely while DPO pushes the rejected ones down
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], min_length=1)
    loss_weights: list[float] | None = None  # one per loss_type (None: all 1.0)

    @model_validator(mode="after")
    def _weights_match(self) -> "DpoParams":
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss_type")
        return self


def longest_first(dataset) -> list[int]:
    """Row indices of tokenised DPO pairs, longest (prompt + longer completion) first; ties keep their order."""
    lengths = [len(p) + max(len(c), len(r))
               for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def unsort(values: list[float], order: list[int]) -> list[float]:
    """Values computed over rows taken in ``order`` put back in the rows' own order."""
    out = [0.0] * len(order)
    for value, row in zip(values, order):
        out[row] = value
    return out


def _stored_ref_trainer_class():
    from torch.utils.data import DataLoader
    from trl import DPOTrainer

    class StoredRefDPOTrainer(DPOTrainer):
        """DPOTrainer whose train-set reference log-probs come from the store when given, else are computed once by
        the explicit reference model (kept in ``computed`` for the caller to store)."""

        def __init__(self, *args: Any, stored: RefLogps | None = None, **kwargs: Any):
            self._stored, self.computed = stored, None
            super().__init__(*args, **kwargs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if name != "train":
                return super()._precompute_ref_logps(dataset, name, batch_size)
            ids = list(dataset["id"])
            logps = self._stored or self._compute(dataset, ids, batch_size)
            if logps.ids != ids:
                raise ValueError("stored reference log-probs do not match the tokenised rows; delete the cache entry")
            self.computed = None if self._stored else logps
            return (dataset.add_column("ref_chosen_logps", logps.chosen)
                    .add_column("ref_rejected_logps", logps.rejected))

        def _compute(self, dataset, ids: list[str], batch_size: int) -> RefLogps:
            # trl's own loop, minus its arrow cache file (a random temp path per rank for in-memory datasets), over
            # the pairs longest first: a batch pads to its longest pair, and random order padded ~1.34x the tokens
            order = longest_first(dataset)
            loader = self.accelerator.prepare(DataLoader(dataset.select(order), batch_size=batch_size, shuffle=False,
                                                         collate_fn=self.data_collator))
            chosen: list[float] = []
            rejected: list[float] = []
            with Progress("train_dpo: reference log-probs", len(ids), unit="pairs",
                          enabled=self.accelerator.is_main_process) as progress, warnings.catch_warnings():
                # trl's own call of a property transformers 5 deprecated (trl.models.utils.
                # disable_gradient_checkpointing): nothing a user can change, so not shown
                warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                        category=FutureWarning)
                for batch in loader:
                    c, r = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(self.ref_model, batch))
                    chosen += c.float().cpu().tolist()
                    rejected += r.float().cpu().tolist()
                    progress.advance_to(len(chosen))
            chosen, rejected = unsort(chosen, order), unsort(rejected, order)
            return RefLogps(ids=ids, chosen=chosen, rejected=rejected)

    return StoredRefDPOTrainer


def build_dpo_trainer(policy_dir: Path, ref_dir: Path | None, rows: list[dict[str, Any]], p: DpoParams,
                      output_dir: Path, stored: RefLogps | None):
    """The reference model is loaded only when its log-probs must be computed (``stored`` is None). Both models are
    loaded after the config exists, in the training dtype (``load_model``: ZeRO-3 partitions them at load)."""
    from datasets import Dataset
    from trl import DPOConfig

    args = DPOConfig(**trainer_kwargs(p, output_dir), beta=p.beta, loss_type=p.loss_type,
                     loss_weights=p.loss_weights, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=p.ref_batch_size)
    dtype = load_dtype(p)
    model, tokenizer = load_model(policy_dir, dtype)
    ref_model = load_model(ref_dir, dtype)[0] if stored is None and ref_dir is not None else None
    return _stored_ref_trainer_class()(model=model, ref_model=ref_model, args=args, processing_class=tokenizer,
                                       train_dataset=Dataset.from_list(rows), peft_config=peft_config(p.lora),
                                       stored=stored)


def _drop_reference(trainer) -> None:
    """The stored log-probs replace the reference model during training: free it. ``accelerator.prepare_model`` also
    keeps it in the accelerator's model list, which would hold its weights (0.5 GB at 135M fp32) through training."""
    import gc

    ref, trainer.ref_model = trainer.ref_model, None
    if ref is not None:
        trainer.accelerator._models = [m for m in trainer.accelerator._models if m is not ref]
        del ref
        gc.collect()


def train_dpo(policy_dir: Path, ref_dir: Path, train_path: Path, out_dir: Path, cache_dir: Path, live_dir: Path,
              p: DpoParams, checkpoint_root: Path | None = None, out: OutputSet | None = None) -> dict[str, Any]:
    """DPO from ``policy_dir`` against ``ref_dir``; writes ``out_dir`` (and a new cache entry on a miss).
    ``checkpoint_root``, ``out``: as ``train_sft``."""
    p = checkpointed(p, checkpoint_root)
    rows, counts = load_preferences(train_path, p.format, with_rejected=True, max_pairs=p.max_pairs, seed=p.seed)
    key = ref_cache.make_key(ref_dir, rows, p.max_length, "bf16" if use_bf16(p) else "float32")
    stored = ref_cache.load(cache_dir, key)
    identity = {"stage": "train_dpo", "params": p.model_dump(), "base_model": model_identity(policy_dir),
                "reference_model": model_identity(ref_dir),
                "data": {"train": data_identity(train_path, counts["rows_in"])}}
    start = time.perf_counter()
    trainer = build_dpo_trainer(policy_dir, ref_dir, rows, p, output_dir(out_dir, checkpoint_root, identity), stored)
    ref_seconds = round(time.perf_counter() - start, 3)
    if trainer.computed is not None and trainer.accelerator.is_main_process:
        ref_cache.save(cache_dir, key, trainer.computed)
    _drop_reference(trainer)
    doc = {**identity, "ref_logprobs": {"key": key.__dict__, "digest": key.digest, "cache_hit": stored is not None}}
    metrics = train_and_save(trainer, out_dir, live_dir, policy_dir, doc, out=out)
    return {**counts, "rows_trained": len(trainer.train_dataset), "ref_cache_hit": stored is not None,
            "ref_setup_seconds": ref_seconds, **metrics}
