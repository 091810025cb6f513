"""onpolicy_pairs: the policy's own answers replace helpful chosen / safety rejected sides only where they fit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest
from click.testing import CliRunner

from saferinstruct.llm.base import Backend, ChatRequest, ChatResult, register_backend
from saferinstruct.onpolicy_pairs import OnPolicyParams, onpolicy_pairs
from saferinstruct.params import Params
from saferinstruct.records import ChatTurn, PreferencePair

REFUSAL = "I'm sorry, but I can't help with that."
# The fake backend answers with the prompt itself, so each prompt spells out what the "policy" says.
ECHO = {"backend": "fake", "options": {"template": "{user}"}}


def _pair(i: int, kind: str, prompt: str, chosen: str = "orig chosen", rejected: str = "orig rejected",
          conversational: bool = False) -> PreferencePair:
    if conversational:
        return PreferencePair(id=f"p{i}", parent_id=f"s{i}", prompt=[ChatTurn(role="user", content=prompt)],
                              chosen=[ChatTurn(role="assistant", content=chosen)],
                              rejected=[ChatTurn(role="assistant", content=rejected)],
                              category="hate" if kind == "safety" else "helpful", kind=kind)
    return PreferencePair(id=f"p{i}", parent_id=f"s{i}", prompt=prompt, chosen=chosen, rejected=rejected,
                          category="hate" if kind == "safety" else "helpful", kind=kind)


COMPLY = "Sure, here is a plan with three clear steps to follow."
PAIRS = [
    _pair(0, "helpful", COMPLY, rejected=REFUSAL),  # policy helps: its answer becomes chosen
    _pair(1, "helpful", "I'm sorry, but I cannot answer questions about bread.", rejected=REFUSAL),  # refuses: kept
    _pair(2, "safety", "Here is exactly how you would do the harmful thing.", chosen=REFUSAL),  # complies: rejected
    _pair(3, "safety", "I can't help with that request at all, sorry.", chosen=REFUSAL),  # already refuses: kept
    _pair(4, "helpful", "ok", rejected=REFUSAL),  # too short to train on: kept
]


def test_sides_replaced_only_where_the_policy_answer_fits(tmp_path):
    run = onpolicy_pairs({"train": PAIRS, "test": []}, OnPolicyParams(**ECHO), str(tmp_path / "cache"))
    out = run.pairs["train"]
    assert out[0].chosen == COMPLY and out[0].rejected == REFUSAL
    assert out[0].provenance["chosen_from"] == "policy" and out[0].provenance["original_chosen"] == "orig chosen"
    assert out[1] == PAIRS[1]
    assert out[2].rejected == PAIRS[2].prompt and out[2].chosen == REFUSAL
    assert out[2].provenance["rejected_from"] == "policy"
    assert out[2].provenance["original_rejected"] == "orig rejected"
    assert out[3] == PAIRS[3] and out[4] == PAIRS[4]
    assert run.stats["replaced"] == {"helpful_chosen": 1, "safety_rejected": 1}
    assert run.stats["kept_original"] == {"helpful:degenerate": 1, "helpful:policy_refused": 1,
                                          "safety:policy_refused": 1}
    assert run.stats["gateway"]["calls"] == 5


def test_each_side_has_its_own_switch(tmp_path):
    params = OnPolicyParams(**ECHO, safety_rejected="original")
    out = onpolicy_pairs({"train": PAIRS}, params, str(tmp_path / "c")).pairs["train"]
    assert out[0].chosen == COMPLY and out[2] == PAIRS[2]
    params = OnPolicyParams(**ECHO, helpful_chosen="original")
    out = onpolicy_pairs({"train": PAIRS}, params, str(tmp_path / "c")).pairs["train"]
    assert out[0] == PAIRS[0] and out[2].rejected == PAIRS[2].prompt


def test_policy_share_mixes_the_two_pair_kinds_by_a_stable_draw(tmp_path):
    """policy_share: the seeded share of pairs that may take the policy's side; the rest keep the corpus side (the
    paper's pair), and adding pairs never moves another pair across the draw."""
    many = [_pair(i, "safety", f"Here is exactly how you would do harmful thing number {i}.", chosen=REFUSAL)
            for i in range(200)]
    runs = {share: onpolicy_pairs({"train": many}, OnPolicyParams(**ECHO, policy_share=share), str(tmp_path / "c"))
            for share in (0.0, 0.3, 1.0)}
    swapped = {share: {p.id for p in run.pairs["train"] if p.rejected != "orig rejected"}
               for share, run in runs.items()}
    assert not swapped[0.0] and len(swapped[1.0]) == 200
    assert 40 <= len(swapped[0.3]) <= 80  # ~30% of 200
    assert runs[0.3].stats["kept_original"]["safety:original_by_share"] == 200 - len(swapped[0.3])
    more = onpolicy_pairs({"train": many + [_pair(999, "safety", COMPLY, chosen=REFUSAL)]},
                          OnPolicyParams(**ECHO, policy_share=0.3), str(tmp_path / "c"))
    assert {p.id for p in more.pairs["train"][:200] if p.rejected != "orig rejected"} == swapped[0.3]


