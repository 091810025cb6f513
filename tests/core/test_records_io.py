"""Typed rows and atomic I/O: strict models, clear errors naming file and line, quarantine, atomic writes."""

from __future__ import annotations

import json

import pytest

from saferinstruct import io
from saferinstruct.records import PreferencePair, Provenance, ReversePair, SourceText


def _source(i: int = 1) -> SourceText:
    return SourceText(id=f"s{i}", text="some text", category="hate",
                      provenance=Provenance(corpus="c", licence="MIT", file="f.csv", line=i))


def test_round_trip(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert io.write_rows(path, [_source(1), _source(2)]) == 2
    rows = io.read_rows(path, SourceText)
    assert [r.id for r in rows] == ["s1", "s2"]
    assert rows[0].provenance.line == 1


def test_extra_field_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    row = json.loads(_source().model_dump_json()) | {"surprise": 1}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(io.RowError, match=r"rows.jsonl:1: field 'surprise'"):
        io.read_rows(path, SourceText)


def test_bad_category_names_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = _source().model_dump_json()
    bad = json.loads(good) | {"category": "spam"}
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(io.RowError, match=r"rows.jsonl:2: field 'category'"):
        io.read_rows(path, SourceText)


@pytest.mark.parametrize(("content", "message"), [
    (b'{"id": "a", \n', r":1: bad JSON"),
    (b'{"id": "a", "instruction": "x", "response": "y", "dataset": "d"}\n', r":1: field 'licence': Field required"),
    (b'{"id": 3, "instruction": "x", "response": "y", "dataset": "d", "licence": "l"}\n', r":1: field 'id'"),
    (b'{"id": "a", "instruction": "\xff\xfe", "response": "y", "dataset": "d", "licence": "l"}\n',
     r":1: invalid UTF-8"),
    (b"", r"file is empty"),
    (b"\n\n", r"file is empty"),
    (b'{"id": "a", "instruction": "\\ud800", "response": "y", "dataset": "d", "licence": "l"}\n',
     r":1: bad JSON: lone surrogate \\ud800 \(not valid Unicode\)"),
    (b"[" * 50_000 + b"]" * 50_000 + b"\n", r":1: bad JSON: nested too deeply"),
    (b'{"id": "a"} {"id": "b"}\n', r":1: bad JSON: extra content after the top-level value \(column 13\)"),
])
def test_bad_input_errors(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(io.RowError, match=message):
        io.read_rows(path, ReversePair)


def test_missing_file(tmp_path):
    with pytest.raises(io.RowError, match="file not found"):
        io.read_rows(tmp_path / "nope.jsonl", ReversePair)
    with pytest.raises(io.RowError, match="is a directory, not a file"):
        io.read_rows(tmp_path, ReversePair)


def test_quarantine_takes_lone_surrogates_and_deep_nesting(tmp_path):
    path = tmp_path / "in.jsonl"
    good = ReversePair(id="a", instruction="x", response="y 😀", dataset="d", licence="l").model_dump_json()
    pair = good.replace("😀", "\\ud83d\\ude00")  # an escaped surrogate pair is one valid character
    path.write_text("\n".join([good, good.replace('"x"', '"\\udc80"'), "[" * 50_000, pair, ""]))
    q = io.Quarantine()
    rows = io.read_rows(path, ReversePair, quarantine=q)
    assert [r.response for r in rows] == ["y 😀", "y 😀"]
    assert [(r.line, r.error) for r in q.rows] == [(2, "bad JSON: lone surrogate \\udc80 (not valid Unicode)"),
                                                   (3, "bad JSON: nested too deeply")]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"a": 1}\n\n  {"b": 2}\n', r"x.json:3: bad JSON: extra content after the top-level value \(line 3, column 3\)"),
    (b'[1]\n]', r"x.json:2: bad JSON: extra content"),
    (b'{"a": "\\udfff"}', r"x.json: bad JSON: lone surrogate \\udfff"),
    (b"[" * 50_000 + b"]" * 50_000, r"x.json: bad JSON: nested too deeply"),
    (b'{"a":\n "\xff"}', r"x.json:2: invalid UTF-8 at byte 8"),
])
def test_read_json_one_value_and_nothing_else(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(io.RowError, match=message):
        io.read_json(path)
    with pytest.raises(io.RowError, match="is a directory"):
        io.read_json(tmp_path)


def test_bom_is_tolerated(tmp_path):
    path = tmp_path / "in.jsonl"
    row = ReversePair(id="a", instruction="x", response="y", dataset="d", licence="l")
    path.write_bytes(b"\xef\xbb\xbf" + row.model_dump_json().encode() + b"\n")
    assert io.read_rows(path, ReversePair) == [row]


def test_quarantine_collects_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    good = ReversePair(id="a", instruction="x", response="y", dataset="d", licence="l").model_dump_json()
    path.write_text(good + "\nnot json\n" + good.replace('"a"', '"b"') + "\n")
    q = io.Quarantine()
    rows = io.read_rows(path, ReversePair, quarantine=q)
    assert [r.id for r in rows] == ["a", "b"]
    assert len(q) == 1 and q.rows[0].line == 2 and q.rows[0].raw.startswith("not json")
    assert io.write_quarantine(tmp_path / "q.jsonl", q) == 1


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    path = tmp_path / "out.jsonl"
    io.write_rows(path, [_source(1)])
    before = path.read_bytes()

    def rows():
        yield _source(2)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        io.write_rows(path, rows())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_write_json_sorted_and_atomic(tmp_path):
    path = tmp_path / "stats" / "x.json"
    io.write_json(path, {"b": 1, "a": 2})
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert io.read_json(path) == {"a": 2, "b": 1}
    path.write_text("{bad")
    with pytest.raises(io.RowError, match="bad JSON"):
        io.read_json(path)


def test_preference_pair_kind_is_strict():
    with pytest.raises(ValueError):
        PreferencePair(id="p", prompt="a", chosen="b", rejected="c", category="hate", kind="other")


def test_a_staged_folder_and_a_file_change_together_or_not_at_all(tmp_path):
    model, stats = tmp_path / "models" / "sft", tmp_path / "stats" / "train_sft.json"
    model.mkdir(parents=True)
    (model / "old.bin").write_text("old")
    io.write_json(stats, {"run": 1})

    def build(name: str):
        built = model.parent / ".sft.staging"
        built.mkdir()
        (built / f"{name}.bin").write_text(name)
        return built

    with pytest.raises(RuntimeError), io.output_set() as out:
        out.stage_dir(build("new"), model)
        raise RuntimeError("the stats could not be written")
    assert [p.name for p in model.iterdir()] == ["old.bin"] and json.loads(stats.read_text()) == {"run": 1}
    assert sorted(p.name for p in model.parent.iterdir()) == ["sft"]  # the staged folder is gone too

    with io.output_set() as out:
        out.stage_dir(build("new"), model)
        out.json(stats, {"run": 2})
    assert [p.name for p in model.iterdir()] == ["new.bin"] and json.loads(stats.read_text()) == {"run": 2}
    assert sorted(p.name for p in model.parent.iterdir()) == ["sft"]  # nothing of the old folder is left beside it
