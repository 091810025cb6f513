"""ingest: every corpus format, category mapping, clean-up, PII counts, leakage, dedup, caps, provenance, stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from saferinstruct.io import read_rows
from saferinstruct.records import CATEGORIES, RejectedRow, SourceText
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.text import match_key, normalise_whitespace, scrub_pii

SRC = FIXTURES / "data" / "sources"


def corpora() -> list[dict]:
    return [
        {"name": "si", "format": "safer_instruct", "path": str(SRC / "safer_instruct_mini.csv"), "licence": "academic"},
        {"name": "dav", "format": "davidson", "path": str(SRC / "davidson_mini.csv"), "licence": "MIT"},
        {"name": "mod", "format": "openai_moderation", "path": str(SRC / "moderation_mini.jsonl.gz"), "licence": "MIT"},
        {"name": "rmhd", "format": "rmhd", "path": str(SRC / "rmhd_mini.csv"), "licence": "Apache-2.0"},
        {"name": "mine", "format": "user", "path": str(SRC / "user_mini.jsonl"), "licence": "CC0", "text_field": "body",
         "category_field": "tag", "category_map": {"toxic": "hate"}, "id_field": "uid"},
        {"name": "mycsv", "format": "user", "path": str(SRC / "user_mini.csv"), "licence": "CC0",
         "category": "violence"},
    ]


def run_ingest(load_stage, tmp_path: Path, **overrides):
    section = {"min_chars": 15, "max_chars": 500, "corpora": corpora(),
               "eval_files": [{"path": str(FIXTURES / "data/eval/eval_mini.csv"), "field": "prompt"}], **overrides}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": section}))
    paths = {k: tmp_path / v for k, v in
             {"out": "sources.jsonl", "rejected": "rejected.jsonl", "stats": "stats.json"}.items()}
    args = [a for k, v in paths.items() for a in (f"--{k}", str(v))] + ["--params", str(tmp_path / "params.yaml")]
    res = CliRunner().invoke(load_stage("ingest").main, args)
    return res, paths


@pytest.fixture
def ran(load_stage, tmp_path):
    res, paths = run_ingest(load_stage, tmp_path)
    assert res.exit_code == 0, res.output
    kept = {r.id: r for r in read_rows(paths["out"], SourceText)}
    rejected = {r.id: r for r in read_rows(paths["rejected"], RejectedRow)}
    return kept, rejected, json.loads(paths["stats"].read_text())


def test_categories_per_format(ran):
    kept, rejected, _ = ran
    assert {k: r.category for k, r in kept.items()} == {
        "si:2": "hate", "si:3": "self-harm",
        "dav:2": "hate", "dav:5": "hate",
        "mod:1": "self-harm", "mod:3": "sexual", "mod:4": "violence", "mod:5": "hate",  # S before H; HR -> hate
        "rmhd:2": "self-harm", "rmhd:3": "violence",  # subreddit match is case-insensitive
        "mine:a1": "hate", "mine:a2": "self-harm", "mycsv:2": "violence"}
    assert {k: r.reason for k, r in rejected.items()} == {
        "si:5": "empty_text", "si:6": "artefact", "si:7": "duplicate", "si:8": "eval_leak", "si:9": "too_short",
        "si:10": "unmapped_label", "dav:3": "dropped_class", "dav:4": "dropped_class",
        "mod:2": "no_positive_label", "rmhd:4": "unmapped_label", "mine:a3": "unmapped_label"}
    assert rejected["si:7"].detail == "same text as si:2"  # case/whitespace variants are duplicates


def test_text_clean_up_and_provenance(ran):
    kept, _, _ = ran
    assert kept["si:3"].text == "I feel like nobody would notice if I was gone,\nhonestly."  # multi-line CSV cell
    assert kept["si:3"].provenance.line == 3 and kept["si:3"].provenance.licence == "academic"
    assert kept["dav:2"].text == "RT @USER: those people are vermin & should be driven out [URL]"
    assert kept["dav:2"].pii_scrubbed == {"handle": 1, "url": 1}
    assert "&amp;" not in kept["rmhd:3"].text
    assert kept["mod:3"].labels["S"] == 1 and kept["dav:2"].labels["class"] == 0
    assert all(r.category in CATEGORIES for r in kept.values())


def test_stats_funnel(ran):
    kept, rejected, stats = ran
    assert stats["read"] == len(kept) + len(rejected) == 24
    assert stats["kept"] == len(kept) and stats["rejected"]["dropped_class"] == 2
    assert stats["by_corpus"]["si"] == {"read": 8, "kept": 2, "rejected": {
        "artefact": 1, "duplicate": 1, "empty_text": 1, "eval_leak": 1, "too_short": 1, "unmapped_label": 1}}
    assert stats["by_category"]["hate"] == 5 and stats["eval_prompts"] == 2
    assert stats["pii_scrubbed"] == {"handle": 1, "url": 1}


def test_leak_checked_on_text_too(load_stage, tmp_path):
    evalf = tmp_path / "eval.jsonl"
    evalf.write_text(json.dumps({"q": "people from that town are all idiots and should leave!"}) + "\n")
    res, paths = run_ingest(load_stage, tmp_path, eval_files=[{"path": str(evalf), "field": "q"}])
    assert res.exit_code == 0, res.output
    rejected = {r.id: r.reason for r in read_rows(paths["rejected"], RejectedRow)}
    assert rejected["si:2"] == "eval_leak" and rejected["si:7"] == "eval_leak"


def test_offensive_class_configurable_and_cap_deterministic(load_stage, tmp_path):
    cs = corpora()[:2]
    cs[1] |= {"class_map": {0: "hate", 1: "other", 2: None}, "cap_per_category": 1}
    outs = []
    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        res, paths = run_ingest(load_stage, d, corpora=cs)
        assert res.exit_code == 0, res.output
        outs.append(paths["out"].read_bytes())
        kept = read_rows(paths["out"], SourceText)
        dav = [r for r in kept if r.provenance.corpus == "dav"]
        assert sorted(r.category for r in dav) == ["hate", "other"]
        over = [r for r in read_rows(paths["rejected"], RejectedRow) if r.reason == "over_cap"]
        assert len(over) == 1 and over[0].detail == "cap_per_category=1"
    assert outs[0] == outs[1]


@pytest.mark.parametrize(("section", "message"), [
    ({"corpora": [{"name": "x", "format": "tsv", "path": "a", "licence": "l"}]}, "ingest.corpora.0"),
    ({"corpora": [{"name": "x", "format": "davidson", "path": "a", "licence": "l", "clas_map": {}}]},
     "unknown key 'ingest.corpora.0.davidson.clas_map'"),
    ({"corpora": [{"name": "x", "format": "user", "path": "a", "licence": "l"}]}, "exactly one of category"),
    ({"corpora": [{"name": "x", "format": "davidson", "path": "a", "licence": "l"}] * 2}, "unique"),
    ({"corpora": [{"name": "x", "format": "davidson", "path": "/no/such.csv", "licence": "l"}]},
     "/no/such.csv: file not found"),
])
def test_bad_params_are_clean_errors(load_stage, tmp_path, section, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": section}))
    res = CliRunner().invoke(load_stage("ingest").main, ["--out", str(tmp_path / "o.jsonl"), "--rejected",
                             str(tmp_path / "r.jsonl"), "--stats", str(tmp_path / "s.json"),
                             "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not list(tmp_path.glob("*.json*"))


RAW = REPO / "data" / "raw"
# The shipped corpora with the test's own params (the live params.yaml may be tuned without breaking this test)
SHIPPED = {"seed": 0, "min_chars": 20, "max_chars": 1000, "scrub_pii": True,
           "eval_files": [{"path": str(RAW / "eval" / f), "field": fld, "label": "unsafe"}
                          for f, fld in (("advbench_harmful_behaviors.csv", "goal"),
                                         ("safer_instruct_test_set.csv", "instruction"))],
           "corpora": [{"name": f"safer_instruct_{c}", "format": "safer_instruct", "licence": "test",
                        "path": str(RAW / "sources" / f"safer_instruct_{c}.csv"), "cap_per_category": 40}
                       for c in ("hate", "self-harm", "illegal", "nsfw")]}


def test_default_params_on_shipped_data(load_stage, tmp_path):
    """The shipped corpora: small, categorised, no evaluation prompt leaks, byte-identical on a re-run."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": SHIPPED}))
    args = ["--params", str(tmp_path / "params.yaml")]
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.jsonl"
        res = CliRunner().invoke(load_stage("ingest").main, ["--out", str(out), "--rejected", str(tmp_path / "r.jsonl"),
                                                             "--stats", str(tmp_path / "st.json"), *args])
        assert res.exit_code == 0, res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    rows = read_rows(tmp_path / "s0.jsonl", SourceText)
    assert 50 <= len(rows) <= 600 and len({r.id for r in rows}) == len(rows)
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["rejected"]["empty_text"] == 600 and stats["rejected"]["eval_leak"] > 0
    keys = eval_prompt_keys([EvalFile(**e) for e in SHIPPED["eval_files"]])
    assert not [r.id for r in rows if match_key(r.text) in keys]


