"""Judge calibration: how often a refusal judge agrees with human labels, per class.

Input: human-labelled responses as CSV or jsonl. Two layouts are recognised:

- XSTest completion files: columns ``prompt``, ``completion``, ``final_label`` with values ``1_full_compliance``,
  ``2_full_refusal``, ``3_partial_refusal``;
- generic: ``prompt``, ``response``, ``label`` with values ``compliance``, ``refusal``, ``partial``.

A verdict the judge could not parse counts as a disagreement (and is reported on its own): a judge that fails to
answer is not given credit for the rows it skipped.

The instruction judge (task ``instruction``) is calibrated the same way on labelled prompts
(:func:`load_labelled_prompts`: XSTest's safe/unsafe prompt labels, AdvBench = unsafe, Alpaca validation = safe).
:func:`calibration_metrics` builds the document the ``calibrate`` stage writes (metrics/calibration.json).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from saferinstruct.io import RowError
from saferinstruct.judging.base import Judge, JudgeItem
from saferinstruct.judging.factory import JudgeSpec
from saferinstruct.params import Params
from saferinstruct.sources.readers import field_str, parse_rows

CLASSES = ("compliance", "refusal", "partial")
REFUSING = ("refusal", "partial")  # what the evaluation's refusal rate counts
XSTEST_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}
LAYOUTS = {"xstest": ("prompt", "completion", "final_label"), "generic": ("prompt", "response", "label")}
INSTRUCTION_CLASSES = ("unsafe", "safe")


@dataclass(frozen=True)
class LabelledResponse:
    id: str
    prompt: str
    response: str
    label: str


def load_labelled(path: Path | str) -> list[LabelledResponse]:
    """Rows of a human-labelled file in either layout; an unknown label names file and line."""
    path = Path(path)
    rows = list(parse_rows(path, dict, allow_empty=True))  # the one raw-file reader (sources.readers)
    if not rows:
        raise RowError(path, None, "file is empty (no rows)")
    first = rows[0][1]
    layout = next((name for name, cols in LAYOUTS.items() if isinstance(first, dict) and all(c in first for c in cols)),
                  None)
    if layout is None:
        raise RowError(path, rows[0][0], "expected columns prompt,completion,final_label (XSTest) "
                                         "or prompt,response,label")
    prompt_col, response_col, label_col = LAYOUTS[layout]
    out = []
    for i, (line, row) in enumerate(rows, start=1):
        if not isinstance(row, dict) or any(not isinstance(row.get(c), str) for c in LAYOUTS[layout]):
            raise RowError(path, line, f"fields {list(LAYOUTS[layout])} must all be strings")
        raw = row[label_col].strip()
        label = XSTEST_LABELS.get(raw, raw.lower())
        if label not in CLASSES:
            raise RowError(path, line, f"label '{raw}' is not one of {list(CLASSES)} or {list(XSTEST_LABELS)}")
        out.append(LabelledResponse(id=str(row.get("id") or i), prompt=row[prompt_col], response=row[response_col],
                                    label=label))
    return out


def _prf(tp: int, predicted: int, actual: int) -> dict:
    precision = tp / predicted if predicted else None
    recall = tp / actual if actual else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if predicted and actual
                                                                                         else None)
    return {"precision": _r(precision), "recall": _r(recall), "f1": _r(f1), "support": actual, "predicted": predicted}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def agreement_report(human: Sequence[str], predicted: Sequence[str], parse_ok: Sequence[bool],
                     classes: Sequence[str]) -> dict:
    """Agreement, Cohen's kappa, per-class precision/recall/F1 and the confusion matrix (rows: human) over
    ``classes``; an unparsed verdict is its own column ``unparsed`` and never agrees."""
    if not (len(human) == len(predicted) == len(parse_ok)) or not human:
        raise ValueError("calibration needs the same, non-zero number of human labels and verdicts")
    n = len(human)
    pred = [p if ok else "unparsed" for p, ok in zip(predicted, parse_ok)]
    agree = sum(h == p for h, p in zip(human, pred))
    pred_labels = sorted(set(pred) - set(classes))
    confusion = {h: {p: sum(a == h and b == p for a, b in zip(human, pred)) for p in [*classes, *pred_labels]}
                 for h in classes}
    per_class = {c: _prf(confusion[c][c], sum(p == c for p in pred), sum(h == c for h in human)) for c in classes}
    expected = sum(sum(h == c for h in human) * sum(p == c for p in pred) for c in classes) / (n * n)
    kappa = (agree / n - expected) / (1 - expected) if expected < 1 else None
    return {"n": n, "parse_failures": sum(not ok for ok in parse_ok), "agreement": _r(agree / n), "kappa": _r(kappa),
            "per_class": per_class, "confusion": confusion}


def calibration_report(human: Sequence[str], predicted: Sequence[str], parse_ok: Sequence[bool]) -> dict:
    """Agreement, Cohen's kappa, per-class precision/recall/F1, the confusion matrix, and the binary view
    (refusal or partial vs compliance) that the evaluation's refusal rate uses."""
    report = agreement_report(human, predicted, parse_ok, CLASSES)
    n = len(human)
    hb = [h in REFUSING for h in human]
    pb = [p in REFUSING and ok for p, ok in zip(predicted, parse_ok)]
    binary_tp = sum(a and b for a, b in zip(hb, pb))
    return {**report, "binary_refusal": {"agreement": _r(sum(a == b for a, b in zip(hb, pb)) / n),
                                         **_prf(binary_tp, sum(pb), sum(hb))}}


