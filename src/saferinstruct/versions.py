"""Dataset versions: load the preference dataset, its funnel and its verdicts at a git revision, an experiment or a
path, and compare two versions (``saferinstruct diff``) or describe one (``saferinstruct stats``).

Revisions and experiment names are read through DVC's file system, so DVC-tracked files come from the local cache (or
the remote) exactly as they were at that commit, and git-tracked stats come from git. Rows are matched by ``id``.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saferinstruct.errors import InputError
from saferinstruct.funnel_table import StageRow, numeric_leaves, render_funnel_table, summarise_stage
from saferinstruct.io import RowError, read_rows
from saferinstruct.records import PreferencePair, Verdict

SPLITS = {"train": "data/preferences/train.jsonl", "test": "data/preferences/test.jsonl"}
VERDICTS = "data/instruction_verdicts.jsonl"
STATS_DIR = "stats"
PAIR_FIELDS = ("prompt", "chosen", "rejected", "category", "kind", "parent_id", "provenance")


@dataclass
class Version:
    label: str
    splits: dict[str, dict[str, PreferencePair]] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)
    verdicts: dict[str, Verdict] | None = None
    missing: list[str] = field(default_factory=list)
    stage_order: list[str] = field(default_factory=list)


class _Source:
    """Reads repository-relative files from a directory or, through DVC, from a revision."""

    def __init__(self, spec: str, repo: str):
        self.label, self.fs, self.root = spec, None, None
        if Path(spec).is_dir():
            self.root = Path(spec)
            return
        from dvc.api import DVCFileSystem
        from dvc.scm import SCM, SCMError, resolve_rev

        try:
            sha = resolve_rev(SCM(repo), spec)
        except SCMError as err:
            raise InputError(spec, f"not a directory, file, git revision or experiment name ({err})") from None
        self.label = f"{spec} ({sha[:7]})"
        self.fs = DVCFileSystem(repo=repo, rev=sha)

    def exists(self, path: str) -> bool:
        return (self.root / path).exists() if self.root else self.fs.exists(path)

    def listdir(self, path: str) -> list[str]:
        if self.root:
            d = self.root / path
            return sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        if not self.fs.isdir(path):
            return []
        return sorted(Path(p).name for p in self.fs.ls(path, detail=False))

    def rows(self, path: str, model: type) -> list:
        if self.root:
            return read_rows(self.root / path, model)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            try:
                self.fs.get_file(path, str(local))
            except FileNotFoundError:
                raise InputError(f"{self.label}:{path}", "tracked by DVC but in neither the local cache nor "
                               "the remote: `dvc fetch` it at that revision (or `dvc pull` there) first") from None
            try:
                return read_rows(local, model)
            except RowError as err:  # name the file as the user knows it, not the temp copy
                message = str(err).split(": ", 1)[-1]
                raise RowError(f"{self.label}:{path}", err.line, message) from None

    def text(self, path: str) -> str:
        if self.root:
            return (self.root / path).read_text(encoding="utf-8")
        with self.fs.open(path, "r", encoding="utf-8") as fh:
            return fh.read()

    def json(self, path: str) -> Any:
        return json.loads(self.text(path))

    def stage_order(self) -> list[str]:
        """Stage names in data-flow order, so the funnel reads as the data moves (empty without a dvc.yaml)."""
        if not self.exists("dvc.yaml"):
            return []
        doc = yaml.safe_load(self.text("dvc.yaml")) or {}
        stages = doc.get("stages") if isinstance(doc, dict) else None
        return data_flow_order(stages) if isinstance(stages, dict) else []


def _paths(entries: Any) -> list[str]:
    """Paths of a dvc.yaml deps/outs list, whose items are strings or ``{path: options}``."""
    out: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            out += [str(k) for k in entry]
    return out


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def data_flow_order(stages: dict[str, Any]) -> list[str]:
    """Topological order of dvc.yaml stages (a stage after the stages whose outs it depends on); ties and cycles
    keep dvc.yaml's order."""
    names = list(stages)
    spec = {n: stages[n] if isinstance(stages[n], dict) else {} for n in names}
    outs = {n: _paths(spec[n].get("outs")) for n in names}
    needs = {n: {m for m in names if m != n and any(_overlaps(d, o) for d in _paths(spec[n].get("deps"))
                                                     for o in outs[m])} for n in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and needs[n] <= set(order)]
        order.append(ready[0] if ready else next(n for n in names if n not in order))
    return order