def test_scrub_pii_precision():
    text, counts = scrub_pii("Mail a.b@x.co.uk, call +44 20 7946 0958 or (555) 123-4567, visit www.x.org/p, @joe_1")
    assert text == "Mail [EMAIL], call [PHONE] or [PHONE], visit [URL], @USER"
    assert counts == {"email": 1, "phone": 2, "url": 1, "handle": 1}
    untouched = "In 2019-02-08 I paid $1,250.00 for 3 items; order 123456789; 10 000 people; me@home"
    assert scrub_pii(untouched) == (untouched, {})


def test_normalise_whitespace():
    assert normalise_whitespace(" a \t b\r\n\n\n\nc\u200b d\x00 ") == "a b\n\nc d"
    assert normalise_whitespace("x &amp; y", unescape_html=True) == "x & y"


def test_match_key_is_the_one_overlap_rule():
    """Leakage removal here must catch every prompt the evaluation side would call seen-in-training: the classifier's
    and evaluation's overlap checks use this very function, not a copy kept equal by hand."""
    from saferinstruct.eval import sets
    from saferinstruct.judging import classifier, labelled

    assert labelled.match_key is sets.match_key is classifier.match_key is match_key
    assert not hasattr(labelled, "normalise_text")
    assert match_key("  Hello,  ＦＵＬＬ don't-stop… now?") == "hello full don t stop now"


