"""Where a run's time went: each stage's own seconds (stats/<stage>.json, written by the stage) in pipeline order,
their sum against a budget, and the same for another revision side by side (e.g. the full profile's run).

    .venv/bin/python bench/stage_seconds.py [--budget-min 25] [--rev 023dfa6] [--wall 1432]

Stage seconds exclude process start-up, imports and DVC's own hashing (about 5-8 s a stage on 2 CPU cores):
--wall (seconds, from `/usr/bin/time make repro`) prints that overhead too. A stage skipped as unchanged still shows
the seconds of the run that wrote its stats; a stage answered from the call cache shows its (small) cached time.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from saferinstruct.errors import UserError
from saferinstruct.recipes import file_at


def stage_seconds(read) -> dict[str, float | None]:
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    out: dict[str, float | None] = {}
    for name in stages:
        text = read(f"stats/{name}.json")
        out[name] = json.loads(text).get("seconds") if text else None
    return out


def _workspace(path: str) -> str | None:
    return Path(path).read_text() if Path(path).exists() else None


def _at(rev: str):
    def read(path: str) -> str | None:
        try:
            return file_at(Path("."), rev, path)
        except UserError:  # a stage that did not exist at that revision
            return None
    return read


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:8.1f}"


@click.command()
@click.option("--budget-min", default=25.0, show_default=True, help="The profile's time budget in minutes.")
@click.option("--rev", default=None, help="Also show this git revision's stage seconds (e.g. a full-profile run).")
@click.option("--wall", type=float, default=None, help="Measured wall seconds of the whole run (for the overhead).")
def main(budget_min: float, rev: str | None, wall: float | None) -> None:
    here = stage_seconds(_workspace)
    other = stage_seconds(_at(rev)) if rev else {}
    print(f"{'stage':26s} {'workspace':>9s}" + (f" {rev[:9]:>9s}" if rev else ""))
    for name, seconds in here.items():
        print(f"{name:26s} {_fmt(seconds):>9s}" + (f" {_fmt(other.get(name)):>9s}" if rev else ""))
    total = sum(s or 0.0 for s in here.values())
    line = f"{'sum of stage seconds':26s} {total:9.1f}"
    if rev:
        line += f" {sum(s or 0.0 for s in other.values()):9.1f}"
    print(line)
    print(f"budget {budget_min:.0f} min = {budget_min * 60:.0f} s: stages use {total / (budget_min * 60):.2f} of it")
    if wall is not None:
        print(f"wall {wall:.0f} s ({wall / 60:.1f} min, {wall / (budget_min * 60):.2f} of the budget); "
              f"outside the stages' own seconds: {wall - total:.0f} s")


if __name__ == "__main__":
    main()
