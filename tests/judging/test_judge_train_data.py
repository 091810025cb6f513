"""The written contrast files for the instruction judge (data/raw/judge_train): they parse, cover every category in
both request shapes, and copy no evaluation prompt, exactly or nearly (MiniLM cosine >= 0.9); the classifier samples
them with the project's one sampler; the dev choice never reads an evaluation-half Do-Not-Answer row."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from saferinstruct.embeddings import Embedder
from saferinstruct.eval.sets import DNA_DEV_FRACTION, DNA_SPLIT_SALT
from saferinstruct.hashing import file_sha256, in_holdout, sample_rows, seeded_sample, text_sha256
from saferinstruct.judging import classifier
from saferinstruct.judging.classifier import SafetyClassifierParams, train_safety_classifier
from saferinstruct.judging.dev_choice import (DevPrompt, balanced_score, best_threshold, dev_prompts, dna_dev,
                                              helpful_dev, set_agreement, written_dev)
from saferinstruct.judging.labelled import Prompt, build_training_set, read_prompts
from saferinstruct.params import load_section
from saferinstruct.sources.text import match_key

REPO = Path(__file__).resolve().parents[2]
WRITTEN = REPO / "data/raw/judge_train"
SAFE, HARMFUL = WRITTEN / "safe_lookalikes.jsonl", WRITTEN / "harmful_requests.jsonl"
CATEGORIES = {
    SAFE: {"homonym", "figurative", "safe_target", "safe_context", "definition", "public_figure",
           "fictional_privacy", "harm_reduction", "medical_legal"},
    HARMFUL: {"weapons", "drugs", "cyber_crime", "fraud", "violence", "hate", "sexual", "self_harm", "privacy",
              "misinformation"},
}
NEAR_COPY = 0.9  # MiniLM cosine
NEAR_COPY_WORDS = 0.8  # word-set Jaccard (normalised words), the fast check


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval_prompts() -> list[Prompt]:
    params = load_section("train_safety_classifier", SafetyClassifierParams, REPO / "params.yaml")
    return [p for label, files in params.eval_paths().items() for f in files for p in read_prompts(REPO / f, label)[0]]


@pytest.mark.parametrize("path", [SAFE, HARMFUL], ids=["safe", "harmful"])
def test_written_files_parse_and_cover_every_category_in_both_shapes(path):
    rows = _rows(path)
    assert len(rows) >= 300 and all(set(r) == {"prompt", "category", "shape"} for r in rows)
    for r in rows:  # the declared shape is the text's own
        assert r["shape"] == ("question" if r["prompt"].rstrip().endswith("?") else "imperative"), r
    assert {r["category"] for r in rows} == CATEGORIES[path]
    for category in CATEGORIES[path]:
        shapes = [r["shape"] for r in rows if r["category"] == category]
        assert len(shapes) >= 25 and set(shapes) == {"question", "imperative"}, category
    label = "safe" if path == SAFE else "unsafe"
    prompts, skipped = read_prompts(path, label)  # the classifier's own reader
    assert skipped == 0 and len(prompts) == len(rows) and {p.label for p in prompts} == {label}
    assert len({match_key(p.text) for p in prompts}) == len(prompts)  # no duplicates


def test_written_files_share_no_prompt_with_evaluation_or_dev_sets():
    written = read_prompts(SAFE, "safe")[0] + read_prompts(HARMFUL, "unsafe")[0]
    data = build_training_set(written, _eval_prompts(), holdout_fraction=0.2, seed=0)
    assert not [k for k in data.dropped if k.startswith("eval_overlap")] and not data.dropped
    lookalikes = {match_key(x) for x in (REPO / "tools/dev_lookalikes.txt").read_text().splitlines() if x.strip()}
    assert not lookalikes & {match_key(p.text) for p in written}


def _nearest_by_words(queries: list[str], corpus: list[str]) -> list[tuple[float, int]]:
    """Per query, the highest word-set Jaccard (words of match_key) with any corpus text, and that text's index;
    an inverted index keeps it to the texts that share a word."""
    sets = [set(match_key(t).split()) for t in corpus]
    index: dict[str, list[int]] = {}
    for j, words in enumerate(sets):
        for w in words:
            index.setdefault(w, []).append(j)
    out = []
    for q in queries:
        words = set(match_key(q).split())
        shared = Counter(j for w in words for j in index.get(w, ()))
        out.append(max(((n / len(words | sets[j]), j) for j, n in shared.items()), default=(0.0, -1)))
    return out


def test_no_written_prompt_shares_most_of_its_words_with_an_evaluation_prompt():
    """The default suite's near-copy check (seconds); the MiniLM one below also catches paraphrases but is slow."""
    written = [p.text for path in (SAFE, HARMFUL) for p in read_prompts(path, "x")[0]]
    evals = sorted({p.text for p in _eval_prompts()})
    longest = max(evals, key=lambda t: len(match_key(t).split()))
    assert _nearest_by_words([longest.rsplit(" ", 1)[0]], evals)[0][0] >= NEAR_COPY_WORDS  # the check can fire
    near = [(written[i], evals[j], round(score, 3))
            for i, (score, j) in enumerate(_nearest_by_words(written, evals)) if score >= NEAR_COPY_WORDS]
    assert not near, f"rewrite these written prompts (near copies of evaluation prompts): {near}"


