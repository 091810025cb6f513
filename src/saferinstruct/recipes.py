"""Recipes: named experiments (configs/recipes.yaml), each one `dvc exp run --name <recipe> -S key=value ...` from the
committed params.yaml.

Every run sets every key any recipe names (its own value, else the committed one): `dvc exp run` in the workspace
leaves the last run's params behind, and an override must never leak into the next recipe. Upstream stages whose deps
did not change are skipped (dvc.lock) and the persisted call caches carry over. An experiment already run from this
commit with the same values is reused, not re-run (`--rerun` forces it): DVC keeps no run-cache for stages with
persisted outputs, so a re-run would train again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from saferinstruct.errors import UserError


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)  # dotted params.yaml keys -> values
    model: str = "dpo"  # the evaluated model that stands for the recipe
    source: str | None = Field(default=None, alias="from")  # read this recipe's experiment instead of running one


class RecipeBook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipes: dict[str, Recipe]
    comparisons: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_resolve(self) -> "RecipeBook":
        for name, r in self.recipes.items():
            if r.source is not None and (r.source not in self.recipes or self.recipes[r.source].source or r.set):
                raise ValueError(f"recipe {name}: 'from: {r.source}' must name a recipe that runs, and takes no 'set'")
        for a, b in self.comparisons:
            if a not in self.recipes or b not in self.recipes:
                raise ValueError(f"comparison [{a}, {b}]: both must be recipes ({', '.join(self.recipes)})")
        return self

    def runs(self) -> list[str]:
        """Recipes that are their own experiment, in file order."""
        return [n for n, r in self.recipes.items() if r.source is None]

    def experiment(self, name: str) -> str:
        return self.recipes[name].source or name


def load_recipes(path: Path | str) -> RecipeBook:
    try:
        return RecipeBook.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {exc}") from None


def lookup(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"params.yaml has no '{dotted}' (named in configs/recipes.yaml): fix the recipe key")
        node = node[part]
    return node


def _literal(value: Any) -> str:
    """A value as `-S` parses it (YAML): strings as is unless YAML would read them as something else."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def overrides(book: RecipeBook, name: str, committed: dict) -> list[str]:
    """``key=value`` for every key any recipe sets: this recipe's value, else the committed one."""
    keys = dict.fromkeys(k for r in book.recipes.values() for k in r.set)
    own = book.recipes[name].set
    return [f"{k}={_literal(own[k] if k in own else lookup(committed, k))}" for k in keys]


def exp_run_args(name: str, sets: list[str]) -> list[str]:
    # never --force: for `dvc exp run` it also means `repro --force`, re-running every upstream stage (~40 min)
    return ["dvc", "exp", "run", "--name", name, *(a for s in sets for a in ("-S", s))]


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=check)


def _exp_refname(repo: Path, name: str) -> str:
    head = _git(repo, "rev-parse", "HEAD").stdout.strip()
    return f"refs/exps/{head[:2]}/{head[2:]}/{name}"


def exp_ref(repo: Path, name: str) -> str | None:
    """The commit of experiment ``name`` run from HEAD (DVC's ref refs/exps/<baseline[:2]>/<baseline[2:]>/<name>)."""
    found = _git(repo, "rev-parse", "--verify", "-q", _exp_refname(repo, name), check=False)
    return found.stdout.strip() or None


def drop_experiment(repo: Path, name: str) -> None:
    """Forget experiment ``name`` of HEAD so a new run may take the name (DVC refuses an existing one)."""
    _git(repo, "update-ref", "-d", _exp_refname(repo, name), check=False)


def file_at(repo: Path, rev: str, path: str) -> str:
    """``path`` as committed at ``rev``: a git revision, or the name of a DVC experiment of HEAD."""
    shown = _git(repo, "show", f"{exp_ref(repo, rev) or rev}:{path}", check=False)
    if shown.returncode != 0:
        raise UserError(f"{path} at {rev}: {shown.stderr.strip() or 'not found'} (a revision or an experiment of HEAD)")
    return shown.stdout


def committed_params(repo: Path) -> dict:
    return yaml.safe_load(file_at(repo, "HEAD", "params.yaml"))


def _matches(repo: Path, rev: str, sets: list[str]) -> bool:
    params = yaml.safe_load(_git(repo, "show", f"{rev}:params.yaml").stdout)
    return all(_literal(lookup(params, s.split("=", 1)[0])) == s.split("=", 1)[1] for s in sets)


def run_recipes(book: RecipeBook, repo: Path, rerun: bool = False,
                execute: Callable[[list[str]], None] | None = None) -> dict[str, dict]:
    """Run (or reuse) each recipe's experiment in turn; per recipe {rev, seconds, reused}."""
    execute = execute or (lambda args: subprocess.run(args, cwd=repo, check=True))
    committed, out = committed_params(repo), {}
    # recipes without overrides last: the workspace ends on the committed values, not on the last recipe's
    for name in sorted(book.runs(), key=lambda n: not book.recipes[n].set):
        sets = overrides(book, name, committed)
        rev = exp_ref(repo, name)
        if rev and not rerun and _matches(repo, rev, sets):
            out[name] = {"rev": rev, "seconds": 0.0, "reused": True}
            continue
        if rev:
            drop_experiment(repo, name)
        start = time.monotonic()
        execute(exp_run_args(name, sets))
        rev = exp_ref(repo, name)
        if rev is None:
            raise UserError(f"dvc exp run --name {name} finished but no experiment '{name}' exists for HEAD")
        out[name] = {"rev": rev, "seconds": round(time.monotonic() - start, 1), "reused": False}
    return out


def existing_runs(book: RecipeBook, repo: Path) -> dict[str, dict]:
    """The recipes' experiments already run from HEAD (for rendering without running)."""
    out = {}
    for name in book.runs():
        rev = exp_ref(repo, name)
        if rev is None:
            raise UserError(f"no experiment '{name}' for HEAD: run `make compare` (or drop --no-run)")
        out[name] = {"rev": rev, "seconds": None, "reused": True}
    return out


class ProfileBook(BaseModel):
    """configs/profiles.yaml: compute budgets, each a set of overrides of the committed params (the quick one)."""

    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, Recipe]


def load_profiles(path: Path | str) -> ProfileBook:
    try:
        return ProfileBook.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {exc}") from None


def run_profile(book: ProfileBook, name: str, repo: Path, rerun: bool = False,
                execute: Callable[[list[str]], None] | None = None) -> dict:
    """Run (or reuse) profile ``name`` as experiment ``name`` from HEAD: {rev, seconds, reused}."""
    if name not in book.profiles:
        raise UserError(f"no profile '{name}' in configs/profiles.yaml (there: {', '.join(book.profiles)})")
    profile = book.profiles[name]
    committed = committed_params(repo)
    for key in profile.set:
        lookup(committed, key)  # a misspelled key fails here, before any run
    # a profile runs alone: only its own keys are set, everything else is the committed (quick) value
    runner = RecipeBook(recipes={name: profile})
    return run_recipes(runner, repo, rerun=rerun, execute=execute)[name]

