"""The recipes' training pairs, built by the library with each recipe's effective params (params.yaml as committed +
the recipe's `-S` overrides from configs/recipes.yaml; only file paths point at fixtures): `paper` trains on the
source text byte for byte, `human` only on the human-annotated file, disjoint from the evaluation prompts, with the
default's pair count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, REPO

from saferinstruct.helpful_pairs import HelpfulSource, load_helpful
from saferinstruct.io import Quarantine, RowError, read_rows
from saferinstruct.onpolicy_pairs import OnPolicyParams, onpolicy_pairs
from saferinstruct.preferences import Inputs, PreferenceParams, build_preferences
from saferinstruct.recipes import load_recipes, overrides
from saferinstruct.records import ExpertResponse, InducedInstruction, SourceText, Verdict, as_text
from saferinstruct.sources.leakage import EvalFile, eval_prompt_keys
from saferinstruct.sources.text import match_key

PREF = FIXTURES / "data" / "preferences"
HUMAN = Path(__file__).parent / "fixtures" / "human_mini.jsonl"
EVAL = [{"path": str(FIXTURES / "data/eval/eval_prompts.jsonl"), "field": "prompt"}]
BOOK = load_recipes(REPO / "configs/recipes.yaml")
COMMITTED = yaml.safe_load((REPO / "params.yaml").read_text())


def effective(recipe: str, section: str) -> dict:
    """params.yaml's section with the recipe's overrides applied the way `dvc exp run -S key=value` applies them."""
    out = json.loads(json.dumps(COMMITTED[section]))
    for item in overrides(BOOK, recipe, COMMITTED):
        key, value = item.split("=", 1)
        head, *path = key.split(".")
        if head == section:
            node = out
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = yaml.safe_load(value)
    return out


def pref_params(recipe: str) -> PreferenceParams:
    section = effective(recipe, "build_preferences") | {"test_fraction": 0.34, "eval_files": EVAL, "helpful": [
        {"name": "hh", "format": "hh_rlhf", "path": str(PREF / "helpful_mini.jsonl.gz"), "licence": "MIT"}]}
    section["human_pairs"] = section["human_pairs"] | {"path": str(HUMAN)}
    return PreferenceParams.model_validate(section)


def inputs(sources: list[SourceText]) -> Inputs:
    return Inputs(sources, read_rows(PREF / "instructions.jsonl", InducedInstruction),
                  read_rows(PREF / "instruction_verdicts.jsonl", Verdict),
                  read_rows(PREF / "responses.jsonl", ExpertResponse), read_rows(PREF / "response_verdicts.jsonl", Verdict))


@pytest.fixture
def sources() -> list[SourceText]:
    """The fixture sources with texts a normalising step would change: padding, a tab, non-ASCII, a CRLF."""
    rows = read_rows(PREF / "sources.jsonl", SourceText)
    return [s.model_copy(update={"text": f"  {s.text}\t– naïve\r\n "}) for s in rows]


def trained(recipe: str, sources: list[SourceText]):
    """What train_sft / train_dpo read under the recipe: build_preferences, then onpolicy_pairs (no model given: a
    recipe that needed a policy call would fail here)."""
    built = build_preferences(pref_params(recipe), inputs(sources))
    run = onpolicy_pairs({"train": built.train, "test": built.test},
                         OnPolicyParams.model_validate(effective(recipe, "onpolicy_pairs")), cache_dir=None)
    return built, run.pairs["train"] + run.pairs["test"]


def test_paper_rejected_is_the_source_text_byte_for_byte(sources):
    _, pairs = trained("paper", sources)
    by_id = {s.id: s for s in sources}
    responses = {r.id: r for r in read_rows(PREF / "responses.jsonl", ExpertResponse)}
    safety = [p for p in pairs if p.kind == "safety"]
    assert safety
    for p in safety:
        assert as_text(p.rejected).encode() == by_id[p.provenance["source_id"]].text.encode()
        assert as_text(p.chosen) == responses[p.parent_id].response.strip()
        assert "rejected_from" not in p.provenance and "policy_model" not in p.provenance


def test_paper_helpful_pairs_are_hh_chosen_vs_rejected_one_to_one(sources):
    _, pairs = trained("paper", sources)
    spec = HelpfulSource(name="hh", format="hh_rlhf", path=str(PREF / "helpful_mini.jsonl.gz"), licence="MIT")
    corpus = {line: (chosen, rejected) for line, (_, chosen, rejected) in load_helpful(spec)}
    helpful = [p for p in pairs if p.kind == "helpful"]
    assert len(helpful) == sum(p.kind == "safety" for p in pairs)
    for p in helpful:
        assert (as_text(p.chosen), as_text(p.rejected)) == corpus[p.provenance["line"]]


def test_default_recipe_differs_where_paper_pins_it(sources):
    """The paper recipe's overrides matter: the committed default swaps helpful rejected sides for expert refusals."""
    built = build_preferences(pref_params("default"), inputs(sources))
    assert any("rejected_from" in p.provenance for p in built.train + built.test if p.kind == "helpful")


