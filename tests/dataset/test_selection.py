"""Selection: thresholds over stored verdicts, reasons for every drop, deterministic caps, no model anywhere."""

from __future__ import annotations

import pytest

from saferinstruct.io import RowError
from saferinstruct.records import InducedInstruction, Verdict
from saferinstruct.select_instructions import SelectParams, select_instructions


def _inst(i: int, category: str = "hate") -> InducedInstruction:
    return InducedInstruction(id=f"ins-{i}", parent_id=f"src-{i}", instruction=f"instruction {i}", source_text="s",
                              category=category, candidate=0, model="m", cache_key=f"k{i}")


def _verdict(i: int, label: str = "unsafe", score: float | None = 0.9, parse_ok: bool = True) -> Verdict:
    return Verdict(id=f"ins-{i}:instruction", parent_id=f"ins-{i}", label=label, score=score, parse_ok=parse_ok,
                   raw="", judge="j", cache_key=f"v{i}")


def test_thresholds_and_reasons():
    rows = [_inst(i) for i in range(6)]
    verdicts = [_verdict(0, score=0.9), _verdict(1, score=0.4), _verdict(2, "safe", 0.1),
                _verdict(3, "unknown", None, parse_ok=False), _verdict(4, score=None), _verdict(99)]
    sel = select_instructions(rows, verdicts, SelectParams(min_score=0.5))
    assert [r.id for r in sel.kept] == ["ins-0", "ins-4"]  # an unscored 'unsafe' verdict passes on its label
    assert {r.id: r.reason for r in sel.rejected} == {
        "ins-1": "below_min_score", "ins-2": "judged_safe", "ins-3": "unparsed_verdict", "ins-5": "no_verdict"}
    assert sel.stats["dropped"] == {"below_min_score": 1, "judged_safe": 1, "no_verdict": 1, "unparsed_verdict": 1}
    assert sel.stats["in"] == 6 and sel.stats["kept"] == 2
    assert sel.stats["parse_failures"] == 1 and sel.stats["orphan_verdicts"] == 1
    assert sel.rejected[0].row["instruction"].startswith("instruction")


def test_rejects_use_the_common_format():
    """saferinstruct.rejects' format: id = the dropped instruction's own id, parent_id = its source text, the whole row
    and the verdict as detail; the stats count the same rejects by reason."""
    rows = [_inst(i) for i in range(3)]
    sel = select_instructions(rows, [_verdict(0, score=0.9), _verdict(1, "safe", 0.2), _verdict(2, score=0.8)],
                              SelectParams(max_total=1))
    assert [(r.id, r.parent_id, r.stage, r.reason) for r in sel.rejected] == [
        ("ins-1", "src-1", "select_instructions", "judged_safe"), ("ins-2", "src-2", "select_instructions", "over_cap")]
    assert sel.rejected[0].row == rows[1].model_dump(mode="json")
    assert sel.rejected[0].detail == "safe score=0.2 parse_ok=True"
    assert sel.stats["dropped"] == {"judged_safe": 1, "over_cap": 1}


def test_changing_a_threshold_changes_the_selection_only():
    rows = [_inst(i) for i in range(3)]
    verdicts = [_verdict(0, score=0.95), _verdict(1, score=0.7), _verdict(2, score=0.55)]
    kept = lambda t: [r.id for r in select_instructions(rows, verdicts, SelectParams(min_score=t)).kept]  # noqa: E731
    assert kept(0.5) == ["ins-0", "ins-1", "ins-2"]
    assert kept(0.8) == ["ins-0"]
    assert kept(None) == ["ins-0", "ins-1", "ins-2"]


def test_keep_unparsed_and_other_label():
    rows = [_inst(0), _inst(1)]
    verdicts = [_verdict(0, "unknown", None, parse_ok=False), _verdict(1, "safe", 0.1)]
    assert [r.id for r in select_instructions(rows, verdicts, SelectParams(keep_unparsed=True)).kept] == ["ins-0"]
    assert [r.id for r in select_instructions(rows, verdicts, SelectParams(label="safe", min_score=None)).kept] == \
        ["ins-1"]


def test_caps_keep_highest_scores_per_category_in_input_order():
    rows = [_inst(0, "hate"), _inst(1, "hate"), _inst(2, "hate"), _inst(3, "illegal"), _inst(4, "illegal")]
    verdicts = [_verdict(0, score=0.6), _verdict(1, score=0.99), _verdict(2, score=0.8), _verdict(3, score=0.7),
                _verdict(4, score=0.9)]
    sel = select_instructions(rows, verdicts, SelectParams(max_per_category=2))
    assert [r.id for r in sel.kept] == ["ins-1", "ins-2", "ins-3", "ins-4"]  # input order, not score order
    assert sel.stats["kept_per_category"] == {"hate": 2, "illegal": 2}
    assert [r.id for r in sel.rejected if r.reason == "over_cap"] == ["ins-0"]
    top = select_instructions(rows, verdicts, SelectParams(max_total=2))
    assert [r.id for r in top.kept] == ["ins-1", "ins-4"]


def test_bad_verdict_files_are_errors():
    with pytest.raises(RowError, match="a second verdict for instruction ins-0"):
        select_instructions([_inst(0)], [_verdict(0), _verdict(0)], SelectParams())
    orphan = _verdict(0).model_copy(update={"parent_id": None})
    with pytest.raises(RowError, match="no parent_id"):
        select_instructions([_inst(0)], [orphan], SelectParams())
