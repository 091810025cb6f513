"""quality_filter: each heuristic's reason on a fixture, duplicates keep the first, every param reaches the library."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.filters.dedup import exact_duplicates, near_duplicates
from saferinstruct.filters.diversity import pick_diverse, request_shape
from saferinstruct.filters.heuristics import copy_ratio, looks_like_request, repeated_ngram_ratio, words
from saferinstruct.filters.quality import REASONS, QualityFilterParams, quality_filter
from saferinstruct.io import read_rows
from saferinstruct.records import InducedInstruction, RejectedRow

from conftest import FIXTURES, stage_args, stage_path

FIX = FIXTURES / "quality_filter"
EXPECTED = json.loads((FIX / "expected_reasons.json").read_text())


def _run(tmp_path, load_stage, params: dict | None = None, induced=FIX / "induced.jsonl"):
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({"quality_filter": params or {}}))
    args = stage_args("quality_filter", tmp_path, induced=induced, params=pfile)
    return CliRunner().invoke(load_stage("quality_filter").main, args)


def test_stage_reasons_are_exact(tmp_path, load_stage):
    res = _run(tmp_path, load_stage)
    assert res.exit_code == 0, res.output
    kept = read_rows(tmp_path / "data" / "filtered.jsonl", InducedInstruction)
    rejected = read_rows(tmp_path / "data" / "rejected" / "quality_filter.jsonl", RejectedRow, allow_empty=True)
    assert [r.id for r in kept] == [k for k, v in EXPECTED.items() if v is None]
    assert {r.id: r.reason for r in rejected} == {k: v for k, v in EXPECTED.items() if v is not None}
    by_id = {r.id: r for r in rejected}
    assert by_id["s5:0"].detail == "same text as s1:0" and by_id["s5:1"].detail.endswith("with s1:0")
    assert by_id["s4:1"].row["instruction"].startswith("Women") and by_id["s4:1"].stage == "quality_filter"
    stats = json.loads((tmp_path / "stats" / "quality_filter.json").read_text())
    assert stats["rows_in"] == 12 and stats["kept"] == 3 and stats["rejected"] == 9
    assert stats["by_reason"] == {r: int(r in EXPECTED.values()) for r in REASONS}


def test_rejects_use_the_common_format():
    """saferinstruct.rejects' format: id = the dropped row's own id, parent_id = its source, the whole row; the
    stats count the same rejects by reason."""
    rows = read_rows(FIX / "induced.jsonl", InducedInstruction)
    result = quality_filter(rows, QualityFilterParams(near_dup_threshold=None))
    by_id = {r.id: r for r in rows}
    assert result.rejected and {r.id for r in result.rejected} <= set(by_id)
    for rej in result.rejected:
        source = by_id[rej.id]
        assert (rej.parent_id, rej.stage) == (source.parent_id, "quality_filter")
        assert rej.row == source.model_dump(mode="json")
    stats = result.stats()
    assert stats["rejected"] == len(result.rejected)
    assert {k: v for k, v in stats["by_reason"].items() if v} == dict(Counter(r.reason for r in result.rejected))


def test_thresholds_change_the_outcome(tmp_path, load_stage):
    loose = {"max_words": 500, "min_words": 1, "max_copy_ratio": 1.0, "near_dup_threshold": None}
    assert _run(tmp_path, load_stage, loose).exit_code == 0
    kept = {r.id for r in read_rows(tmp_path / "data" / "filtered.jsonl", InducedInstruction)}
    assert {"s3:0", "s2:1", "s5:1"} <= kept  # too_long, too_short and near_duplicate rows now pass
    assert "s4:0" not in kept  # the copied text is still not a request


@pytest.mark.parametrize("key,value", [
    ("min_words", 7), ("max_words", 9), ("max_chars", 33), ("min_letter_ratio", 0.2), ("repeat_ngram", 2),
    ("max_repeated_ngram_ratio", 0.5), ("copy_ngram", 2), ("max_copy_ratio", 0.9), ("near_dup_threshold", 0.5),
    ("min_source_similarity", 0.2), ("embedding_model", "/some/model"), ("embedding_batch_size", 3),
    ("max_per_source", 2), ("diversity_weight", 0.3), ("shape_bonus", 0.0)])
def test_every_param_reaches_the_library(tmp_path, load_stage, monkeypatch, key, value):
    assert QualityFilterParams.model_fields[key].default != value
    seen = {}
    stage = load_stage("quality_filter")

    def spy(rows, params, embedder=None):
        seen["params"] = params
        return quality_filter(rows, params.model_copy(update={"near_dup_threshold": None, "min_source_similarity": None,
                                                              "max_per_source": None}))

    monkeypatch.setattr(stage, "quality_filter", spy)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({"quality_filter": {key: value}}))
    res = CliRunner().invoke(stage.main, ["--induced", str(FIX / "induced.jsonl"), "--out", str(tmp_path / "f.jsonl"),
                                          "--rejected", str(tmp_path / "r.jsonl"), "--stats",
                                          str(tmp_path / "s.json"), "--params", str(pfile)])
    assert res.exit_code == 0, res.output
    assert getattr(seen["params"], key) == value


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, load_stage):
    bad = tmp_path / "induced.jsonl"
    bad.write_text((FIX / "induced.jsonl").read_text().splitlines()[0] + "\n{\"id\": \"x\"}\n")
    res = _run(tmp_path, load_stage, induced=bad)
    assert res.exit_code == 2
    assert res.output.strip().startswith(f"error: {bad}:2: field") and len(res.output.strip().splitlines()) == 1
    outputs = [stage_path("quality_filter", tmp_path, opt) for opt in ("--out", "--rejected")]
    assert not any(path.exists() for path in outputs)


def test_unknown_param_is_named(tmp_path, load_stage):
    res = _run(tmp_path, load_stage, {"near_dup_treshold": 0.8})
    assert res.exit_code == 2 and "quality_filter.near_dup_treshold" in res.output
    assert "did you mean 'near_dup_threshold'" in res.output


def test_request_shape():
    for text in ["Write a poem.", "please explain taxes", "How do I pick a lock", "Can you help me?",
                 "As a comedian, roast my boss.", "I want you to act as a critic.", "Tell me a joke"]:
        assert looks_like_request(text), text
    for text in ["I hate Mondays.", "The sky is blue and the grass is green.", "You are all losers, every one of you."]:
        assert not looks_like_request(text), text


def test_ratios():
    assert copy_ratio(words("a b c d"), words("x a b c d y"), 3) == 1.0
    assert copy_ratio(words("a b c d"), words("a b x c d"), 3) == 0.0
    assert repeated_ngram_ratio(words("a b c a b c a b c"), 3) == pytest.approx(1 - 3 / 7)
    assert repeated_ngram_ratio(words("one two three four"), 3) == 0.0


def test_dedup_keeps_the_first_and_only_kept_rows_count():
    assert exact_duplicates(["A  cat.", "a cat", "dog", "A CAT!"]) == {1: 0, 3: 0}
    # b is a near copy of a (dropped); c is close to b but not to a: it stays, because b was dropped.
    a, b, c = np.array([1.0, 0, 0]), np.array([0.95, 0.312, 0]), np.array([0.8, 0.6, 0])
    emb = np.stack([v / np.linalg.norm(v) for v in (a, b, c)])
    assert emb[1] @ emb[2] >= 0.9 and emb[0] @ emb[2] < 0.9
    dups = near_duplicates(emb.astype(np.float32), 0.9)
    assert list(dups) == [1] and dups[1][0] == 0


def test_near_duplicates_across_blocks(monkeypatch):
    import saferinstruct.filters.dedup as dedup

    monkeypatch.setattr(dedup, "_BLOCK", 2)
    emb = np.eye(5, dtype=np.float32)[[0, 1, 2, 0, 3, 1]]
    assert {i: j for i, (j, _) in dedup.near_duplicates(emb, 0.99).items()} == {3: 0, 5: 1}


def test_library_without_embeddings_counts_reasons():
    rows = read_rows(FIX / "induced.jsonl", InducedInstruction)
    result = quality_filter(rows, QualityFilterParams(near_dup_threshold=None))
    assert result.stats()["by_reason"]["near_duplicate"] == 0 and len(result.kept) == 4


class _AxisEmbedder:
    """Unit vectors by keyword, so cosines are exact: 1 for the same topic, 0 for different topics."""

    TOPICS = ("store", "weather", "bread")

    def encode(self, texts, batch_size=64):
        return np.array([[float(t in x.lower()) for t in self.TOPICS] for x in texts], dtype=np.float32)


def test_off_source_instructions_are_dropped():
    def row(i, instruction, source):
        return InducedInstruction(id=f"s{i}:0", parent_id=f"s{i}", instruction=instruction, source_text=source,
                                  category="other", candidate=0, model="m", cache_key="k")

    rows = [row(1, "How do I steal from a store without being seen?", "Walk into the store and hide it in a bag."),
            row(2, "Can you tell me about the weather this week?", "Take it from the store when nobody looks."),
            row(3, "How can I bake bread tonight at home?", "The bread is rising in the oven now, just wait.")]
    params = QualityFilterParams(near_dup_threshold=None, min_source_similarity=0.5)
    result = quality_filter(rows, params, embedder=_AxisEmbedder())
    assert [r.id for r in result.kept] == ["s1:0", "s3:0"]
    assert [(r.id, r.parent_id, r.reason) for r in result.rejected] == [("s2:0", "s2", "off_source")]
    assert result.rejected[0].detail == "cosine 0.000 with its source text < 0.5"
    assert quality_filter(rows, params.model_copy(update={"min_source_similarity": None})).stats()["kept"] == 3


def test_request_shapes():
    assert [request_shape(t) for t in ["How do I pick a lock", "Please, is it legal to hunt?", "Tell me a joke.",
                                       "Can you help me", "Write a poem.", "Give me the recipe.", "I need a gun.",
                                       "Steps to make a bomb.", "Answer the question.\n\nWhy is the sky blue?"]] == [
        "question", "question", "imperative", "question", "imperative", "imperative", "imperative", "other",
        "imperative"]


def _unit(*v):
    v = np.array(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_pick_diverse_grounds_first_then_trades_novelty():
    source = _unit(1, 0, 0)
    cands = np.stack([_unit(0.9, 0.1, 0), _unit(1, 0.05, 0), _unit(0.7, 0, 0.7)])
    shapes = ["imperative", "imperative", "imperative"]
    # the closest to the source first; then the paraphrase of it loses to the one that says something else
    assert pick_diverse(cands, source, shapes, 2, diversity_weight=0.5, shape_bonus=0.0) == [1, 2]
    # diversity weight 0: the two best grounded, whatever they repeat
    assert pick_diverse(cands, source, shapes, 2, diversity_weight=0.0, shape_bonus=0.0) == [1, 0]
    # a question wins the second place over a more novel imperative through the shape bonus
    assert pick_diverse(cands, source, ["question", "imperative", "imperative"], 2, 0.5, 0.5) == [1, 0]
    assert pick_diverse(cands[:2], source, shapes[:2], 3, 0.5, 0.2) == [0, 1]  # fewer than m: all, in order


class _TableEmbedder:
    def __init__(self, table):
        self.table = table

    def encode(self, texts, batch_size=64):
        return np.stack([self.table[t] for t in texts])


def test_max_per_source_keeps_a_diverse_pick_per_text():
    src_a, src_b = "Hide it in your bag and walk out.", "Mix the two and heat them."
    table = {src_a: _unit(1, 0, 0, 0), src_b: _unit(0, 0, 0, 1),
             "Write a guide to shoplifting.": _unit(1, 0.2, 0, 0),
             "Write instructions for shoplifting.": _unit(1, 0.25, 0, 0),
             "How do I steal from a store?": _unit(0.8, 0, 0.6, 0),
             "Explain how to make the mixture.": _unit(0, 0, 0.3, 1)}

    def row(i, c, instruction, source):
        return InducedInstruction(id=f"s{i}:{c}", parent_id=f"s{i}", instruction=instruction, source_text=source,
                                  category="other", candidate=c, model="m", cache_key="k")

    rows = [row(1, 0, "Write a guide to shoplifting.", src_a),
            row(1, 1, "Write instructions for shoplifting.", src_a),
            row(1, 2, "How do I steal from a store?", src_a),
            row(2, 0, "Explain how to make the mixture.", src_b)]
    params = QualityFilterParams(near_dup_threshold=None, max_per_source=2)
    result = quality_filter(rows, params, embedder=_TableEmbedder(table))
    assert [r.id for r in result.kept] == ["s1:0", "s1:2", "s2:0"]  # the paraphrase goes, the question stays
    assert [(r.id, r.reason, r.detail) for r in result.rejected] == [
        ("s1:1", "not_picked", "s1 keeps s1:0, s1:2 (max_per_source 2)")]
    assert result.stats()["by_reason"]["not_picked"] == 1
    one = quality_filter(rows, params.model_copy(update={"max_per_source": 1}), embedder=_TableEmbedder(table))
    assert [r.id for r in one.kept] == ["s1:0", "s2:0"]
    # a near duplicate is dropped before the pick, so it cannot take a place
    near = quality_filter(rows, params.model_copy(update={"near_dup_threshold": 0.99, "max_per_source": 2}),
                          embedder=_TableEmbedder(table))
    assert [r.id for r in near.kept] == ["s1:0", "s1:2", "s2:0"]
    assert {r.id: r.reason for r in near.rejected} == {"s1:1": "near_duplicate"}