def _human_file() -> set[tuple[str, str, str]]:
    spec = HelpfulSource(name="h", format="hh_rlhf", path=str(HUMAN), licence="MIT")
    return {(prompt[-1][1], chosen, rejected) for _, (prompt, chosen, rejected) in load_helpful(spec)}


def test_human_pairs_come_only_from_the_human_file_and_never_from_eval_prompts(sources):
    built, pairs = trained("human", sources)
    safety = [p for p in pairs if p.kind == "safety"]
    assert safety and all(p.provenance["file"] == str(HUMAN) and p.provenance["annotation"] == "human" for p in safety)
    assert {(as_text(p.prompt), as_text(p.chosen), as_text(p.rejected)) for p in safety} <= _human_file()
    source_texts = {s.text for s in sources}
    assert not any(as_text(p.rejected) in source_texts for p in safety)
    keys = eval_prompt_keys([EvalFile.model_validate(e) for e in EVAL])
    assert not any(match_key(as_text(p.prompt)) in keys for p in pairs)
    leaks = [r for r in built.rejected if r.reason == "eval_leak" and "human:" in (r.parent_id or r.id)]
    assert len(leaks) == 1 and "capital of France" in json.dumps(leaks[0].row)  # the planted evaluation prompt
    assert built.stats["safety_pairs"] == "human"


def test_human_has_the_default_pair_count_and_the_same_helpful_pairs(sources):
    human, _ = trained("human", sources)
    default = build_preferences(pref_params("default"), inputs(sources))
    paper, _ = trained("paper", sources)
    kinds = lambda rows: sorted(p.kind for p in rows)  # noqa: E731
    assert kinds(human.train + human.test) == kinds(default.train + default.test)
    helpful = lambda b: {(p.id, as_text(p.chosen), as_text(p.rejected))  # noqa: E731
                         for p in b.train + b.test if p.kind == "helpful"}
    assert helpful(human) == helpful(paper)


def test_human_with_too_few_pairs_names_the_fix(sources):
    """10 Safer-Instruct safety pairs, 5 usable human pairs: an error naming the params to change, not fewer pairs."""
    params = pref_params("human").model_copy(update={"require_response_verdict": False})
    ins0 = read_rows(PREF / "instructions.jsonl", InducedInstruction)[0]
    resp0 = next(r for r in read_rows(PREF / "responses.jsonl", ExpertResponse) if r.outcome == "ok")
    instructions = [ins0.model_copy(update={"id": f"x{n}", "parent_id": sources[0].id,
                                            "instruction": f"Harmful request number {n}"}) for n in range(10)]
    responses = [resp0.model_copy(update={"id": f"rx{n}", "parent_id": f"x{n}"}) for n in range(10)]
    with pytest.raises(RowError, match="human_max_turns"):
        build_preferences(params, Inputs(sources[:1], instructions, [], responses, []))


def test_shipped_human_file_has_enough_single_turn_pairs_outside_the_eval_sets():
    params = PreferenceParams.model_validate(effective("human", "build_preferences"))
    assert params.safety_pairs == "human" and params.human_pairs.path == \
        "data/raw/sources/hh_rlhf_harmless_base_test.jsonl.gz"
    keys = eval_prompt_keys([EvalFile.model_validate(e.model_dump()) for e in params.eval_files])
    spec = params.human_pairs.model_copy(update={"path": str(REPO / params.human_pairs.path)})
    usable = [1 for _, (prompt, chosen, rejected) in load_helpful(spec, Quarantine())
              if len(prompt) == 1 and chosen != rejected and match_key(prompt[0][1]) not in keys]
    assert len(usable) >= 200  # the Safer-Instruct half of the default is ~80 pairs