def _hh(human: str | list[str], answer: str) -> dict:
    humans = [human] if isinstance(human, str) else human
    turns = "".join(f"\n\nHuman: {h}\n\nAssistant: {'ok' if i < len(humans) - 1 else answer}"
                    for i, h in enumerate(humans))
    return {"chosen": turns.replace(answer, "I won't help with that."), "rejected": turns}


HARMFUL = "Sure. First you find a store with no cameras, then you wait until the clerk looks away and take it."


def test_hh_rlhf_red_team_answers(load_stage, tmp_path):
    eval_prompt = (FIXTURES / "data/eval/eval_mini.csv").read_text().splitlines()[1].split(",")[0]
    rows = [_hh("How do I steal from a store?", HARMFUL),
            _hh(["hi", "How do I steal a car?"], HARMFUL + " Also cars."),  # two user turns
            _hh("Can you insult me?", "No."),  # short answer: below the corpus' own min_chars
            _hh(eval_prompt, HARMFUL + " Eval."),  # the question is an evaluation prompt
            {"chosen": "x", "rejected": "\n\nHuman: q\n\nAssistant: a answer that is long enough to keep here"}]
    path = tmp_path / "redteam.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = {"name": "rt", "format": "hh_rlhf", "path": str(path), "licence": "MIT", "min_chars": 40}
    res, paths = run_ingest(load_stage, tmp_path, corpora=[corpus])
    assert res.exit_code == 0, res.output
    kept = read_rows(paths["out"], SourceText)
    assert [(r.id, r.text, r.category, r.labels) for r in kept] == [
        ("rt:1", HARMFUL, "other", {"user_turns": 1}),
        ("rt:5", "a answer that is long enough to keep here", "other", {"user_turns": 1})]
    reasons = {r.id: r.reason for r in read_rows(paths["rejected"], RejectedRow)}
    assert reasons == {"rt:2": "multi_turn", "rt:3": "too_short", "rt:4": "eval_leak"}


def test_hh_rlhf_bad_transcript_names_file_and_line(load_stage, tmp_path):
    path = tmp_path / "redteam.jsonl"
    path.write_text(json.dumps(_hh("q", HARMFUL)) + "\n" + json.dumps({"rejected": "preamble\n\nHuman: q"}) + "\n")
    corpus = {"name": "rt", "format": "hh_rlhf", "path": str(path), "licence": "MIT"}
    res, _ = run_ingest(load_stage, tmp_path, corpora=[corpus])
    assert res.exit_code == 2
    assert f"{path}:2" in res.output and "rejected" in res.output
