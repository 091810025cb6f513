"""Malformed inputs through ingest and reverse_pairs: a one-line error naming file and line (exit 2, no output
written) or, with quarantine on, a counted reject; never a traceback, never a partial output."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import FIXTURES

from saferinstruct.io import read_rows
from saferinstruct.records import RejectedRow

GOOD = "A perfectly ordinary sentence that is long enough to keep."
TEN_MB = "x" * (10 * 1024 * 1024)
DEEP = b"[" * 50_000 + b"]" * 50_000  # json.loads raises RecursionError on it
SURROGATE = b'{"text": "half of a pair \\ud800 is not Unicode, so it cannot be written"}'


def ingest(load_stage, tmp: Path, data: Path, quarantine: bool = False, **corpus):
    spec = {"name": "c", "format": "user", "path": str(data), "licence": "CC0", "category": "hate",
            "text_field": "text"} | corpus
    spec = {k: v for k, v in spec.items() if v is not None}  # None removes a default key
    (tmp / "params.yaml").write_text(yaml.safe_dump({"ingest": {
        "quarantine": quarantine, "min_chars": 10, "max_chars": 500, "corpora": [spec]}}))
    out = tmp / "out"
    res = CliRunner().invoke(load_stage("ingest").main, [
        "--out", str(out / "s.jsonl"), "--rejected", str(out / "r.jsonl"), "--stats", str(out / "st.json"),
        "--params", str(tmp / "params.yaml")])
    return res, out


def reverse(load_stage, tmp: Path, data: Path, fmt: str = "alpaca", quarantine: bool = False):
    (tmp / "params.yaml").write_text(yaml.safe_dump({"reverse_pairs": {"quarantine": quarantine, "datasets": [
        {"name": "d", "format": fmt, "path": str(data), "licence": "CC0"}]}}))
    out = tmp / "out"
    res = CliRunner().invoke(load_stage("reverse_pairs").main, [
        "--train", str(out / "t.jsonl"), "--val", str(out / "v.jsonl"), "--rejected", str(out / "r.jsonl"),
        "--stats", str(out / "st.json"), "--params", str(tmp / "params.yaml")])
    return res, out


def assert_clean_error(res, out: Path, where: str, message: str):
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("error: ") and where in text and message in text, text
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even stats


def jl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


# (file name, content, expected "file:line" suffix, message) for the user-corpus loader of ingest
INGEST_CASES = {
    "bad_json": ("d.jsonl", jl({"text": GOOD}, b'{"text": "unterminated'), "d.jsonl:2", "bad JSON"),
    "not_object": ("d.jsonl", jl({"text": GOOD}, [1, 2]), "d.jsonl:2", "expected a JSON object"),
    "missing_field": ("d.jsonl", jl({"text": GOOD}, {"body": GOOD}), "d.jsonl:2", "field 'text': missing"),
    "wrong_type": ("d.jsonl", jl({"text": GOOD}, {"text": 42}), "d.jsonl:2", "field 'text': expected a string"),
    "null_field": ("d.jsonl", jl({"text": None}), "d.jsonl:1", "field 'text': missing"),
    "utf8_jsonl": ("d.jsonl", jl({"text": GOOD}, b'{"text": "caf\xe9 au lait"}'), "d.jsonl:2", "invalid UTF-8"),
    "utf8_csv": ("d.csv", b"text\n" + GOOD.encode() + b"\n\"caf\xe9 au lait\"\n", "d.csv:3", "invalid UTF-8"),
    "unbalanced_quote": ("d.csv", f'text,n\n"{GOOD}",1\n"never closed,2\n{GOOD},3\n'.encode(), "d.csv:3",
                         "1 fields where the header has 2"),
    "extra_field": ("d.csv", f"text\n{GOOD}\n{GOOD},surprise\n".encode(), "d.csv:3", "2 fields where the header"),
    "huge_csv_field": ("d.csv", f"text\n{GOOD}\n{TEN_MB}\n".encode(), "d.csv:3", "CSV field longer than the limit"),
    "lone_surrogate": ("d.jsonl", jl({"text": GOOD}, SURROGATE), "d.jsonl:2", "lone surrogate \\ud800"),
    "surrogate_key": ("d.jsonl", jl({"text": GOOD}, b'{"text": "fine", "\\udfff": 1}'), "d.jsonl:2", "lone surrogate"),
    "deep_nesting": ("d.jsonl", jl({"text": GOOD}, DEEP), "d.jsonl:2", "nested too deeply"),
    "surrogate_gz": ("d.jsonl.gz", gzip.compress(jl({"text": GOOD}, SURROGATE)), "d.jsonl.gz:2", "lone surrogate"),
    "deep_gz": ("d.jsonl.gz", gzip.compress(jl(DEEP, {"text": GOOD})), "d.jsonl.gz:1", "nested too deeply"),
    "surrogate_array": ("d.json", b'[\n {"text": "' + GOOD.encode() + b'"},\n ' + SURROGATE + b"\n]\n", "d.json:3",
                        "lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(INGEST_CASES))
def test_ingest_strict_error_names_file_and_line(load_stage, tmp_path, case):
    name, content, where, message = INGEST_CASES[case]
    (tmp_path / name).write_bytes(content)
    res, out = ingest(load_stage, tmp_path, tmp_path / name)
    assert_clean_error(res, out, where, message)


@pytest.mark.parametrize("case", sorted(INGEST_CASES))
def test_ingest_quarantine_counts_bad_records(load_stage, tmp_path, case):
    name, content, where, message = INGEST_CASES[case]
    (tmp_path / name).write_bytes(content)
    res, out = ingest(load_stage, tmp_path, tmp_path / name, quarantine=True)
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "st.json").read_text())
    assert stats["malformed"] == 1
    bad = [r for r in read_rows(out / "r.jsonl", RejectedRow) if r.reason == "malformed"]
    assert len(bad) == 1 and message in bad[0].detail and bad[0].row["line"] == int(where.rsplit(":", 1)[1])
    assert len(bad[0].row["raw"]) <= 2000  # a 10 MB line stays a small reject


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.jsonl", b"", "file is empty"),
    ("blank.jsonl", b"\n \n", "file is empty"),
    ("header_only.csv", b"text\n", "file is empty"),
    ("empty.csv", b"", "file is empty"),
    ("no_column.csv", b"body\nhello there my friend\n", "missing column(s) ['text']"),
    ("fake.jsonl.gz", b"this is not gzip at all\n", "not a valid gzip file"),
    ("data.txt", b"text\n", "unknown file type"),
    ("deep.json", b"[" + DEEP + b"]", "deep.json:1: bad JSON: nested too deeply"),
    ("two_arrays.json", f'[{{"text": "{GOOD}"}}]\n  [{{"text": "{GOOD} 2"}}]\n'.encode(),
     "two_arrays.json:2: bad JSON: extra content after the top-level array (column 3)"),
])
def test_whole_file_problems_always_fail(load_stage, tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    for quarantine in (False, True):
        res, out = ingest(load_stage, tmp_path, tmp_path / name, quarantine=quarantine)
        assert_clean_error(res, out, name, message)


def test_bom_embedded_newlines_stray_quotes_and_huge_jsonl_line(load_stage, tmp_path):
    """Valid-but-awkward input is read, not rejected as malformed: a BOM, a quoted multi-line cell, a quote inside
    an unquoted cell; a 10 MB jsonl line is read and dropped by the length bound, with a count."""
    csv_file = tmp_path / "d.csv"
    csv_file.write_bytes(b"\xef\xbb\xbftext\n" + f'"{GOOD}\nsecond line"\nhe said "hi" to everyone in the room\n'
                         .encode())
    res, out = ingest(load_stage, tmp_path, csv_file)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "s.jsonl").read_text().splitlines()]
    assert [r["provenance"]["line"] for r in rows] == [2, 4]
    assert rows[0]["text"].endswith("\nsecond line") and rows[1]["text"] == 'he said "hi" to everyone in the room'
    big = tmp_path / "big.jsonl.gz"
    with gzip.open(big, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + jl({"text": GOOD}, {"text": TEN_MB}))
    res, out = ingest(load_stage, tmp_path, big)
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "st.json").read_text())
    assert stats["kept"] == 1 and stats["rejected"] == {"too_long": 1} and stats["malformed"] == 0


REVERSE_CASES = {
    "bad_json_array": ("alpaca", "a.json", b'[\n {"instruction": "x", "output": "y"},\n {"instruction": \n]\n',
                       "a.json:4", "bad JSON"),
    "not_an_array": ("alpaca", "a.json", b'{"instruction": "x"}\n', "a.json:1", "expected a JSON array"),
    "missing_output": ("alpaca", "a.json", b'[\n {"instruction": "Say something."}\n]\n', "a.json:2",
                       "field 'output': missing"),
    "wrong_type": ("selfinstruct", "s.jsonl", jl({"instruction": "x", "instances": "nope"}), "s.jsonl:1",
                   "field 'instances'"),
    "bad_turns": ("messages", "m.jsonl", jl({"messages": [{"role": "user", "content": ["x"]},
                                                         {"role": "assistant", "content": "y"}]}), "m.jsonl:1",
                  "must hold strings"),
    "utf8": ("messages", "m.jsonl", b'{"messages": [\xff]}\n', "m.jsonl:1", "invalid UTF-8"),
    "utf8_array": ("alpaca", "a.json", b'[\n {"instruction": "caf\xe9"}\n]\n', "a.json:2", "invalid UTF-8"),
    "empty": ("alpaca", "a.json", b"  \n", "a.json", "file is empty"),
    "empty_array": ("alpaca", "a.json", b"[]", "a.json", "file is empty"),
    "second_array": ("alpaca", "a.json", b'[\n {"instruction": "Say hi.", "output": "Hi there, nice to meet you."}\n]\n'
                     b'[\n {"instruction": "Say bye.", "output": "Goodbye, see you soon."}\n]\n', "a.json:4",
                     "extra content after the top-level array (column 1)"),
    "trailing_garbage": ("alpaca", "a.json", b'[{"instruction": "Say hi.", "output": "Hi there, nice to meet you."}] x',
                         "a.json:1", "extra content after the top-level array (column 71)"),
    "deep_item": ("lima", "a.json", b'[\n {"instruction": "x", "output": "y"},\n ' + DEEP + b"\n]\n", "a.json:3",
                  "nested too deeply"),
    "lone_surrogate": ("selfinstruct", "s.jsonl", jl({"instruction": "Say \ud800", "instances": []}), "s.jsonl:1",
                       "lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(REVERSE_CASES))
def test_reverse_pairs_errors(load_stage, tmp_path, case):
    fmt, name, content, where, message = REVERSE_CASES[case]
    (tmp_path / name).write_bytes(content)
    res, out = reverse(load_stage, tmp_path, tmp_path / name, fmt)
    assert_clean_error(res, out, where, message)


def test_reverse_pairs_quarantine(load_stage, tmp_path):
    data = tmp_path / "m.jsonl"
    good = {"messages": [{"role": "user", "content": "Name a colour, please."},
                         {"role": "assistant", "content": "Blue is a colour, and so is green."}]}
    data.write_bytes(jl(good, b"{oops", {"messages": "no"}, good | {"id": 2}))
    res, out = reverse(load_stage, tmp_path, data, "messages", quarantine=True)
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "st.json").read_text())
    assert stats["malformed"] == 2 and stats["kept"] == 1 and stats["rejected"]["duplicate"] == 1
    lines = sorted(r.row["line"] for r in read_rows(out / "r.jsonl", RejectedRow) if r.reason == "malformed")
    assert lines == [2, 3]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op, pos = rng.choice("dir"), rng.randrange(len(buf))
        if op == "d":
            del buf[pos:pos + rng.randint(1, 8)]
        elif op == "i":
            buf[pos:pos] = bytes(rng.choice([b'"', b",", b"\n", b"\xff", b"{", b"\x00", b"\xef\xbb\xbf"]))
        else:
            buf[pos] = rng.randrange(256)
    return bytes(buf)


@pytest.mark.parametrize("source", ["sources/davidson_mini.csv", "sources/user_mini.jsonl",
                                    "instructions/alpaca_mini.json"])
def test_fuzz_never_traceback_never_partial(load_stage, tmp_path, source):
    """Random byte mutations of real fixtures: each run either succeeds or fails with one clean line."""
    original = (FIXTURES / "data" / source).read_bytes()
    rng, outcomes = random.Random(source), []
    for i in range(25):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        data = tmp / Path(source).name
        data.write_bytes(_mutate(original, rng))
        if source.startswith("instructions"):
            res, out = reverse(load_stage, tmp, data, quarantine=bool(i % 2))
        elif "davidson" in source:
            res, out = ingest(load_stage, tmp, data, quarantine=bool(i % 2), format="davidson", category=None,
                              text_field=None)
            assert "unknown key" not in res.output
        else:
            res, out = ingest(load_stage, tmp, data, quarantine=bool(i % 2), text_field="body", category=None,
                              category_field="tag", category_map={"toxic": "hate"})
        assert res.exit_code in (0, 2), (i, res.output, res.exception)
        assert "params.yaml" not in res.output  # the failure, if any, is the data's
        outcomes.append(res.exit_code)
        assert "Traceback" not in res.output
        if res.exit_code == 2:
            assert res.output.startswith("error: ") and res.output.strip().count("\n") == 0
            assert not out.exists() or not any(out.iterdir())
    assert 0 in outcomes  # some mutations are harmless or quarantined: the runs did real work


# --- Silent loss: ids that would collide are counted rejects, ids made from lines never repeat ---

def test_ingest_duplicate_ids_are_counted_rejects(load_stage, tmp_path):
    """Two rows with id_field 1, and an id-less row on line 3 next to a row whose own id is 3: the later row of each
    pair is rejected as duplicate_id, never kept under an id a later stage would overwrite."""
    data = tmp_path / "d.jsonl"
    data.write_bytes(jl({"id": 1, "text": f"{GOOD} one"}, {"id": "1", "text": f"{GOOD} two"}, {"text": f"{GOOD} three"},
                        {"id": "3", "text": f"{GOOD} four"}, {"id": 0, "text": f"{GOOD} five"}))
    res, out = ingest(load_stage, tmp_path, data, id_field="id")
    assert res.exit_code == 0, res.output
    kept = [json.loads(x) for x in (out / "s.jsonl").read_text().splitlines()]
    assert [(r["id"], r["provenance"]["line"]) for r in kept] == [("c:1", 1), ("c:3", 3), ("c:0", 5)]
    stats = json.loads((out / "st.json").read_text())
    assert stats["rejected"] == {"duplicate_id": 2} and stats["by_corpus"]["c"]["rejected"] == {"duplicate_id": 2}
    dup = [r for r in read_rows(out / "r.jsonl", RejectedRow) if r.reason == "duplicate_id"]
    assert [(r.id, r.row["line"], r.detail) for r in dup] == [("c:1", 2, "id already used on line 1"),
                                                            ("c:3", 4, "id already used on line 3")]


def test_ingest_id_field_of_the_wrong_type_is_malformed(load_stage, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(jl({"id": "a", "text": GOOD}, {"id": {"x": 1}, "text": f"{GOOD} 2"}))
    res, out = ingest(load_stage, tmp_path, data, id_field="id")
    assert_clean_error(res, out, "d.jsonl:2", "field 'id': expected a string or integer id, got dict")


def test_one_line_json_array_gets_distinct_ids(load_stage, tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"text": f"{GOOD} {i}"} for i in range(3)]))  # every record starts on line 1
    res, out = ingest(load_stage, tmp_path, data)
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["id"] for x in (out / "s.jsonl").read_text().splitlines()] == ["c:1", "c:1_2", "c:1_3"]


def test_reverse_pairs_id_less_selfinstruct_rows_and_duplicate_ids(load_stage, tmp_path):
    """Self-Instruct rows without an id take their line (they all became 'd:.0' before); a repeated id is a counted
    duplicate_id reject."""
    def task(instruction, *outputs, **extra):
        return {"instruction": instruction, "instances": [{"input": f"({k})" if k else "", "output": o}
                                                          for k, o in enumerate(outputs)], **extra}

    data = tmp_path / "s.jsonl"
    data.write_bytes(jl(task("Write a short poem.", "Roses are red and violets are blue."),
                        task("Name some colours.", "Red, green and blue are colours.", "Teal and navy are too."),
                        task("Name a fruit.", "An apple is a fruit, and so is a pear.", id="t"),
                        task("Name a vegetable.", "A carrot is a vegetable you can eat raw.", id="t")))
    res, out = reverse(load_stage, tmp_path, data, "selfinstruct")
    assert res.exit_code == 0, res.output
    ids = sorted(json.loads(x)["id"] for f in ("t.jsonl", "v.jsonl") for x in (out / f).read_text().splitlines())
    assert ids == ["d:1.0", "d:2.0", "d:2.1", "d:t.0"]
    stats = json.loads((out / "st.json").read_text())
    assert stats["rejected"] == {"duplicate_id": 1}
    [dup] = read_rows(out / "r.jsonl", RejectedRow)
    assert (dup.id, dup.reason, dup.detail) == ("d:t.0", "duplicate_id", "id already used on line 3")


# --- Evaluation user sets: read by ingest's readers, so the same bad input gives the same one-line error ---

# (file name or None for a directory, content, expected "file[:line]", message, extra UserSet keys)
EVAL_CASES = {
    "utf8_jsonl": ("u.jsonl", jl({"prompt": "hi", "label": "safe"}, b'{"prompt": "caf\xe9", "label": "safe"}'),
                   "u.jsonl:2", "invalid UTF-8", {}),
    "utf8_csv": ("u.csv", b"prompt,label\nhello,safe\ncaf\xe9,safe\n", "u.csv:3", "invalid UTF-8", {}),
    "huge_csv_field": ("u.csv", f"prompt,label\nhello,safe\n{TEN_MB},safe\n".encode(), "u.csv:3",
                       "CSV field longer than the limit", {}),
    "directory": (None, b"", "u.jsonl", "is a directory, not a file", {}),
    "lone_surrogate": ("u.jsonl", jl({"prompt": "hi", "label": "safe"}, {"prompt": "x\ud800", "label": "safe"}),
                       "u.jsonl:2", "lone surrogate", {}),
    "deep_nesting": ("u.jsonl", jl({"prompt": "hi", "label": "safe"}, DEEP), "u.jsonl:2", "nested too deeply", {}),
    "missing_field": ("u.jsonl", jl({"prompt": "hi", "label": "safe"}, {"prompt": "x"}), "u.jsonl:2",
                      "field 'label': missing", {}),
    "two_arrays": ("u.json", b'[{"prompt": "hi", "label": "safe"}]\n[{"prompt": "yo", "label": "safe"}]\n', "u.json:2",
                   "extra content after the top-level array", {}),
    "empty_file": ("u.jsonl", b"\n", "u.jsonl", "evaluation set 'mine' has no rows", {}),
    "header_only": ("u.csv", b"prompt,label\n", "u.csv", "evaluation set 'mine' has no rows", {}),
    "duplicate_id": ("u.csv", b"uid,prompt,label\n7,hello,safe\n8,how to x,harmful\n7,bye,safe\n", "u.csv:4",
                     "duplicate id '7' in uid (first on line 2)", {"id_field": "uid"}),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_evaluate_user_set_errors(load_stage, tmp_path, monkeypatch, case):
    name, content, where, message, extra = EVAL_CASES[case]
    path = tmp_path / (name or "u.jsonl")
    path.mkdir() if name is None else path.write_bytes(content)
    (tmp_path / "models" / "base").mkdir(parents=True)  # the sets are read before any model is loaded
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"models": ["base"], "sets": {"user_sets": [
        {"name": "mine", "path": str(path), **extra}]}}}))
    ev = FIXTURES / "eval"
    res = CliRunner().invoke(load_stage("evaluate").main, [
        "--models-dir", "models", "--advbench", str(ev / "advbench.csv"), "--safer-instruct-test",
        str(ev / "safer_instruct_test.csv"), "--xstest", str(ev / "xstest.csv"), "--train",
        str(ev / "train_preferences.jsonl"), "--donotanswer", str(ev / "donotanswer"), "--alpaca-val",
        str(ev / "alpaca_val.json"), "--capability-reference", str(ev / "capability_reference.jsonl"),
        "--metrics", "out/m.json", "--stats", "out/s.json", "--responses",
        "out/r.jsonl", "--plots", "out/plots", "--cache", "out/cache"])
    assert_clean_error(res, tmp_path / "out", where, message)