def load_version(spec: str, repo: str = ".") -> Version:
    """``spec``: a directory laid out like the repository, one preference jsonl file, a git revision or an
    experiment name (resolved in ``repo``)."""
    if Path(spec).is_file():
        return Version(label=spec, splits={"file": {r.id: r for r in read_rows(spec, PreferencePair)}},
                       missing=["stats", "verdicts (a single file was given)"])
    src = _Source(spec, repo)
    version = Version(label=src.label, stage_order=src.stage_order())
    for split, path in SPLITS.items():
        if src.exists(path):
            version.splits[split] = {r.id: r for r in src.rows(path, PreferencePair)}
        else:
            version.missing.append(path)
    for name in src.listdir(STATS_DIR):
        if name.endswith(".json"):
            data = src.json(f"{STATS_DIR}/{name}")
            version.stats[name[:-5]] = data if isinstance(data, dict) else {"value": data}
    if src.exists(VERDICTS):
        version.verdicts = {v.id: v for v in src.rows(VERDICTS, Verdict)}
    else:
        version.missing.append(VERDICTS)
    if not version.splits and not version.stats:
        raise InputError(spec, f"no preference files ({', '.join(SPLITS.values())}) and no {STATS_DIR}/*.json")
    return version


def _summary(row: PreferencePair) -> dict:
    return {"id": row.id, "kind": row.kind, "category": row.category, "prompt": row.prompt}


def _categories(rows: dict[str, PreferencePair]) -> Counter:
    return Counter(f"{r.kind}/{r.category}" for r in rows.values())


def diff_split(a: dict[str, PreferencePair], b: dict[str, PreferencePair], examples: int) -> dict:
    added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
    changed, fields = [], Counter()
    for key in sorted(set(a) & set(b)):
        diffs = [f for f in PAIR_FIELDS if getattr(a[key], f) != getattr(b[key], f)]
        if diffs:
            fields.update(diffs)
            changed.append((key, diffs))
    ca, cb = _categories(a), _categories(b)
    return {"a": len(a), "b": len(b), "added": len(added), "removed": len(removed), "changed": len(changed),
            "unchanged": len(set(a) & set(b)) - len(changed), "changed_fields": dict(sorted(fields.items())),
            "categories": {c: {"a": ca[c], "b": cb[c], "delta": cb[c] - ca[c]} for c in sorted(ca | cb)},
            "examples": {"added": [_summary(b[k]) for k in added[:examples]],
                         "removed": [_summary(a[k]) for k in removed[:examples]],
                         "changed": [{"id": k, "fields": f, "a": {x: getattr(a[k], x) for x in f},
                                      "b": {x: getattr(b[k], x) for x in f}} for k, f in changed[:examples]]}}


