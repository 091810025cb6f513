"""dvc.yaml stays honest: each stage's deps cover every saferinstruct module its stage file imports (transitively),
never the whole package; every declared param exists in params.yaml and the stage file reads that section."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

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


def _imported(path: Path, dynamic: bool = True) -> set[str]:
    """Module names (saferinstruct.*) a file imports, including lazy imports inside functions and (``dynamic``)
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
        elif dynamic and isinstance(node, ast.Call) and \
                getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
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
                     f"(tests/pipeline/test_pipeline_deps.py: transitive_module_files)"


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
    """Structural: each declared key exists in params.yaml and its stage file loads the section. That each key is a
    field of the section's model and is read when the stage runs: tests/stages/test_params_reach_code.py."""
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


@pytest.mark.parametrize("name", sorted(STAGE_FILE_STAGES))
def test_src_deps_are_exactly_the_import_closure(name):
    """A src/ dep the stage never imports re-runs it for nothing (and hides which code really makes its outputs)."""
    block = STAGE_FILE_STAGES[name]
    stage_file = REPO / ("stages/" + STAGE_RE.search(str(block["cmd"])).group(1) + ".py")
    closure = {str(f.relative_to(REPO)) for f in transitive_module_files(stage_file)}
    listed = {str(d) for d in block.get("deps") or [] if str(d).startswith("src/")}
    extra = sorted(listed - closure)
    assert not extra, f"stage {name}: deps list modules its stage file never imports: {extra}"


def _paths(entries: list) -> list[str]:
    return [str(e) if isinstance(e, str) else str(next(iter(e))) for e in entries or []]


def _producers() -> dict[str, set[str]]:
    """Stage -> the stages whose outs (files or folders) it depends on."""
    outs = {name: _paths(b.get("outs")) + _paths(b.get("metrics")) for name, b in STAGES.items()}
    found: dict[str, set[str]] = {}
    for name, block in STAGES.items():
        deps = _paths(block.get("deps"))
        found[name] = {other for other, paths in outs.items() if other != name for d in deps for o in paths
                       if d == o or d.startswith(o.rstrip("/") + "/") or o.startswith(d.rstrip("/") + "/")}
    return found


def test_stages_are_in_data_flow_order():
    """dvc.yaml lists a stage after every stage it reads from (saferinstruct stats/diff print the funnel this way)."""
    order = list(STAGES)
    late = [(name, p) for name, prods in _producers().items() for p in prods if order.index(p) > order.index(name)]
    assert not late, f"dvc.yaml: these stages come before a stage they read from (stage, producer): {late}"


def _upstream(stage: str, producers: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [stage]
    while todo:
        for p in producers[todo.pop()] - seen:
            seen.add(p)
            todo.append(p)
    return seen


def test_data_building_never_depends_on_the_evaluation_judge():
    """Training data must not be built with the rule the model is graded by: no stage feeding train_sft/train_dpo
    imports judging/refusal.py (RefusalKeywordJudge, classify_refusal) or anything under eval/."""
    producers = _producers()
    upstream = _upstream("train_sft", producers) | _upstream("train_dpo", producers)
    assert {"self_evaluate", "onpolicy_pairs", "build_preferences", "judge_instructions"} <= upstream
    bad = {name: sorted(d for d in map(str, STAGES[name].get("deps") or [])
                        if d == "src/saferinstruct/judging/refusal.py" or d.startswith("src/saferinstruct/eval/"))
           for name in sorted(upstream)}
    assert not {k: v for k, v in bad.items() if v}, f"data-building stages depend on evaluation code: {bad}"


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((PKG_ROOT / "saferinstruct").rglob("*.py")):
        name = ".".join(path.relative_to(PKG_ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for imported in _imported(path, dynamic=False):  # a plugin loader importing its package is no cycle
            f = _module_file(imported)
            if f is not None and f != path:
                deps.add(".".join(f.relative_to(PKG_ROOT).with_suffix("").parts).removesuffix(".__init__"))
        graph[name] = deps
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_package_has_no_import_cycles():
    """Every import between saferinstruct modules (top-level, lazy or TYPE_CHECKING) points one way: a cycle means
    two modules each need the other, so neither can be read, tested or moved alone."""
    cycle = _find_cycle(_module_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
