"""Stage train_safety_classifier: the offline instruction-safety judge (MiniLM embeddings + logistic-regression head).

Unsafe = the written harmful requests (data/raw/judge_train) and, as weak labels (--weak-unsafe), the Safer-Instruct
sample instructions, unsafe by the response they were paired with and cleaned by weak_unsafe_min_prob; safe = Alpaca-
style and hh-rlhf helpful prompts and the written safe look-alikes. Evaluation prompts are never trained on: any
training text equal to one (normalised) is dropped and counted; the stats report precision / recall / F1 on a held-out
split, and the measured flag rates on the evaluation files (params eval_files).
"""

from __future__ import annotations

import click

from saferinstruct.judging.classifier import PinnedEncoder, SafetyClassifierParams, train_safety_classifier
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--unsafe", "unsafe_files", multiple=True, required=True, help="Prompt file labelled unsafe (repeat).")
@click.option("--weak-unsafe", "weak_unsafe_files", multiple=True,
              help="Prompt file labelled unsafe by the response it was paired with (repeat): cleaned by "
                   "train_safety_classifier.weak_unsafe_min_prob.")
@click.option("--safe", "safe_files", multiple=True, required=True, help="Prompt file labelled safe (repeat).")
@click.option("--out", "out_dir", default="models/safety_classifier", show_default=True)
@click.option("--stats", "stats_path", default="stats/train_safety_classifier.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(unsafe_files: tuple[str, ...], weak_unsafe_files: tuple[str, ...], safe_files: tuple[str, ...], out_dir: str,
         stats_path: str, params_path: str) -> None:
    params = load_section("train_safety_classifier", SafetyClassifierParams, params_path)
    encoder = PinnedEncoder(max_length=params.max_length, batch_size=params.batch_size)
    with Timer() as t:
        stats = train_safety_classifier(unsafe_files, safe_files, params.eval_paths(),
                                        out_dir, params, encoder, weak_unsafe_files)
    write_stats(stats_path, {**stats, "seconds": t.seconds})
    h = stats["holdout"]
    click.echo(f"train_safety_classifier: held-out precision {h['precision']} recall {h['recall']} f1 {h['f1']} "
               f"(n={h['n']}), {t.seconds}s")


if __name__ == "__main__":
    main()
