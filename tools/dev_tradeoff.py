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

from saferinstruct.eval.dev_tradeoff import HARMFUL_POOL, SAFE_POOL, merge_rows, tradeoff_row
from saferinstruct.io import atomic_open

RECORD = Path("docs/dev_tradeoff.json")


@click.command()
@click.argument("setting", required=False)
@click.argument("rates_json", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--record", type=click.Path(dir_okay=False), default=str(RECORD), show_default=True)
@click.option("--table", is_flag=True, help="Print the record as a Markdown table (docs/evaluation.md) and exit.")
def main(setting: str | None, rates_json: str | None, record: str, table: bool) -> None:
    if table:
        click.echo(markdown_table(json.loads(Path(record).read_text())))
        return
    if not setting or not rates_json:
        raise click.UsageError("give SETTING and RATES_JSON (or --table)")
    rates = json.loads(Path(rates_json).read_text())
    rows = [tradeoff_row(setting, model_dir, sets) for model_dir, sets in rates.items()]
    path = Path(record)
    existing = json.loads(path.read_text()) if path.exists() else []
    with atomic_open(path) as fh:
        fh.write(json.dumps(merge_rows(existing, rows), indent=1) + "\n")
    for row in rows:
        click.echo(f"{row['model']}: harmful {row['harmful_refused']:.1%} (n={row['harmful_n']}), "
                   f"safe {row['safe_refused']:.1%} (n={row['safe_n']})")


def _cell(row: dict, side: str) -> str:
    return f"{row[side + '_refused']:.1%} [{row[side + '_low']:.1%}, {row[side + '_high']:.1%}]"


def markdown_table(rows: list[dict]) -> str:
    head = ("| setting | model | harmful dev refused (pooled) | safe dev refused (pooled) | Safer-Instruct | red-team "
            "| DNA hate | DNA info hazard | DNA malicious | DNA misinfo | hh helpful | look-alikes |")
    sets = HARMFUL_POOL + SAFE_POOL  # the header names them in this order
    lines = [head, "|---|---|" + "---:|" * 10]
    for r in rows:
        rates = " | ".join(f"{r[f'dev:{k}']:.1%}" if f"dev:{k}" in r else "-" for k in sets)
        lines.append(f"| {r['setting']} | {r['model_dir'].rsplit('/', 1)[-1]} | {_cell(r, 'harmful')} | "
                     f"{_cell(r, 'safe')} | {rates} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
