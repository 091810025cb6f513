"""Where the evaluate stage's time goes, per model: generation, judging, capability NLL; and what the speed-ups give.

    .venv/bin/python bench/evaluate.py [--n 40] [--nll-n 20] [--models base,sft,dpo] [--batch-sizes 16,32]

Uses the real models under models/ and the committed params.yaml ``evaluate`` section: a seeded sample of --n of the
prompts the stage evaluates (all sets pooled), generated exactly as the stage does (transformers backend, greedy).
Per model it prints seconds and prompts/s for generation at each --batch-sizes (no cache), the same requests again
through a filled call cache (what a re-run of an unchanged model costs), the offline judge's seconds, the NLL of
--nll-n reference answers one row at a time and batched (--nll-batch), with the largest difference between the two,
and the NLLs again through a filled NLL cache. It says whether every batch size and the cache gave the same greedy
text.

Measured on the shared 2-core CPU box (load average ~8: other jobs running, so CPU seconds are the figure to read),
2026-12-02, `--n 32 --nll-n 12 --models base,sft,dpo --batch-sizes 16,32 --threads 1`, per model base / sft / dpo:
generation batch 16: 30.8 / 27.1 / 27.4 CPU-s (~1.1 prompts per CPU-s); batch 32: 33.7 / 33.1 / 33.7 CPU-s (slower:
decoding 135M parameters in fp32 is compute-bound here, a wider batch only adds padding); greedy text identical across
batch sizes and through the cache for every model; offline judge 0.0 s; NLL of 12 references one row at a time
5.3 / 4.9 / 5.7 CPU-s, batched by 8 5.5 / 5.7 / 6.1 (same values within 1.2e-6, no gain on a CPU). From a filled
cache (an unchanged model in a re-run, recipe or experiment): generation 0.0 s with 0 model calls, NLL 0.0 s with the
same values. The full stage (stats/evaluate.json, 556 prompts) spent 224-238 s per model generating and 49 s on the
NLLs of all three; a re-run now pays both only for models whose weights changed.

On 2 idle cores (2 threads, 2026-12-02), `--n 96 --models dpo --batch-sizes 16,64,64:2048`: 16 rows 36.3-41.7 s,
64 rows 64.5 s (every row pays the longest prompt's prefill: the first batches hold the long prompts), 64 rows within
2,048 padded prompt tokens (`max_batch_tokens`) 28.8-33.9 s, greedy text identical: the stage's setting since then.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch

from saferinstruct.eval.capability import cached_model_nlls, load_references, model_nlls
from saferinstruct.eval.harness import EvaluateParams, generate
from saferinstruct.eval.sets import build_eval_sets, sample
from saferinstruct.judging.base import JudgeItem
from saferinstruct.judging.factory import build_judge
from saferinstruct.params import load_section

RAW = Path("data/raw")


class Took(float):
    """Wall seconds, with the process's CPU seconds beside them (on a shared machine the CPU time is the steadier
    figure: wall time grows with other processes' load, CPU time much less)."""

    cpu: float

    def __str__(self) -> str:
        return f"{float(self):.1f} s wall / {self.cpu:.1f} s CPU"


def timed(fn, *args, **kw):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    took = Took(time.perf_counter() - start)
    took.cpu = time.process_time() - cpu
    return out, took


def batching(spec: str) -> dict:
    """`64` = batch_size 64; `64:2048` = batch_size 64 with max_batch_tokens 2048 (a padded-prompt-token budget)."""
    size, _, tokens = spec.partition(":")
    return {"batch_size": int(size), "max_batch_tokens": int(tokens) if tokens else None}


def bench_model(name: str, path: Path, prompts, params: EvaluateParams, batch_sizes: list[str], refs,
                nll_batch: int) -> None:
    texts = {}
    with tempfile.TemporaryDirectory() as cache:
        for k, bs in enumerate(batch_sizes):  # the first run also fills the call cache (an empty one: no hits)
            settings = params.generation.model_copy(
                update={"options": {**params.generation.options, **batching(bs)}})
            (answers, _), sec = timed(generate, path, prompts, settings, cache if k == 0 else None, progress=False)
            texts[bs] = [a.text for a in answers]
            print(f"{name}: generate batch_size={bs}: {sec}, {len(prompts) / sec:.2f} prompts/s wall, "
                  f"{len(prompts) / sec.cpu:.2f} per CPU-s")
        (cached, stats), sec = timed(generate, path, prompts, params.generation, cache, progress=False)
    print(f"{name}: generate again, unchanged model (persisted call cache): {sec} ({stats['calls']} model calls)")
    same = all(t == texts[batch_sizes[0]] for t in texts.values()) and [a.text for a in cached] == texts[batch_sizes[0]]
    print(f"{name}: greedy text identical across batch sizes and cache: {same}")
    judge = build_judge(params.judge, section="evaluate.judge")
    items = [JudgeItem(id=p.id, instruction=p.prompt, response=t) for p, t in zip(prompts, texts[batch_sizes[0]])]
    _, sec = timed(judge.judge, items)
    print(f"{name}: judge ({judge.name}): {sec}")
    if refs:
        one, sec_one = timed(model_nlls, path, refs, params.capability.model_copy(update={"batch_size": 1}))
        many, sec_many = timed(model_nlls, path, refs, params.capability.model_copy(update={"batch_size": nll_batch}))
        diff = max(abs(a - b) for a, b in zip(one, many))
        print(f"{name}: NLL of {len(refs)} references: one at a time {sec_one}; batched "
              f"(batch_size={nll_batch}) {sec_many}; max |diff| {diff:.2e}")
        with tempfile.TemporaryDirectory() as cache:
            cached_model_nlls(path, refs, params.capability, True, cache)  # scores and stores
            (again, hit), sec = timed(cached_model_nlls, path, refs, params.capability, True, cache)
        print(f"{name}: NLL again, unchanged model (persisted NLL cache): {sec} (cache hit {hit}, same values "
              f"{again == one})")


@click.command()
@click.option("--n", default=40, show_default=True, help="Prompts per model (a seeded sample of all sets).")
@click.option("--nll-n", default=20, show_default=True, help="Reference answers for the NLL timing (0: skip).")
@click.option("--models", default="base,sft,dpo", show_default=True)
@click.option("--batch-sizes", default="16", show_default=True,
              help="Generation batchings to time, comma-separated: 16 (rows) or 64:2048 (rows:max_batch_tokens).")
@click.option("--nll-batch", default=8, show_default=True, help="Batch size of the batched NLL timing.")
@click.option("--threads", default=2, show_default=True)
def main(n: int, nll_n: int, models: str, batch_sizes: str, nll_batch: int, threads: int) -> None:
    torch.set_num_threads(threads)
    params = load_section("evaluate", EvaluateParams, "params.yaml")
    prompts, _ = build_eval_sets(params.sets, RAW / "eval/advbench_harmful_behaviors.csv",
                                 RAW / "eval/safer_instruct_test_set.csv", RAW / "eval/xstest_prompts_dev.csv", [],
                                 ".", RAW / "eval/donotanswer", RAW / "eval/alpaca_harmless_instructions_val.json")
    prompts = sample(prompts, n, seed=0)
    refs = load_references(RAW / "capability/alpaca_libre_reference.jsonl", [], nll_n, 0)[0] if nll_n else []
    print(f"{len(prompts)} prompts, max_tokens={params.generation.generation.max_tokens}, {threads} threads")
    for name in models.split(","):
        bench_model(name, Path("models") / name, prompts, params, batch_sizes.split(","), refs,
                    nll_batch)


if __name__ == "__main__":
    main()
