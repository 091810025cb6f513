"""dvc.yaml stays honest: each stage's deps cover every saferinstruct module its stage file imports (transitively),
never the whole package; every declared param exists in params.yaml and the stage file reads that section."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PKG_ROOT = REPO / "src"
STAGE_RE = re.compile(r"\bstages/(\w+)\.py\b")
FORBIDDEN_DEPS = {"src", "src/saferinstruct"}


def _stages() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text()) or {}
    out = {}
    for name, block in (doc.get("stages") or {}).items():
        out[name] = block.get("do", block)  # foreach/matrix stages keep their body under `do`
    return out


def _module_file(name: str) -> Path | None:
    base = PKG_ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_of(path: Path) -> str:
    """Package a module lives in (for an __init__.py, the package itself): the base of its relative imports."""
    return ".".join(path.relative_to(PKG_ROOT).parts[:-1])


def _imported(path: Path) -> set[str]:
    """Module names (saferinstruct.*) a file imports, including lazy imports inside functions and
    ``importlib.import_module(f"saferinstruct.pkg.{x}")`` (which counts as the whole subpackage)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    pkg = _package_of(path) if path.is_relative_to(PKG_ROOT) else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value).rstrip(".")
                names.update(_all_modules(prefix))
    return {n for n in names if n == "saferinstruct" or n.startswith("saferinstruct.")}


def _all_modules(package: str) -> set[str]:
    root = PKG_ROOT.joinpath(*package.split("."))
    if not root.is_dir():
        return set()
    return {".".join(p.relative_to(PKG_ROOT).with_suffix("").parts) for p in root.rglob("*.py")}


def transitive_module_files(stage_file: Path) -> set[Path]:
    files: set[Path] = set()
    todo = [stage_file]
    while todo:
        current = todo.pop()
        for name in _imported(current):
            parts = name.split(".")
            # importing a.b.c runs a/__init__ and a/b/__init__ too (the top-level __init__ is empty by rule)
            for i in range(2, len(parts) + 1):
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in files:
                    files.add(f)
                    todo.append(f)
    return files


def _covered(file: Path, deps: list[str]) -> bool:
    for dep in deps:
        dep_path = (REPO / dep).resolve()
        if file == dep_path or dep_path in file.parents:
            return True
    return False


def _param_keys(block: dict) -> list[tuple[str, str]]:
    out = []
    for entry in block.get("params") or []:
        if isinstance(entry, str):
            out.append(("params.yaml", entry))
        else:
            for fname, keys in entry.items():
                out.extend((fname, k) for k in keys or [])
    return out


STAGES = _stages()
STAGE_FILE_STAGES = {n: b for n, b in STAGES.items() if STAGE_RE.search(str(b.get("cmd", "")))}


def test_top_level_init_is_empty():
    assert (PKG_ROOT / "saferinstruct" / "__init__.py").read_text().strip() == ""


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_whole_package_deps(name):
    deps = [str(d).rstrip("/") for d in STAGES[name].get("deps") or []]
    bad = sorted(set(deps) & FORBIDDEN_DEPS)
    assert not bad, f"stage {name}: dep {bad} is the whole package; list the modules it imports"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_source_directory_deps(name):
    """A directory dep under src/ re-runs the stage for modules it never imports (and, before .dvcignore covered
    bytecode, for every __pycache__ write): list module files instead."""
    deps = [str(d).rstrip("/") for d in STAGES[name].get("deps") or []]
    dirs = sorted(d for d in deps if d.startswith("src/") and (REPO / d).is_dir())
    assert not dirs, f"stage {name}: deps {dirs} are directories; list the module files the stage imports " \
                     f"(tests/test_pipeline_deps.py: transitive_module_files)"


def test_dvcignore_ignores_bytecode():
    """Bytecode written by an import must not change any dep's hash: .dvcignore covers it everywhere."""
    patterns = {line.strip() for line in (REPO / ".dvcignore").read_text().splitlines()}
    assert {"__pycache__/", "*.pyc"} <= patterns, ".dvcignore: add '__pycache__/' and '*.pyc'"


@pytest.mark.parametrize("name", sorted(STAGE_FILE_STAGES))
def test_deps_cover_imports(name):
    block = STAGE_FILE_STAGES[name]
    deps = [str(d) for d in block.get("deps") or []]
    stage_rel = "stages/" + STAGE_RE.search(str(block["cmd"])).group(1) + ".py"
    stage_file = REPO / stage_rel
    assert stage_file.is_file(), f"stage {name}: {stage_rel} does not exist"
    assert stage_rel in deps, f"stage {name}: its own file {stage_rel} is not a dep"
    missing = sorted(str(f.relative_to(REPO)) for f in transitive_module_files(stage_file) if not _covered(f, deps))
    assert not missing, f"stage {name}: imports modules its deps do not list: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_exist_and_reach_the_stage(name):
    block = STAGES[name]
    docs: dict[str, dict] = {}
    stage_match = STAGE_RE.search(str(block.get("cmd", "")))
    source = (REPO / f"stages/{stage_match.group(1)}.py").read_text() if stage_match else ""
    literals = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)} if source else set()
    for fname, key in _param_keys(block):
        doc = docs.setdefault(fname, yaml.safe_load((REPO / fname).read_text()) or {})
        node: object = doc
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"stage {name}: param '{key}' is not in {fname}"
            node = node[part]
        if stage_match:
            parts = key.split(".")
            sections = {".".join(parts[:i]) for i in range(1, len(parts))}
            assert sections & literals, f"stage {name}: declares '{key}' but stages/{stage_match.group(1)}.py " \
                                        f"never loads its section"


def test_checker_catches_a_missing_dep(tmp_path):
    """The checker itself works: a stage importing saferinstruct.io needs io.py and records.py covered."""
    stage = tmp_path / "s.py"
    stage.write_text("from saferinstruct.io import read_rows\n")
    files = {str(f.relative_to(REPO)) for f in transitive_module_files(stage)}
    assert {"src/saferinstruct/io.py", "src/saferinstruct/records.py"} <= files
    assert not _covered(REPO / "src/saferinstruct/records.py", ["src/saferinstruct/io.py"])
    assert _covered(REPO / "src/saferinstruct/llm/base.py", ["src/saferinstruct/llm"])
