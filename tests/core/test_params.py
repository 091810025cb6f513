"""Typed params: unknown or misspelled keys are errors that name the key; wrong types name the dotted key."""

from __future__ import annotations

import pytest
from pydantic import Field

from saferinstruct.params import Params, ParamsError, load_section


class Inner(Params):
    cap: int = Field(default=5, ge=0)


class Section(Params):
    name: str = "x"
    threshold: float = 0.5
    inner: Inner = Field(default_factory=Inner)


def _write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_defaults_and_values(tmp_path):
    p = load_section("stage", Section, _write(tmp_path, "stage:\n  threshold: 0.9\n  inner: {cap: 2}\n"))
    assert (p.name, p.threshold, p.inner.cap) == ("x", 0.9, 2)


def test_empty_section_gives_defaults(tmp_path):
    assert load_section("stage", Section, _write(tmp_path, "stage:\n")).threshold == 0.5


def test_misspelled_key_named_with_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'stage.treshold' \(did you mean 'threshold'\?\)"):
        load_section("stage", Section, _write(tmp_path, "stage:\n  treshold: 0.9\n"))


def test_nested_unknown_key(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'stage.inner.cpa' \(did you mean 'cap'\?\)"):
        load_section("stage", Section, _write(tmp_path, "stage:\n  inner: {cpa: 1}\n"))


def test_wrong_type_names_dotted_key(tmp_path):
    with pytest.raises(ParamsError, match=r"'stage.inner.cap'"):
        load_section("stage", Section, _write(tmp_path, "stage:\n  inner: {cap: -1}\n"))


def test_missing_section_and_file(tmp_path):
    with pytest.raises(ParamsError, match="section 'other' is missing"):
        load_section("other", Section, _write(tmp_path, "stage: {}\n"))
    with pytest.raises(ParamsError, match="params file not found"):
        load_section("stage", Section, tmp_path / "none.yaml")


def test_dotted_section(tmp_path):
    p = load_section("train.sft", Section, _write(tmp_path, "train:\n  sft:\n    name: y\n"))
    assert p.name == "y"


def test_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section("stage", Section, _write(tmp_path, "stage: [unclosed\n"))


def test_section_not_mapping(tmp_path):
    with pytest.raises(ParamsError, match="'stage' must be a mapping"):
        load_section("stage", Section, _write(tmp_path, "stage: 3\n"))
