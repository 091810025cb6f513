"""Write data/raw/dev/hh_helpful_dev.jsonl: the fixed hh-rlhf helpful questions of the development set.

tools/dev_eval.py once drew its helpful questions at random from those not in the run's training pairs, so every new
draw of the training data also changed the development questions (a re-draw moved over-refusal by 13 points, part of
it from the set itself). This file fixes them: the single-turn transcripts of the shipped helpful file (first question
of 16-199 characters) ranked by a hash of their line number, the first N. The file is in params.yaml's eval_files
list, so no stage trains on these prompts.

    .venv/bin/python tools/make_dev_helpful.py [--n 100]
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from saferinstruct.hashing import text_sha256
from saferinstruct.io import atomic_open

from dev_eval import _first_turns  # tools/ is this script's directory: dev_eval's own transcript reader

SOURCE = Path("data/raw/helpful/hh_rlhf_helpful_base_test.jsonl.gz")
OUT = Path("data/raw/dev/hh_helpful_dev.jsonl")


def helpful_dev_rows(source: Path, n: int) -> list[dict]:
    rows = [{"id": f"hh_helpful:{line}", "prompt": q} for line, q in _first_turns(source, True) if 15 < len(q) < 200]
    rows.sort(key=lambda r: text_sha256(f"dev:{r['id']}"))
    return sorted(rows[:n], key=lambda r: int(r["id"].split(":")[1]))


@click.command()
@click.option("--n", default=100, show_default=True)
def main(n: int) -> None:
    rows = helpful_dev_rows(SOURCE, n)
    with atomic_open(OUT) as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{OUT}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
