"""One way to record rejected rows: every stage that writes a rejects file writes ``data/rejected/<stage>.jsonl``
through :mod:`saferinstruct.rejects` (listed in its dvc.yaml deps), and no other module builds a ``RejectedRow``
itself, so every rejects file has the same id style and each stage counts its rejects where it records them."""

from __future__ import annotations

import ast
from collections import Counter

from saferinstruct.records import InducedInstruction
from saferinstruct.rejects import Rejects
from conftest import REPO, dvc_stages

SRC = REPO / "src" / "saferinstruct"


def _rejects_files() -> dict[str, list[str]]:
    """stage -> its outs under data/rejected/."""
    found: dict[str, list[str]] = {}
    for name, stage in dvc_stages().items():
        for out in stage.get("outs") or []:
            path = out if isinstance(out, str) else next(iter(out))
            if path.startswith("data/rejected/"):
                found.setdefault(name, []).append(path)
    return found


def test_each_rejecting_stage_writes_its_own_file_through_rejects():
    files = _rejects_files()
    assert {"ingest", "reverse_pairs", "induce", "quality_filter", "select_instructions",
            "build_preferences"} <= set(files)
    for name, paths in files.items():
        assert paths == [f"data/rejected/{name}.jsonl"], f"stage {name}: rejects file(s) {paths}"
        assert "src/saferinstruct/rejects.py" in dvc_stages()[name]["deps"], \
            f"stage {name} writes {paths[0]} but does not record its rejects through saferinstruct.rejects"


def test_only_the_rejects_module_builds_rejected_rows():
    builders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == \
                    "RejectedRow":
                builders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert builders and all(b.startswith("rejects.py:") for b in builders), \
        f"RejectedRow built outside saferinstruct.rejects (use Rejects.add / add_record): {builders}"


def test_a_reject_keeps_the_dropped_rows_own_id_and_parent():
    rejects = Rejects("some_stage")
    row = InducedInstruction(id="s1:0", parent_id="s1", instruction="Hi.", source_text="text", category="hate",
                             candidate=0, model="m", cache_key="k")
    rejects.add_record("hate", row, "too_short", "1 word")
    rejects.add("corpus", "corpus:7", "malformed", "not JSON", {"line": 7})
    assert [(r.id, r.parent_id, r.stage, r.reason, r.detail) for r in rejects.rows] == [
        ("s1:0", "s1", "some_stage", "too_short", "1 word"), ("corpus:7", None, "some_stage", "malformed", "not JSON")]
    assert rejects.rows[0].row == row.model_dump(mode="json") and rejects.rows[1].row == {"line": 7}
    assert rejects.of("hate") == {"too_short": 1} and rejects.total() == Counter(too_short=1, malformed=1)
