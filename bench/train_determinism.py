"""Are training runs bit-identical? Runs the train_reverse stage several times, each in a fresh process, and compares.

    .venv/bin/python bench/train_determinism.py [--base DIR] [--data DIR] [--threads 1 --threads 2] [--repeats 2]
                                                [--steps 3] [--batch-size 2]

Each run trains ``--base`` (default: the tiny 2-layer model the tests build, offline, seconds) on ``--data`` (default:
the test fixture's 8 reversed pairs) for ``--steps`` optimizer steps with N intra-op threads (the ``threads`` param).
Prints, per run, the sha256 of model.safetensors and of the model identity downstream call-cache keys use (weights + config +
tokenizer), then for each pair of runs whether they are identical and, when not, the largest absolute weight
difference. ``--base models/base`` (or a `prepare_base --out` dir) runs the real SmolLM2. Figures: docs/training.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "train"


def _train(base: Path, work: Path, threads: int, steps: int, data: tuple[Path, Path], batch_size: int) -> Path:
    work.mkdir(parents=True)
    out = work / "reverse"
    params = {"train_reverse": {"lr": 1e-3, "max_steps": steps, "batch_size": batch_size, "max_length": 256,
                                "logging_steps": 1, "warmup_ratio": 0.1, "threads": threads}}
    (work / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVCLIVE_OPEN": "false"}
    subprocess.run([sys.executable, str(REPO / "stages" / "train_reverse.py"), "--base", str(base),
                    "--train", str(data[0]), "--val", str(data[1]), "--out", str(out), "--live-dir", str(work / "live"),
                    "--stats", str(work / "stats.json"), "--params", str(work / "params.yaml")],
                   check=True, env=env, capture_output=True)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta)


def _tiny_base(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    return build_tiny_model(work / "tiny")


@click.command()
@click.option("--base", type=click.Path(path_type=Path), default=None, help="Model dir (default: the tests' tiny one).")
@click.option("--threads", "thread_counts", type=int, multiple=True, default=(1, 2), show_default=True)
@click.option("--repeats", default=2, show_default=True, help="Runs per thread count.")
@click.option("--steps", default=3, show_default=True)
@click.option("--batch-size", default=2, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Directory with train.jsonl and val.jsonl (default: the tests' 8 + 4 fixture pairs; "
                   "data/reverse for the pipeline's 225 + 25).")
def main(base: Path | None, thread_counts: tuple[int, ...], repeats: int, steps: int, batch_size: int,
         data: Path | None) -> None:
    from saferinstruct.train.common import model_dir_sha256

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = base or _tiny_base(work)
        runs = {}
        for threads, i in itertools.product(thread_counts, range(repeats)):
            name = f"threads={threads} run={i + 1}"
            pairs = (data / "train.jsonl", data / "val.jsonl") if data else (FIX / "reverse_train.jsonl",
                                                                              FIX / "reverse_val.jsonl")
            runs[name] = _train(base, work / name.replace(" ", "_").replace("=", ""), threads, steps, pairs,
                                batch_size)
            click.echo(json.dumps({"run": name, "model.safetensors": _sha(runs[name] / "model.safetensors")[:16],
                                   "weights_sha256": model_dir_sha256(runs[name])[:16]}))
        for (na, a), (nb, b) in itertools.combinations(runs.items(), 2):
            same = _sha(a / "model.safetensors") == _sha(b / "model.safetensors")
            click.echo(f"{na} vs {nb}: " + ("identical" if same else f"differ, max |dw| = {_max_diff(a, b):.3g}"))


if __name__ == "__main__":
    main()