def test_both_original_calls_no_model():
    # No backend of this name exists: building one would fail, so passing proves none is built.
    params = OnPolicyParams(backend="no-such-backend", helpful_chosen="original", safety_rejected="original")
    run = onpolicy_pairs({"train": PAIRS}, params, None)
    assert run.pairs["train"] == PAIRS and "gateway" not in run.stats


def test_conversational_shape_is_kept(tmp_path):
    pairs = [_pair(0, "helpful", COMPLY, conversational=True), _pair(1, "safety", COMPLY, conversational=True)]
    out = onpolicy_pairs({"train": pairs}, OnPolicyParams(**ECHO), str(tmp_path / "c")).pairs["train"]
    assert out[0].chosen == [ChatTurn(role="assistant", content=COMPLY)]
    assert out[1].rejected == [ChatTurn(role="assistant", content=COMPLY)]
    assert out[1].prompt == pairs[1].prompt


def test_one_call_per_distinct_prompt_and_cached(tmp_path):
    pairs = PAIRS + [PAIRS[0].model_copy(update={"id": "dup"})]
    first = onpolicy_pairs({"train": pairs[:3], "test": pairs[3:]}, OnPolicyParams(**ECHO), str(tmp_path / "c"))
    assert first.stats["prompts"] == 5 and first.stats["gateway"]["calls"] == 5
    again = onpolicy_pairs({"train": pairs[:3], "test": pairs[3:]}, OnPolicyParams(**ECHO), str(tmp_path / "c"))
    assert again.stats["gateway"]["calls"] == 0 and again.pairs == first.pairs


@register_backend
class _CutBackend(Backend):
    """Every answer is cut by max_tokens mid-sentence."""

    name = "test_onpolicy_cut"
    Options = Params

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        for i, _ in enumerate(requests):
            yield i, ChatResult(text="Sure, bake it at 200 degrees for an hour. Then let it", finish_reason="length")


@pytest.mark.parametrize("trim,expected", [(True, "Sure, bake it at 200 degrees for an hour."),
                                           (False, "Sure, bake it at 200 degrees for an hour. Then let it")])
def test_truncated_answer_is_trimmed_to_a_sentence(trim, expected):
    params = OnPolicyParams(backend="test_onpolicy_cut", options={}, trim_truncated=trim)
    out = onpolicy_pairs({"train": [PAIRS[0]]}, params, None).pairs["train"]
    assert out[0].chosen == expected


@pytest.mark.parametrize("bad", [{"helpful_chosen": "expert"}, {"min_chars": 0}, {"generaton": {}}])
def test_bad_params_are_rejected(bad):
    with pytest.raises(ValueError):
        OnPolicyParams(**bad)


def test_stage_writes_pairs_and_stats(tmp_path, load_stage):
    pref = tmp_path / "prefs"
    pref.mkdir()
    for name, rows in (("train", PAIRS[:3]), ("test", PAIRS[3:])):
        (pref / f"{name}.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"onpolicy_pairs": ECHO}))
    stage = load_stage("onpolicy_pairs")
    res = CliRunner().invoke(stage.main, ["--preferences", str(pref), "--out-dir", str(tmp_path / "pairs"),
                                          "--cache", str(tmp_path / "cache"), "--stats", str(tmp_path / "s.json"),
                                          "--params", str(params)])
    assert res.exit_code == 0, res.output
    train = [json.loads(x) for x in (tmp_path / "pairs/train.jsonl").read_text().splitlines()]
    assert [r["chosen"] for r in train] == [COMPLY, PAIRS[1].chosen, REFUSAL]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["replaced"] == {"helpful_chosen": 1, "safety_rejected": 1} and stats["pairs"] == {"train": 3}
    assert not (tmp_path / "pairs/test.jsonl").exists()  # the held-out split is never trained on: not rewritten
