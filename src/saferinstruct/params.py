"""Typed params: each stage reads its own section of params.yaml into a strict pydantic model.

An unknown or misspelled key is an error that names it (and suggests the closest valid key). Library code never reads
params.yaml; stages load their section here and pass plain, typed values on.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from saferinstruct.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")


class Params(BaseModel):
    """Base of every params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


P = TypeVar("P", bound=Params)


class ParamsError(UserError, ValueError):
    """A params section (or a backend's options) is wrong: the message names the key and the fix."""


def _suggest(key: str, model: type[BaseModel]) -> str:
    close = difflib.get_close_matches(key, list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_section(data: object, section: str, model: type[P], source: str = "params.yaml") -> P:
    """Validate one section's mapping, naming the dotted key of the first problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: '{section}' must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        key = ".".join([section, *loc])
        if first["type"] == "extra_forbidden":
            sub = model
            for part in loc[:-1]:  # walk into nested models for the suggestion
                ann = sub.model_fields.get(part)
                sub = ann.annotation if ann and isinstance(ann.annotation, type) else sub
            raise ParamsError(f"{source}: unknown key '{key}'{_suggest(loc[-1], sub)}") from None
        raise ParamsError(f"{source}: '{key}': {first['msg']}") from None


def load_section(section: str, model: type[P], path: Path | str = DEFAULT_PARAMS) -> P:
    """Read ``section`` of a params file into ``model``; dotted sections ('train.sft') walk nested mappings."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    data: object = doc
    for part in section.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError(f"{path}: section '{section}' is missing")
        data = data[part]
    return parse_section(data, section, model, source=str(path))