def calibrate(judge: Judge, rows: Sequence[LabelledResponse]) -> dict:
    """Judge every labelled response once and compare with the human labels."""
    if judge.task != "refusal":
        raise ValueError(f"judge {judge.name} does task '{judge.task}'; calibration needs a refusal judge")
    verdicts = judge.judge([JudgeItem(id=r.id, instruction=r.prompt, response=r.response) for r in rows])
    return calibration_report([r.label for r in rows], [v.label for v in verdicts], [v.parse_ok for v in verdicts])


class CalibrateParams(Params):
    """params.yaml ``calibrate``: how many labelled prompts per source the instruction judge is scored on."""

    prompts_per_source: int | None = Field(default=200, ge=1)  # null: all of them
    seed: int = 0


@dataclass(frozen=True)
class LabelledPrompt:
    id: str
    prompt: str
    label: str  # unsafe | safe
    source: str


def _prompts(path: Path | str, source: str, text_col: str, label_of, n: int | None, seed: int) -> list[LabelledPrompt]:
    rows = [(line, rec) for line, rec in parse_rows(path, dict, required=(text_col,))]
    out = []
    for line, rec in rows:
        label = label_of(rec)
        if label not in INSTRUCTION_CLASSES:
            raise RowError(path, line, f"label '{label}' is not one of {list(INSTRUCTION_CLASSES)}")
        out.append(LabelledPrompt(f"{source}:{line}", field_str(rec, text_col, allow_empty=False), label, source))
    if n is not None and n < len(out):
        kept = sorted(random.Random(f"{seed}:{source}").sample(range(len(out)), n))  # sampled, in file order
        out = [out[i] for i in kept]
    return out


def load_labelled_prompts(xstest: Path | str, advbench: Path | str, alpaca_val: Path | str, n_per_source: int | None,
                          seed: int) -> list[LabelledPrompt]:
    """Prompts with a safe/unsafe label: XSTest's own (column ``label``), AdvBench goals (unsafe), Alpaca validation
    instructions (safe); at most ``n_per_source`` of each, a seeded sample."""
    return (_prompts(xstest, "xstest", "prompt", lambda r: str(r.get("label", "")).strip().lower(), n_per_source, seed)
            + _prompts(advbench, "advbench", "goal", lambda r: "unsafe", n_per_source, seed)
            + _prompts(alpaca_val, "alpaca_val", "instruction", lambda r: "safe", n_per_source, seed))


def calibrate_instructions(judge: Judge, rows: Sequence[LabelledPrompt]) -> dict:
    """The instruction judge against the prompts' labels: overall, and agreement per source."""
    if judge.task != "instruction":
        raise ValueError(f"judge {judge.name} does task '{judge.task}'; this calibration needs an instruction judge")
    verdicts = judge.judge([JudgeItem(id=r.id, instruction=r.prompt) for r in rows])
    report = agreement_report([r.label for r in rows], [v.label for v in verdicts], [v.parse_ok for v in verdicts],
                              INSTRUCTION_CLASSES)
    sources = list(dict.fromkeys(r.source for r in rows))
    per_source = {s: {"n": sum(r.source == s for r in rows),
                      "agreement": _r(sum(r.source == s and v.parse_ok and v.label == r.label
                                          for r, v in zip(rows, verdicts)) / sum(r.source == s for r in rows))}
                  for s in sources}
    return {**report, "per_source": per_source}


# People labelled these completions refusal / compliance / partial: a harm judge (task harm) is not comparable with
# them, so then the offline refusal judge is the one calibrated (and named in the report).
OFFLINE_REFUSAL = JudgeSpec(backend="refusal_keywords", task="refusal")


def refusal_judge_spec(evaluation_judge: JudgeSpec) -> JudgeSpec:
    """The judge calibrated on refusal labels: the evaluation's own when it does task refusal, else the offline one."""
    return evaluation_judge if evaluation_judge.task == "refusal" else OFFLINE_REFUSAL


def calibration_metrics(refusal_judge: Judge, labelled_files: Mapping[str, Path | str],
                        instruction_judge: Judge | None = None,
                        prompts: Sequence[LabelledPrompt] = ()) -> dict:
    """metrics/calibration.json: the refusal judge per human-labelled file (keyed by the given names), and the
    instruction judge on labelled prompts when one is given."""
    files = {name: calibrate(refusal_judge, load_labelled(path)) for name, path in labelled_files.items()}
    out: dict = {"refusal_judge": {"judge": refusal_judge.name, "files": files}}
    if instruction_judge is not None:
        out["instruction_judge"] = {"judge": instruction_judge.name,
                                    **calibrate_instructions(instruction_judge, prompts)}
    return out


def render_report(report: dict, judge: str, source: str) -> str:
    lines = [f"judge {judge} vs human labels in {source}: n={report['n']}, agreement {report['agreement']:.3f}, "
             f"kappa {report['kappa'] if report['kappa'] is None else format(report['kappa'], '.3f')}, "
             f"parse failures {report['parse_failures']}", "",
             f"{'class':<12}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}{'predicted':>11}"]
    rows = [*report["per_class"].items(), ("refusing*", report["binary_refusal"])]
    for name, m in rows:
        cells = ["-" if m[k] is None else f"{m[k]:.3f}" for k in ("precision", "recall", "f1")]
        lines.append(f"{name:<12}{cells[0]:>10}{cells[1]:>8}{cells[2]:>8}{m['support']:>9}{m['predicted']:>11}")
    lines += ["", "* refusal or partial vs compliance (what the evaluation's refusal rate counts); "
                  f"binary agreement {report['binary_refusal']['agreement']:.3f}", "",
              "confusion (rows: human, columns: judge)"]
    cols = list(next(iter(report["confusion"].values())))
    lines.append(f"{'':<12}" + "".join(f"{c:>12}" for c in cols))
    for h, row in report["confusion"].items():
        lines.append(f"{h:<12}" + "".join(f"{row[c]:>12}" for c in cols))
    return "\n".join(lines)
