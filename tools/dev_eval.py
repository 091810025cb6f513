"""Refusal rates of model directories on a DEVELOPMENT set: what the default run's params were chosen on.

The evaluation stage's prompts (AdvBench, the Safer-Instruct test set, XSTest) are for reporting only; tuning on them
would overstate the result. This set is built from shipped files the pipeline never trains on, plus hand-written
look-alikes:

- harm_si: Safer-Instruct release instructions of the illegal and nsfw files (their texts are blank, so ingest never
  uses these rows; instructions equal to an evaluation prompt are dropped);
- harm_redteam: first questions of the shipped hh-rlhf red-team transcripts that ingest did not keep (multi-turn,
  short or over the cap), minus evaluation prompts;
- hh_helpful: 100 fixed single-turn hh-rlhf helpful questions, data/raw/dev/hh_helpful_dev.jsonl (tools/
  make_dev_helpful.py; in params.yaml's eval_files, so never trained on). Until 2026-12-02 this set was 40 questions
  drawn from those not in the run's training pairs, a different 40 for every draw of the training data;
- lookalike: tools/dev_lookalikes.txt, harmless questions with alarming words, written for this set (not XSTest's);
- dna:AREA: Do-Not-Answer's fixed development half (saferinstruct.eval.sets.donotanswer_half; the evaluation half is
  the evaluate stage's), one rate per risk area; for human_chatbox also the care rate (answers pointing to help, the
  goal there: saferinstruct.eval.care), printed as dna:human_chatbox:care.

    .venv/bin/python tools/dev_eval.py models/base models/sft models/dpo [--max-tokens 24] [--show lookalike]
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import time
from pathlib import Path

import click

from saferinstruct.eval.care import points_to_help
from saferinstruct.eval.dev_tradeoff import tradeoff_row
from saferinstruct.eval.sets import DNA_CARE_AREA, load_donotanswer
from saferinstruct.sources.hh_rlhf import parse_hh
from saferinstruct.io import read_rows
from saferinstruct.judging.refusal import classify_refusal
from saferinstruct.llm.base import ChatRequest, GenerationParams
from saferinstruct.llm.local import LocalBackend
from saferinstruct.records import PreferencePair, as_text
from saferinstruct.sources.text import match_key

RAW = Path("data/raw")


def _eval_keys() -> set[str]:
    keys = {match_key(r["instruction"]) for r in csv.DictReader(open(RAW / "eval/safer_instruct_test_set.csv"))}
    keys |= {match_key(r["goal"]) for r in csv.DictReader(open(RAW / "eval/advbench_harmful_behaviors.csv"))}
    keys |= {match_key(p.prompt) for half in ("dev", "eval") for p in load_donotanswer(RAW / "eval/donotanswer", half)}
    return keys | {match_key(r["prompt"]) for r in csv.DictReader(open(RAW / "eval/xstest_prompts_dev.csv"))}


def dna_dev_sets() -> dict[str, list[str]]:
    """Do-Not-Answer's development half, one set per risk area (file order)."""
    out: dict[str, list[str]] = {}
    for p in load_donotanswer(RAW / "eval/donotanswer", "dev"):
        out.setdefault(f"dna:{p.group}", []).append(p.prompt)
    return out


def _first_turns(path: Path, single_turn: bool) -> list[tuple[int, str]]:
    """(line, first Human question) of each hh-rlhf transcript (single-turn ones only when asked)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line, raw in enumerate(fh, 1):
            turns = parse_hh(json.loads(raw)["chosen"])
            users = [text for role, text in turns if role == "user"]
            if users and turns[0][0] == "user" and (not single_turn or len(users) == 1):
                out.append((line, users[0]))
    return out


def dev_sets(seed: int = 7) -> dict[str, list[str]]:
    rnd, evals = random.Random(seed), _eval_keys()

    def instructions(name: str, n: int) -> list[str]:
        rows = [r["instruction"].strip() for r in csv.DictReader(open(RAW / "sources" / name))]
        return rnd.sample([r for r in rows if r and match_key(r) not in evals], n)

    kept = {json.loads(x)["id"] for x in open("data/sources.jsonl")} if Path("data/sources.jsonl").exists() else set()
    redteam = [q for line, q in _first_turns(RAW / "sources/hh_rlhf_harmless_base_test.jsonl.gz", False)
               if f"hh_rlhf_redteam:{line}" not in kept and match_key(q) not in evals and len(q) <= 200]
    trained = {match_key(as_text(r.prompt)) for split in ("train", "test")
               for r in read_rows(f"data/preferences/{split}.jsonl", PreferencePair)}
    helpful = [json.loads(x)["prompt"] for x in open(RAW / "dev/hh_helpful_dev.jsonl")]
    if leaked := [q for q in helpful if match_key(q) in trained]:  # eval_files keeps them out of build_preferences
        raise SystemExit(f"{len(leaked)} development questions are in the training pairs, e.g. {leaked[0]!r}")
    look = [x.strip() for x in open(Path(__file__).with_name("dev_lookalikes.txt")) if x.strip()]
    return {"harm_si": instructions("safer_instruct_illegal.csv", 50) + instructions("safer_instruct_nsfw.csv", 10),
            "harm_redteam": rnd.sample(redteam, 40), "hh_helpful": helpful, "lookalike": look,
            **dna_dev_sets()}


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--max-tokens", default=24, show_default=True, help="The refusal judge reads how an answer starts.")
@click.option("--show", default=None, help="Print each prompt, label and answer of this set.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Also write {model: {set: {rate, n}}} as JSON (tools/dev_tradeoff.py adds it to the trade-off record).")
def main(models: tuple[str, ...], max_tokens: int, show: str | None, out_path: str | None) -> None:
    sets = dev_sets()
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    print("refused:", ", ".join(f"{k} n={len(v)}" for k, v in sets.items()))
    report: dict[str, dict[str, dict[str, float]]] = {}
    for path in models:
        backend = LocalBackend({"model_path": path, "batch_size": 16, "device": "cpu"})
        start, rates = time.time(), {}
        for name, prompts in sets.items():
            answers = dict(backend.run([ChatRequest.chat(p, params=params) for p in prompts]))
            labels = [classify_refusal(answers[i].text)[0] for i in range(len(prompts))]
            rates[name] = sum(lab != "compliance" for lab in labels) / len(labels)
            if name == f"dna:{DNA_CARE_AREA}":  # a caring answer with resources is the goal there, not a refusal
                rates[f"{name}:care"] = sum(points_to_help(answers[i].text) for i in range(len(prompts))) / len(prompts)
            if name == show:
                for i, (p, lab) in enumerate(zip(prompts, labels)):
                    print(f"  {lab:10s} {p[:70]!r} -> {answers[i].text[:70]!r}")
        report[path] = {k: {"rate": v, "n": len(sets[k.removesuffix(":care")])} for k, v in rates.items()}
        point = tradeoff_row("", path, report[path])
        print(f"{path}: " + "  ".join(f"{k} {v:.1%}" for k, v in rates.items())
              + f"  pooled harmful {point['harmful_refused']:.1%} safe {point['safe_refused']:.1%}"
              + f"  ({time.time() - start:.0f}s)")
    if out_path:
        Path(out_path).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
