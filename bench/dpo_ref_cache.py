"""A beta sweep with and without the stored DPO reference log-probs, on the real SmolLM2-135M-Instruct.

    .venv/bin/python bench/dpo_ref_cache.py [--pairs 64] [--steps 4] [--batch-size 4] [--model DIR]

Run 1 (beta 0.1) starts from an empty store and computes the reference log-probs. Run 2 (beta 0.25) is timed twice:
with the store run 1 left (a hit: the reference model is not even loaded) and with an empty store (a miss: load the
reference model and run it over every pair again). Prints both times, the difference and whether the two runs trained
identically (same train loss), which is what makes the stored values safe to reuse. The pairs are the first single-turn
hh-rlhf helpful-base pairs the repo ships (benign text). Without --model it uses models/sft, else models/base, else the
cached GGUF conversion.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import time
from pathlib import Path

import click

from saferinstruct.train.dpo import DpoParams, train_dpo

HELPFUL = Path("data/raw/helpful/hh_rlhf_helpful_base_test.jsonl.gz")


def default_model() -> Path:
    for cand in (Path("models/sft"), Path("models/base")):
        if (cand / "model.safetensors").exists():
            return cand
    from saferinstruct.prepare_base import ModelSource, cached_conversion

    return cached_conversion(ModelSource(source="bundled"), "~/.cache/saferinstruct")[0]


def _turns(transcript: str) -> tuple[str, str]:
    human, _, assistant = transcript.partition("\n\nAssistant:")
    return human.replace("\n\nHuman:", "").strip(), assistant.strip()


def write_pairs(path: Path, n: int) -> None:
    rows = []
    with gzip.open(HELPFUL, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            r = json.loads(line)
            if r["chosen"].count("Human:") != 1 or r["rejected"].count("Human:") != 1:
                continue
            prompt, chosen = _turns(r["chosen"])
            rows.append({"id": f"hh-{i}", "prompt": prompt, "chosen": chosen, "rejected": _turns(r["rejected"])[1]})
            if len(rows) == n:
                break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run(model: Path, data: Path, cache: Path, work: Path, beta: float, p: DpoParams) -> tuple[float, dict]:
    """Wall seconds and stats of one DPO run; stats gain cpu_seconds (this process), steadier on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    stats = train_dpo(model, model, data, work / "dpo", cache, work / "dvclive", p.model_copy(update={"beta": beta}))
    return time.perf_counter() - start, {**stats, "cpu_seconds": time.process_time() - cpu}


@click.command()
@click.option("--pairs", default=64, show_default=True)
@click.option("--steps", default=4, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--max-length", default=256, show_default=True)
@click.option("--model", type=click.Path(path_type=Path), default=None)
def main(pairs: int, steps: int, batch_size: int, max_length: int, model: Path | None) -> None:
    import torch

    model = model or default_model()
    p = DpoParams(lr=5e-6, max_steps=steps, batch_size=batch_size, max_length=max_length, ref_batch_size=8,
                  logging_steps=1, format="conversational")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "pairs.jsonl"
        write_pairs(data, pairs)
        first_s, first = run(model, data, work / "store", work, 0.1, p)
        hit_s, hit = run(model, data, work / "store", work, 0.25, p)
        miss_s, miss = run(model, data, work / "empty_store", work, 0.25, p)
    assert not first["ref_cache_hit"] and hit["ref_cache_hit"] and not miss["ref_cache_hit"]
    click.echo(f"model {model}, {first['rows_trained']} pairs, {steps} DPO steps of batch {batch_size}, "
               f"max_length {max_length}, {torch.get_num_threads()} threads")
    runs = (("run 1 (beta 0.1, empty store)  ", first_s, first), ("run 2 (beta 0.25, stored logps)", hit_s, hit),
            ("run 2 (beta 0.25, recomputed)  ", miss_s, miss))
    for label, secs, st in runs:
        click.echo(f"{label}: {secs:7.1f} s wall, {st['cpu_seconds']:7.1f} s CPU "
                   f"(reference setup {st['ref_setup_seconds']:.1f} s, training {st['train_runtime']:.1f} s)")
    click.echo(f"saved by the store: {miss_s - hit_s:.1f} s wall ({miss_s / hit_s:.2f}x), "
               f"{miss['cpu_seconds'] - hit['cpu_seconds']:.1f} s CPU; "
               f"same train loss with and without it: {hit['train_loss'] == miss['train_loss']} "
               f"({hit['train_loss']} vs {miss['train_loss']})")


if __name__ == "__main__":
    main()