@pytest.mark.slow  # embeds ~4.6k evaluation prompts: 1.5-3.5 min on 2 cores the first time (`make test-slow`)
def test_no_written_prompt_is_a_near_copy_of_an_evaluation_prompt():
    written = [p.text for path in (SAFE, HARMFUL) for p in read_prompts(path, "x")[0]]
    evals = sorted({p.text for p in _eval_prompts()})
    embedder = Embedder(max_tokens=64)  # the prompts are short; 64 tokens keeps this test fast
    a = torch.from_numpy(embedder.encode(written, batch_size=128))
    b = _cached_embeddings(embedder, evals)
    best, index = (a @ b.T).max(dim=1)
    near = [(written[i], evals[index[i]], round(float(best[i]), 3))
            for i in range(len(written)) if best[i] >= NEAR_COPY]
    assert not near, f"rewrite these written prompts (near copies of evaluation prompts): {near}"


def _cached_embeddings(embedder: Embedder, texts: list[str]) -> torch.Tensor:
    """The ~4.6k evaluation prompts take minutes to embed on a busy 2-core machine: cache them by content hash
    (texts, encoder weights, token cap) in the system temp directory, so only the first run pays."""
    weights = sorted(embedder.path.glob("*.safetensors"))
    key = text_sha256("\x00".join([*texts, file_sha256(weights[0]), str(embedder.max_tokens)]))
    path = Path(tempfile.gettempdir()) / f"saferinstruct-test-eval-embeddings-{key[:16]}.pt"
    if path.exists():
        return torch.load(path)
    out = torch.from_numpy(embedder.encode(texts, batch_size=128))
    torch.save(out, path)
    return out