def _in_order(stages: set[str], order: list[str]) -> list[str]:
    """Pipeline order first, then any stage dvc.yaml does not list, alphabetically."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(stages, key=lambda s: (rank.get(s, len(rank)), s))


def diff_funnel(a: dict[str, dict], b: dict[str, dict], order: list[str] | None = None) -> dict:
    out = {}
    for stage in _in_order(set(a) | set(b), order or []):
        fa, fb = numeric_leaves(a.get(stage, {})), numeric_leaves(b.get(stage, {}))
        out[stage] = {k: {"a": fa.get(k), "b": fb.get(k),
                          "delta": (fb[k] - fa[k]) if k in fa and k in fb else None} for k in sorted(set(fa) | set(fb))}
    return out


def diff_verdicts(a: dict[str, Verdict] | None, b: dict[str, Verdict] | None, examples: int) -> dict | None:
    if a is None or b is None:
        return None
    common = sorted(set(a) & set(b))
    flips = [(k, a[k].label, b[k].label) for k in common if a[k].label != b[k].label]
    return {"a": len(a), "b": len(b), "added": len(set(b) - set(a)), "removed": len(set(a) - set(b)),
            "flipped": len(flips), "flips": dict(sorted(Counter(f"{x} -> {y}" for _, x, y in flips).items())),
            "examples": [{"id": k, "parent_id": a[k].parent_id, "a": x, "b": y} for k, x, y in flips[:examples]]}


def diff_versions(a: Version, b: Version, examples: int = 3) -> dict:
    """Everything that differs between two versions, as one JSON-ready document."""
    splits = {s: diff_split(a.splits.get(s, {}), b.splits.get(s, {}), examples)
              for s in list(dict.fromkeys([*a.splits, *b.splits]))}
    return {"a": a.label, "b": b.label, "splits": splits, "funnel": diff_funnel(a.stats, b.stats, b.stage_order or a.stage_order),
            "verdicts": diff_verdicts(a.verdicts, b.verdicts, examples),
            "missing": {"a": a.missing, "b": b.missing}}


def version_stats(v: Version) -> dict:
    verdict_labels = Counter(x.label for x in v.verdicts.values()) if v.verdicts is not None else None
    return {"version": v.label,
            "splits": {s: {"rows": len(rows), "categories": dict(sorted(_categories(rows).items()))}
                       for s, rows in v.splits.items()},
            "funnel": {stage: numeric_leaves(v.stats[stage]) for stage in _in_order(set(v.stats), v.stage_order)},
            "funnel_table": [asdict(summarise_stage(stage, v.stats[stage]))
                             for stage in _in_order(set(v.stats), v.stage_order)],
            "verdicts": dict(sorted(verdict_labels.items())) if verdict_labels is not None else None,
            "missing": v.missing}


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(x: float | None) -> str:
    return "-" if x is None else (f"{x:,}" if isinstance(x, int) else f"{x:,.4g}")


def render_diff(d: dict, show_timing: bool = False) -> str:
    """Human-readable diff; texts are cut to one short line (the datasets hold harmful text)."""
    out = [f"--- {d['a']}", f"+++ {d['b']}"]
    for split, s in d["splits"].items():
        out.append(f"\n[{split}] rows {s['a']} -> {s['b']}: +{s['added']} added, -{s['removed']} removed, "
                   f"~{s['changed']} changed, {s['unchanged']} unchanged")
        if s["changed_fields"]:
            out.append("  changed fields: " + ", ".join(f"{k} x{v}" for k, v in s["changed_fields"].items()))
        for cat, c in s["categories"].items():
            if c["delta"]:
                out.append(f"  {cat:<24} {c['a']:>6} -> {c['b']:<6} ({c['delta']:+d})")
        for what, sign in (("added", "+"), ("removed", "-")):
            out += [f"  {sign} {e['id']} [{e['kind']}/{e['category']}] {_short(e['prompt'])}"
                    for e in s["examples"][what]]
        out += [f"  ~ {e['id']}: {', '.join(e['fields'])}" for e in s["examples"]["changed"]]
    out.append("\n[funnel] (stats/*.json; numbers that changed)")
    unchanged = 0
    for stage, keys in d["funnel"].items():
        moved = {k: v for k, v in keys.items() if v["a"] != v["b"] and (show_timing or "seconds" not in k)}
        if not moved:
            unchanged += 1
        for k, v in moved.items():
            delta = "" if v["delta"] is None else f" ({v['delta']:+,.4g})"
            out.append(f"  {stage}.{k}: {_num(v['a'])} -> {_num(v['b'])}{delta}")
    out.append(f"  {unchanged} stage(s) unchanged")
    v = d["verdicts"]
    if v is None:
        out.append("\n[verdicts] not available in both versions")
    else:
        out.append(f"\n[verdicts] {v['a']} -> {v['b']}: +{v['added']} -{v['removed']}, {v['flipped']} flipped")
        out += [f"  {k}: {n}" for k, n in v["flips"].items()]
        out += [f"  ~ {e['id']}: {e['a']} -> {e['b']}" for e in v["examples"]]
    both = [m for m in d["missing"]["a"] if m in d["missing"]["b"]]
    if both:
        out.append(f"\nin neither version: {', '.join(both)}")
    for side in ("a", "b"):
        only = [m for m in d["missing"][side] if m not in both]
        if only:
            out.append(f"\nnot in {d[side]}: {', '.join(only)}")
    return "\n".join(out)


def _wrapped(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False) or [""]


def render_stats(s: dict, width: int = 100) -> str:
    """One version for a terminal ``width`` columns wide: rows per split and category, the funnel as a table (one
    row per stage in data-flow order; every number is in ``--json``), verdict labels."""
    out = _wrapped(f"version {s['version']}", width)
    for split, info in s["splits"].items():
        out.append(f"\n[{split}] {info['rows']} rows")
        out += [f"  {_short(cat, 40):<24} {n:>6}" for cat, n in info["categories"].items()]
    out.append("\n[funnel] stats/*.json in data-flow order (cost in USD; full counts: --json)")
    out.append(render_funnel_table([StageRow(**row) for row in s["funnel_table"]], width))
    if s["verdicts"] is not None:
        out += ["", *_wrapped("[verdicts] " + ", ".join(f"{k}={n}" for k, n in s["verdicts"].items()), width)]
    if s["missing"]:
        out += ["", *_wrapped(f"missing: {', '.join(s['missing'])}", width)]
    return "\n".join(out)
