"""Development data for choosing the instruction judge's head settings (l2, threshold), and the choice itself.

Only development prompts are read here, never an evaluation prompt:

- ``written``: the held-out split of the project's written contrast files (data/raw/judge_train), the very rows
  ``train_safety_classifier`` holds out by content hash (labelled.in_holdout), so never trained on;
- ``dna:AREA``: Do-Not-Answer's fixed development half (eval.sets.donotanswer_half); its evaluation half belongs to
  the evaluate stage and is skipped row by row. The human-chatbot area is scored apart (care is the goal there, and
  whether such a request is "unsafe" is a matter of taste), never in the choice;
- ``lookalike``: tools/dev_lookalikes.txt, harmless questions with alarming words (safe);
- ``hh_helpful``: data/raw/dev/hh_helpful_dev.jsonl, 100 ordinary hh-rlhf questions (safe), the fixed set
  tools/dev_eval.py scores over-refusal on; every training stage holds it out (params.yaml eval_files).

The choice maximises the balanced dev agreement: the mean of (share of harmful dev sets flagged, share of safe dev sets
passed), each set counting equally so the large sets do not drown the look-alikes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from saferinstruct.eval.sets import DNA_CARE_AREA, load_donotanswer
from saferinstruct.judging.labelled import in_holdout, read_prompts


@dataclass(frozen=True)
class DevPrompt:
    text: str
    label: str  # unsafe | safe
    dev_set: str


def written_dev(files: Sequence[Path | str], label: str, holdout_fraction: float, seed: int) -> list[DevPrompt]:
    """The held-out rows of written training files (the classifier stage's own split), as set ``written_LABEL``."""
    return [DevPrompt(p.text, p.label, f"written_{p.label}") for f in files for p in read_prompts(f, label)[0]
            if in_holdout(p.text, holdout_fraction, seed)]


def dna_dev(directory: Path | str) -> list[DevPrompt]:
    """Do-Not-Answer's development half only (all unsafe), one set per risk area."""
    return [DevPrompt(p.prompt, "unsafe", f"dna:{p.group}") for p in load_donotanswer(directory, "dev")]


def lookalike_dev(path: Path | str) -> list[DevPrompt]:
    return [DevPrompt(line.strip(), "safe", "lookalike") for line in Path(path).read_text().splitlines()
            if line.strip()]


def helpful_dev(path: Path | str) -> list[DevPrompt]:
    return [DevPrompt(p.text, "safe", "hh_helpful") for p in read_prompts(path, "safe")[0]]


def dev_prompts(unsafe_written: Sequence[Path | str], safe_written: Sequence[Path | str], dna_dir: Path | str,
                lookalikes: Path | str, holdout_fraction: float, seed: int,
                helpful: Path | str | None = None) -> list[DevPrompt]:
    return (written_dev(unsafe_written, "unsafe", holdout_fraction, seed)
            + written_dev(safe_written, "safe", holdout_fraction, seed) + dna_dev(dna_dir) + lookalike_dev(lookalikes)
            + (helpful_dev(helpful) if helpful else []))


def set_agreement(prompts: Sequence[DevPrompt], probs: Sequence[float], threshold: float) -> dict[str, dict]:
    """Per dev set: n, its label and the share the judge gets right at ``threshold`` (flagged if unsafe, passed
    if safe)."""
    out: dict[str, dict] = {}
    for p, prob in zip(prompts, probs, strict=True):
        row = out.setdefault(p.dev_set, {"n": 0, "label": p.label, "right": 0})
        row["n"] += 1
        row["right"] += int((prob >= threshold) == (p.label == "unsafe"))
    return {name: {**row, "agreement": round(row["right"] / row["n"], 4)} for name, row in out.items()}


def balanced_score(per_set: dict[str, dict]) -> float:
    """Mean of the harmful sets' and the safe sets' mean agreement (the human-chatbot area left out)."""
    chosen = {k: v for k, v in per_set.items() if k != f"dna:{DNA_CARE_AREA}"}
    sides = [[v["agreement"] for v in chosen.values() if v["label"] == label] for label in ("unsafe", "safe")]
    if not all(sides):
        raise ValueError(f"the dev sets need both harmful and safe prompts; got {sorted(chosen)}")
    return round(sum(sum(side) / len(side) for side in sides) / 2, 4)


def best_threshold(prompts: Sequence[DevPrompt], probs: Sequence[float],
                   thresholds: Sequence[float]) -> tuple[float, float]:
    """(threshold, balanced dev score) of the best threshold; ties go to the first one given."""
    scored = [(balanced_score(set_agreement(prompts, probs, t)), -i, t) for i, t in enumerate(thresholds)]
    score, _, threshold = max(scored)
    return threshold, score
