"""Cut the small real samples shipped in data/raw/ from the full corpora in ../shared/data (run once by maintainers).

Deterministic: a fixed seed, stable row order. Files are kept in their source format (same columns, same encoding) so
the ingest loaders are exercised on real layouts; only the row count (and, where noted, unused columns) is cut.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import shutil
import sys
from pathlib import Path

SEED = 20231115
SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
DST = Path("data/raw")


def sample_csv(src: str, dst: str, n: int | None, keep_cols: list[str] | None = None, where=None) -> None:
    with open(SRC / src, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = keep_cols or reader.fieldnames
        rows = [r for r in reader if where is None or where(r)]
    if n is not None and n < len(rows):
        idx = sorted(random.Random(SEED).sample(range(len(rows)), n))
        rows = [rows[i] for i in idx]
    out = DST / dst
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def sample_json_list(src: str, dst: str, n: int) -> None:
    rows = json.loads((SRC / src).read_text(encoding="utf-8"))
    idx = sorted(random.Random(SEED).sample(range(len(rows)), min(n, len(rows))))
    out = DST / dst
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([rows[i] for i in idx], ensure_ascii=False, indent=1), encoding="utf-8")


def sample_jsonl(src: str, dst: str, n: int, gz: bool = False) -> None:
    opener = gzip.open if gz else open
    with opener(SRC / src, "rt", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip()]
    idx = sorted(random.Random(SEED).sample(range(len(lines)), min(n, len(lines))))
    out = DST / dst
    out.parent.mkdir(parents=True, exist_ok=True)
    with opener(out, "wt", encoding="utf-8") as fh:
        fh.writelines(lines[i] for i in idx)


def main() -> None:
    # Safety sources: the harmful texts the pipeline writes instructions for.
    sample_csv("sources/safer_instruct_hate.csv", "sources/safer_instruct_hate.csv", 700)
    sample_csv("sources/safer_instruct_self-harm.csv", "sources/safer_instruct_self-harm.csv", 700)
    sample_csv("sources/safer_instruct_illegal.csv", "sources/safer_instruct_illegal.csv", 300)
    sample_csv("sources/safer_instruct_nsfw.csv", "sources/safer_instruct_nsfw.csv", 300)
    sample_csv("sources/davidson_labeled_data.csv", "sources/davidson_labeled_data.csv", 1500)
    shutil.copyfile(SRC / "sources/openai_moderation_samples-1680.jsonl.gz",
                    DST / "sources/openai_moderation_samples-1680.jsonl.gz")
    sample_csv("sources/rmhd_reddit_mental_health_subset.csv", "sources/rmhd_reddit_mental_health_subset.csv", 540)
    # Red-team transcripts: their harmful answers cover the crime/violence requests the illegal release rows lack.
    sample_jsonl("helpful/hh_rlhf_harmless_base_test.jsonl.gz", "sources/hh_rlhf_harmless_base_test.jsonl.gz", 1600,
                 gz=True)
    # Instruction data for reversed instruction tuning.
    (DST / "instructions").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SRC / "reverse/alpaca_en_demo.json", DST / "instructions/alpaca_en_demo.json")
    sample_json_list("reverse/lima.json", "instructions/lima.json", 300)
    for name in ("selfinstruct_user_oriented_instructions.jsonl",):
        shutil.copyfile(SRC / "reverse" / name, DST / "instructions" / name)
    # Helpfulness pairs for the 1:1 mix.
    (DST / "helpful").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SRC / "helpful/hh_rlhf_helpful_base_test.jsonl.gz", DST / "helpful/hh_rlhf_helpful_base_test.jsonl.gz")
    # Evaluation and classifier data (prompts only: the model responses in the test set are not needed).
    sample_csv("eval/safer_instruct_test_set.csv", "eval/safer_instruct_test_set.csv", None, ["instruction", "label"])
    shutil.copyfile(SRC / "eval/advbench_harmful_behaviors.csv", DST / "eval/advbench_harmful_behaviors.csv")
    shutil.copyfile(SRC / "eval/xstest_prompts_dev.csv", DST / "eval/xstest_prompts_dev.csv")
    sample_json_list("eval/alpaca_harmless_instructions_val.json", "eval/alpaca_harmless_instructions_val.json", 2000)


if __name__ == "__main__":
    main()
