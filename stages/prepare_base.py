"""Stage prepare_base: materialise the configured policy base into models/base/ (safetensors + tokenizer + info) and
the reversed base into models/reverse_base/ (by default a pointer to models/base: see saferinstruct/base_pointer.py)."""

from __future__ import annotations

import click

from saferinstruct.params import load_section
from saferinstruct.prepare_base import PrepareBaseParams, prepare_bases
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--out", "out_dir", default="models/base", show_default=True, help="Policy base model directory.")
@click.option("--reverse-out", "reverse_dir", default="models/reverse_base", show_default=True,
              help="Reversed base model directory (a pointer to --out when prepare_base.reverse is same_as: policy).")
@click.option("--stats", "stats_path", default="stats/prepare_base.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(out_dir: str, reverse_dir: str, stats_path: str, params_path: str) -> None:
    params = load_section("prepare_base", PrepareBaseParams, params_path)
    with Timer() as t:
        stats = prepare_bases(params, out_dir, reverse_dir)
    write_stats(stats_path, {**stats, "seconds": t.seconds})
    own = stats["reverse"].get("parameters")
    reverse = f"{own:,} parameters" if own else "the policy base (pointer)"
    click.echo(f"prepare_base: {stats['parameters']:,} parameters -> {out_dir} "
               f"(sha256 {stats['weights_sha256'][:12]}); reversed base: {reverse} -> {reverse_dir} ({t.seconds}s)")


if __name__ == "__main__":
    main()
