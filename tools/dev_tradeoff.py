"""Add a setting's development-set rates (``tools/dev_eval.py --out FILE``) to docs/dev_tradeoff.json, the record of
what was tried that DVC plots as `dev_tradeoff` (harmful refused vs safe refused, 95% intervals):

    .venv/bin/python tools/dev_eval.py models/sft models/dpo --out /tmp/dev.json
    .venv/bin/python tools/dev_tradeoff.py "quick, policy_share 0.5" /tmp/dev.json
    dvc plots show   # or: dvc plots diff
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from saferinstruct.eval.dev_tradeoff import merge_rows, tradeoff_row
from saferinstruct.io import atomic_open

RECORD = Path("docs/dev_tradeoff.json")


@click.command()
@click.argument("setting")
@click.argument("rates_json", type=click.Path(exists=True, dir_okay=False))
@click.option("--record", type=click.Path(dir_okay=False), default=str(RECORD), show_default=True)
def main(setting: str, rates_json: str, record: str) -> None:
    rates = json.loads(Path(rates_json).read_text())
    rows = [tradeoff_row(setting, model_dir, sets) for model_dir, sets in rates.items()]
    path = Path(record)
    existing = json.loads(path.read_text()) if path.exists() else []
    with atomic_open(path) as fh:
        fh.write(json.dumps(merge_rows(existing, rows), indent=1) + "\n")
    for row in rows:
        click.echo(f"{row['model']}: harmful {row['harmful_refused']:.1%} (n={row['harmful_n']}), "
                   f"safe {row['safe_refused']:.1%} (n={row['safe_n']})")


if __name__ == "__main__":
    main()
