"""Does this CPU compute bf16 fast? fp32 vs bf16-autocast training steps and forward passes of SmolLM2-135M.

    .venv/bin/python bench/cpu_bf16.py [--model DIR] [--batch 8] [--tokens 96] [--repeats 3]

Prints seconds per training step (forward + backward, the work of train_reverse / train_sft / train_dpo) and per
forward pass (the work of generation and of DPO's reference pass) in float32 and in bf16 autocast, and the ratios.
A ratio well above 1 (CPUs with AVX512-BF16 or AMX) says `precision: bf16` in the training sections and `dtype:
bfloat16` in the generation options pay; below 1 (bf16 emulated) says keep float32. Random token ids: the cost does
not depend on the text. Without --model it uses models/base (run `dvc repro prepare_base` first).
"""

from __future__ import annotations

import time

import click


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


@click.command()
@click.option("--model", "model_dir", default="models/base", show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--tokens", default=96, show_default=True, help="Sequence length (the default run's pairs average ~91).")
@click.option("--repeats", default=3, show_default=True)
def main(model_dir: str, batch: int, tokens: int, repeats: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens))

    def train_step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad()

    def forward(bf16: bool) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, batch {batch} x {tokens} tokens")
    for name, fn in (("train step", train_step), ("forward", forward)):
        fp32, bf16 = _timed(lambda: fn(False), repeats), _timed(lambda: fn(True), repeats)
        print(f"{name:10s}  float32 {fp32:6.2f} s   bf16 {bf16:6.2f} s   speed-up {fp32 / bf16:4.2f}x")


if __name__ == "__main__":
    main()
