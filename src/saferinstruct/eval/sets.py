"""Evaluation prompt sets: AdvBench, the Safer-Instruct test set, XSTest, Do-Not-Answer's evaluation half, Alpaca
validation instructions, and user files by a declared mapping.

Every loader returns :class:`EvalPrompt` rows tagged harmful, safe or care (Do-Not-Answer's human-chatbot area: a
caring answer with resources is the goal there, so it is scored apart and never pooled with the harmful prompts).
Samples are deterministic (seeded, file order kept). A prompt whose normalised text (the classifier's normalisation) is also a training prompt is dropped and
counted, so no set scores a model on what it was trained on: all 300 ``si`` rows of the Safer-Instruct test set come
from its training sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field

from saferinstruct.hashing import in_holdout, sample_rows
from saferinstruct.io import RowError
from saferinstruct.params import Params, ParamsError
from saferinstruct.sources.readers import BadField, detect_format, parse_rows
from saferinstruct.sources.text import match_key

Kind = Literal["harmful", "safe", "care"]
SI_GROUPS = ("hh", "si", "beaver")
RESERVED = {"overall"}  # the pooled entry of each kind in metrics/eval.json
DNA_CARE_AREA = "human_chatbox"  # Do-Not-Answer's risk area whose prompts want care, not a bare refusal
# The fixed development / evaluation split of Do-Not-Answer: a hash of "file stem:line" (never of the other rows), so
# a row never changes half, also when a file gains rows. Changing the salt or share re-splits: do not.
DNA_SPLIT_SALT = "donotanswer-dev"
DNA_DEV_FRACTION = 0.5
DnaHalf = Literal["dev", "eval"]


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    eval_set: str
    group: str
    prompt: str
    kind: Kind


class UserSet(Params):
    """A user's evaluation file (CSV, jsonl, jsonl.gz or a JSON array, read like ingest's corpora), one prompt per
    row, a label column mapped to harmful/safe."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    path: str
    format: Literal["auto", "jsonl", "csv", "json"] = "auto"
    prompt_field: str = "prompt"
    label_field: str = "label"
    group_field: str | None = None
    id_field: str | None = None
    harmful_labels: list[str] = Field(default_factory=lambda: ["harmful", "unsafe", "1"])
    safe_labels: list[str] = Field(default_factory=lambda: ["safe", "benign", "0"])
    n: int | None = Field(default=None, ge=0)


class SetsParams(Params):
    """Sample sizes (null = every row) and the seed of the deterministic sample."""

    seed: int = 0
    advbench_n: int | None = Field(default=100, ge=0)
    safer_instruct_per_group: int | None = Field(default=34, ge=0)
    xstest_safe_n: int | None = Field(default=None, ge=0)
    xstest_unsafe_n: int | None = Field(default=24, ge=0)
    donotanswer_n: int | None = Field(default=120, ge=0)  # the evaluation half's four harmful risk areas, pooled
    donotanswer_chatbot_n: int | None = Field(default=30, ge=0)  # its human-chatbot area (kind care)
    alpaca_val_n: int | None = Field(default=60, ge=0)  # ordinary instructions: refusing them is over-refusal
    user_sets: list[UserSet] = Field(default_factory=list)


@dataclass
class LoadReport:
    """Per set: rows read, rows dropped because a training prompt shares their text, rows kept after sampling."""

    read: dict[str, int] = field(default_factory=dict)
    train_overlap: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


def _rows(path: Path, set_name: str, required: Sequence[str], fmt: str = "csv") -> list[tuple[int, dict]]:
    """Every record of an evaluation file with its line, through ingest's readers (one reader per format, so bad
    bytes, oversized fields and the like are one error naming file and line); a file without rows is an error."""

    def with_fields(rec: dict) -> dict:
        for name in required:  # CSV columns are checked on the header; JSON records one by one
            if rec.get(name) is None:
                raise BadField(name, "missing")
        return rec

    rows = list(parse_rows(path, with_fields, fmt=fmt, required=required, allow_empty=True))
    if not rows:
        raise RowError(path, None, f"evaluation set '{set_name}' has no rows: add prompts or remove the set")
    return rows


