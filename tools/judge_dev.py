"""Choose the instruction judge's head settings (l2, balance_files, weak_unsafe_min_prob, threshold) on DEVELOPMENT
data only.

For each l2 in the grid it trains the train_safety_classifier head (the stage's own function and files, read from
dvc.yaml's cmd; into a temporary directory) and scores it on saferinstruct.judging.dev_choice's dev sets: the held-out
split of the written contrast files, Do-Not-Answer's development half, tools/dev_lookalikes.txt and the fixed hh-rlhf
helpful dev questions (data/raw/dev). With --weak-min it also tries cleaning the --weak-unsafe files (the
Safer-Instruct release) at each P(unsafe) floor (train_safety_classifier.weak_unsafe_min_prob; none keeps them all).
Evaluation prompts (the calibrate stage's, Do-Not-Answer's evaluation half) are never read. Prints per-set agreement
and the best threshold of each setting by the balanced dev score; put the winner in params.yaml by hand.

    .venv/bin/python tools/judge_dev.py [--l2 1e-3 --l2 1e-2] [--weak-min none --weak-min 0.5] [--cache /tmp/e.pt]
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import click
import yaml

from saferinstruct.judging.classifier import (CachedEncoder, PinnedEncoder, SafetyClassifierParams, load_head,
                                             train_safety_classifier)
from saferinstruct.judging.dev_choice import best_threshold, dev_prompts, set_agreement
from saferinstruct.params import load_section

WRITTEN = "data/raw/judge_train/"
HELPFUL_DEV = "data/raw/dev/hh_helpful_dev.jsonl"
THRESHOLDS = [round(0.05 * i, 2) for i in range(4, 17)]  # 0.2 .. 0.8


def stage_files(dvc_yaml: str = "dvc.yaml") -> dict[str, list[str]]:
    """--unsafe / --weak-unsafe / --safe files of the train_safety_classifier cmd."""
    cmd = shlex.split(yaml.safe_load(open(dvc_yaml))["stages"]["train_safety_classifier"]["cmd"])
    return {flag: [cmd[i + 1] for i, x in enumerate(cmd) if x == f"--{flag}"]
            for flag in ("unsafe", "weak-unsafe", "safe")}


def _floor(value: str) -> float | None:
    return None if value.lower() in ("none", "null") else float(value)


@click.command()
@click.option("--l2", "l2_grid", multiple=True, type=float, default=(0.0, 1e-5, 1e-4, 1e-3, 1e-2))
@click.option("--balance-files", "balance_grid", multiple=True, type=bool, default=(False, True))
@click.option("--weak-min", "weak_grid", multiple=True, default=None,
              help="weak_unsafe_min_prob values to try (a number or none); default: the params.yaml value.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Embedding cache file (torch.save).")
def main(l2_grid: tuple[float, ...], balance_grid: tuple[bool, ...], weak_grid: tuple[str, ...],
         cache: Path | None) -> None:
    params = load_section("train_safety_classifier", SafetyClassifierParams, "params.yaml")
    files = stage_files()
    written = {label: [f for f in files[label] if f.startswith(WRITTEN)] for label in files}
    dev = dev_prompts(written["unsafe"], written["safe"], "data/raw/eval/donotanswer", "tools/dev_lookalikes.txt",
                      params.holdout_fraction, params.seed, HELPFUL_DEV)
    encoder = CachedEncoder(PinnedEncoder(max_length=params.max_length, batch_size=params.batch_size), cache)
    x = encoder.encode([p.text for p in dev])
    floors = [_floor(v) for v in weak_grid] if weak_grid else [params.weak_unsafe_min_prob]
    for l2, balance, floor in ((a, b, f) for f in floors for b in balance_grid for a in l2_grid):
        name = f"l2={l2:g} balance_files={balance} weak_unsafe_min_prob={floor}"
        with tempfile.TemporaryDirectory() as tmp:
            trial = params.model_copy(update={"l2": l2, "balance_files": balance, "eval_sample": 0,
                                              "weak_unsafe_min_prob": floor})
            train_safety_classifier(files["unsafe"], files["safe"], params.eval_paths(), tmp, trial, encoder,
                                    files["weak-unsafe"])
            probs = load_head(tmp)[0].prob(x).tolist()
        threshold, score = best_threshold(dev, probs, THRESHOLDS)
        for t in sorted({params.threshold, threshold}):
            per_set = set_agreement(dev, probs, t)
            cells = "  ".join(f"{k} {v['agreement']:.3f}/{v['n']}" for k, v in per_set.items())
            click.echo(f"{name} threshold={t}: {cells}")
        click.echo(f"{name}: best threshold {threshold}, balanced dev score {score}")


if __name__ == "__main__":
    main()
