"""`make repro` prints no DVC "'<path>' is empty" warnings that the code can avoid: DVC warns for every empty file or
folder it hashes, deps included (an empty package __init__.py listed by ten stages gave ten warnings)."""

from __future__ import annotations

from pathlib import Path

import yaml

from saferinstruct.llm.base import ChatResult
from saferinstruct.llm.cache import CallCache, create_cache_dir

REPO = Path(__file__).resolve().parents[2]


def test_no_stage_depends_on_an_empty_source_file():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    empty = sorted({f"{name}: {dep}" for name, block in stages.items() for dep in block.get("deps") or []
                    if dep.startswith("src/") and (REPO / dep).is_file()
                    and (REPO / dep).stat().st_size == 0})
    assert not empty, f"DVC warns 'is empty' for each: give the module a docstring: {empty}"


def test_a_cache_folder_without_calls_is_tagged_not_empty(tmp_path):
    root = create_cache_dir(tmp_path / "cache" / "judge")
    assert create_cache_dir(root) == root  # idempotent: a re-run keeps the tag
    assert (root / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    cache = CallCache(root)
    assert len(cache) == 0  # the tag is no entry
    cache.put("ab12", ChatResult(text="no", finish_reason="stop"))
    assert len(cache) == 1 and cache.get("ab12").text == "no"


def test_offline_judge_stages_create_their_cache_with_the_tag():
    for stage in ("judge_instructions", "self_evaluate"):
        assert "create_cache_dir(cache_dir)" in (REPO / "stages" / f"{stage}.py").read_text(), stage