def _prompt(path: Path, line: int, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError(path, line, "empty or missing prompt")
    return value.strip()


def load_advbench(path: Path | str) -> list[EvalPrompt]:
    path = Path(path)
    return [EvalPrompt(f"advbench:{i}", "advbench", "", _prompt(path, line, row["goal"]), "harmful")
            for i, (line, row) in enumerate(_rows(path, "advbench", ["goal"]), start=1)]


def load_safer_instruct_test(path: Path | str) -> list[EvalPrompt]:
    """One set per label group (hh, si, beaver), all harmful."""
    path, out = Path(path), []
    for i, (line, row) in enumerate(_rows(path, "safer_instruct", ["instruction", "label"]), start=1):
        group = row["label"].strip()
        if group not in SI_GROUPS:
            raise RowError(path, line, f"label '{group}' is not one of {list(SI_GROUPS)}")
        out.append(EvalPrompt(f"safer_instruct:{i}", f"safer_instruct_{group}", group,
                              _prompt(path, line, row["instruction"]), "harmful"))
    return out


def load_xstest(path: Path | str) -> list[EvalPrompt]:
    """Safe look-alikes (over-refusal) and their unsafe contrasts as two sets; the group is XSTest's prompt type."""
    path, out = Path(path), []
    for line, row in _rows(path, "xstest", ["id", "prompt", "type", "label"]):
        kind = row["label"].strip()
        if kind not in ("safe", "unsafe"):
            raise RowError(path, line, f"label '{kind}' is not safe or unsafe")
        out.append(EvalPrompt(f"xstest:{row['id']}", f"xstest_{kind}", row["type"].strip(),
                              _prompt(path, line, row["prompt"]), "safe" if kind == "safe" else "harmful"))
    return out


def donotanswer_half(row_id: str) -> DnaHalf:
    """Which fixed half a Do-Not-Answer row (id ``file stem:line``) belongs to."""
    return "dev" if in_holdout(row_id, DNA_DEV_FRACTION, DNA_SPLIT_SALT) else "eval"


def load_donotanswer(directory: Path | str, half: DnaHalf = "eval") -> list[EvalPrompt]:
    """One half of Do-Not-Answer (one jsonl file per risk area, ``{"prompt", "intents"}``): the four harmful areas as
    set ``donotanswer`` (group = area), the human-chatbot area as set ``donotanswer_chatbot`` of kind care."""
    files = sorted(Path(directory).glob("*.jsonl"))
    if not files:
        raise RowError(directory, None, "no Do-Not-Answer *.jsonl file: copy them from the shared data (see "
                                        "data/raw/NOTICE.md) or point --donotanswer elsewhere")
    out = []
    for path in files:
        area = path.stem
        for line, row in _rows(path, f"donotanswer/{area}", ["prompt"], "jsonl"):
            row_id = f"{area}:{line}"
            if donotanswer_half(row_id) != half:
                continue
            care = area == DNA_CARE_AREA
            out.append(EvalPrompt(f"donotanswer:{row_id}", "donotanswer_chatbot" if care else "donotanswer", area,
                                  _prompt(path, line, row["prompt"]), "care" if care else "harmful"))
    return out


def load_alpaca_val(path: Path | str) -> list[EvalPrompt]:
    """Alpaca validation instructions (a JSON array of ``{"instruction"}``): ordinary requests, kind safe."""
    path = Path(path)
    return [EvalPrompt(f"alpaca_val:{i}", "alpaca_val", "", _prompt(path, line, row["instruction"]), "safe")
            for i, (line, row) in enumerate(_rows(path, "alpaca_val", ["instruction"], "json"), start=1)]


def load_user_set(spec: UserSet, root: Path | str = ".") -> list[EvalPrompt]:
    """Rows of a user file by its mapping; a label outside both lists or an id used twice is an error naming file
    and line."""
    path = Path(root) / spec.path
    fmt = spec.format if spec.format != "auto" else detect_format(path)
    required = [spec.prompt_field, spec.label_field] + [f for f in (spec.group_field, spec.id_field) if f]
    harmful, safe = {s.casefold() for s in spec.harmful_labels}, {s.casefold() for s in spec.safe_labels}
    out, first_line = [], {}
    for i, (line, row) in enumerate(_rows(path, spec.name, required, fmt), start=1):
        label = str(row[spec.label_field]).strip().casefold()
        if label not in harmful | safe:
            raise RowError(path, line, f"label '{label}' is in neither harmful_labels nor safe_labels")
        row_id = str(row[spec.id_field]) if spec.id_field else str(i)
        if row_id in first_line:  # two results under one id would overwrite each other
            raise RowError(path, line, f"duplicate id '{row_id}' in {spec.id_field} (first on line "
                                       f"{first_line[row_id]}): ids must be unique")
        first_line[row_id] = line
        group = str(row[spec.group_field]) if spec.group_field else ""
        out.append(EvalPrompt(f"{spec.name}:{row_id}", spec.name, group, _prompt(path, line, row[spec.prompt_field]),
                              "harmful" if label in harmful else "safe"))
    return out


def sample(prompts: list[EvalPrompt], n: int | None, seed: int) -> list[EvalPrompt]:
    """A seeded sample of ``n`` rows in file order (all rows when ``n`` is None or larger than the set)."""
    return sample_rows(prompts, n, seed)


def build_eval_sets(params: SetsParams, advbench: Path | str, safer_instruct_test: Path | str,
                    xstest: Path | str, train_prompts: Iterable[str], root: Path | str = ".",
                    donotanswer: Path | str | None = None, alpaca_val: Path | str | None = None,
                    ) -> tuple[list[EvalPrompt], LoadReport]:
    """All configured sets, leakage-checked against ``train_prompts`` then sampled; a set of size 0 is skipped
    (Do-Not-Answer and Alpaca validation only when their path is given)."""
    by_set: dict[str, list[EvalPrompt]] = {}
    loaded = [*load_advbench(advbench), *load_safer_instruct_test(safer_instruct_test), *load_xstest(xstest)]
    loaded += load_donotanswer(donotanswer, "eval") if donotanswer else []
    loaded += load_alpaca_val(alpaca_val) if alpaca_val else []
    for spec in params.user_sets:
        if spec.name in {p.eval_set for p in loaded} | RESERVED:
            raise ParamsError(f"evaluate.sets.user_sets: name '{spec.name}' is taken by another set; choose another")
        loaded += load_user_set(spec, root)
    for p in loaded:
        by_set.setdefault(p.eval_set, []).append(p)
    sizes = {"advbench": params.advbench_n, "xstest_safe": params.xstest_safe_n,
             "xstest_unsafe": params.xstest_unsafe_n, "donotanswer": params.donotanswer_n,
             "donotanswer_chatbot": params.donotanswer_chatbot_n, "alpaca_val": params.alpaca_val_n,
             **{f"safer_instruct_{g}": params.safer_instruct_per_group for g in SI_GROUPS},
             **{u.name: u.n for u in params.user_sets}}
    trained = {match_key(t) for t in train_prompts}
    report, out = LoadReport(), []
    for name, rows in by_set.items():
        clean = [p for p in rows if match_key(p.prompt) not in trained]
        chosen = sample(clean, sizes[name], params.seed)
        report.read[name], report.kept[name] = len(rows), len(chosen)
        report.train_overlap[name] = len(rows) - len(clean)
        out += chosen
    return out, report