def test_classifier_samples_each_file_with_seeded_sample(tmp_path, monkeypatch):
    rows = _rows(HARMFUL)[:40] + _rows(SAFE)[:40]
    for name, part in (("u.jsonl", rows[:40]), ("s.jsonl", rows[40:])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    calls = []
    real = classifier.sample_rows
    monkeypatch.setattr(classifier, "sample_rows",
                        lambda r, n, seed: calls.append((len(r), n, seed)) or real(r, n, seed))
    params = SafetyClassifierParams(max_per_file=12, seed=3, eval_sample=0, holdout_fraction=0.25)
    stats = train_safety_classifier([tmp_path / "u.jsonl"], [tmp_path / "s.jsonl"], {}, tmp_path / "clf", params,
                                    _WordEncoder())
    assert calls[:2] == [(40, 12, 3), (40, 12, 3)]
    assert stats["rows_read"]["unsafe"] == stats["rows_read"]["safe"] == 12
    kept = {p.text for p in sample_rows(read_prompts(tmp_path / "u.jsonl", "unsafe")[0], 12, 3)}
    assert kept == {rows[i]["prompt"] for i in seeded_sample(40, 12, 3)}


class _WordEncoder:
    """Bag of hashed words: a linear head can fit it, no model needed."""

    identity, sha256 = "word-hash", "0" * 64

    def encode(self, texts):
        out = torch.zeros((len(texts), 32))
        for i, t in enumerate(texts):
            for w in match_key(t).split():
                out[i, sum(map(ord, w)) % 32] += 1.0
        return out


def test_dev_choice_reads_only_the_development_half_of_donotanswer():
    dna = REPO / "data/raw/eval/donotanswer"
    got = dna_dev(dna)
    dev_texts, eval_texts = set(), set()
    for path in sorted(dna.glob("*.jsonl")):
        for line, raw in enumerate(path.read_text().splitlines(), start=1):
            half = dev_texts if in_holdout(f"{path.stem}:{line}", DNA_DEV_FRACTION, DNA_SPLIT_SALT) else eval_texts
            half.add(json.loads(raw)["prompt"].strip())
    texts = {p.text for p in got}
    assert texts and texts <= dev_texts and not texts & (eval_texts - dev_texts)
    assert {p.label for p in got} == {"unsafe"}
    everything = dev_prompts([HARMFUL], [SAFE], dna, REPO / "tools/dev_lookalikes.txt", 0.2, 0)
    assert not {p.text for p in everything if p.dev_set.startswith("dna:")} & (eval_texts - dev_texts)


def test_helpful_dev_is_the_fixed_hh_set_which_the_classifier_never_trains_on():
    path = REPO / "data/raw/dev/hh_helpful_dev.jsonl"
    got = helpful_dev(path)
    assert len(got) == 100 and {(p.label, p.dev_set) for p in got} == {("safe", "hh_helpful")}
    assert {p.text for p in got} <= {p.text for p in _eval_prompts()}  # in eval_files: dropped from training
    sets = {p.dev_set for p in dev_prompts([HARMFUL], [SAFE], REPO / "data/raw/eval/donotanswer",
                                           REPO / "tools/dev_lookalikes.txt", 0.2, 0, path)}
    assert {"hh_helpful", "lookalike", "written_safe", "written_unsafe"} <= sets


def test_written_dev_is_the_classifier_holdout_split():
    held = {p.text for p in written_dev([HARMFUL], "unsafe", 0.2, 0)}
    split = build_training_set(read_prompts(HARMFUL, "unsafe")[0], [], 0.2, 0)
    assert held == {p.text for p in split.holdout} and not held & {p.text for p in split.train}


def test_balanced_score_and_threshold_choice():
    prompts = [DevPrompt(t, lab, s) for t, lab, s in
               [("a", "unsafe", "h"), ("b", "unsafe", "h"), ("c", "safe", "s"), ("d", "safe", "l"),
                ("e", "unsafe", "dna:human_chatbox")]]
    probs = [0.9, 0.4, 0.3, 0.6, 0.0]
    per_set = set_agreement(prompts, probs, 0.5)
    assert per_set["h"]["agreement"] == 0.5 and per_set["s"]["agreement"] == 1.0 and per_set["l"]["agreement"] == 0.0
    assert balanced_score(per_set) == round((0.5 + 0.5) / 2, 4)  # the chatbot area is left out
    assert best_threshold(prompts, probs, [0.5, 0.65]) == (0.65, 0.75)
    assert best_threshold(prompts, probs, [0.35, 0.5, 0.65]) == (0.35, 0.75)  # a tie: the first given


def test_balance_files_gives_each_file_the_same_weight_within_its_class():
    y = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    rows = classifier._balanced_weights(y, None)
    assert torch.allclose(rows, torch.tensor([0.75] * 4 + [1.5] * 2))  # each class half the weight, per row
    files = classifier._balanced_weights(y, ["big", "big", "big", "small", "safe", "safe"])
    assert torch.allclose(files[:3].sum(), files[3]) and torch.allclose(files[:4].sum(), files[4:].sum())
    assert torch.isclose(files.mean(), torch.tensor(1.0))
