"""Stage prepare_base: materialise the configured base model into models/base/ (safetensors + tokenizer + info)."""

from __future__ import annotations

import click

from saferinstruct.prepare_base import BaseModelParams, materialise
from saferinstruct.params import load_section
from saferinstruct.stageutil import Timer, clean_errors, write_stats


@click.command()
@click.option("--out", "out_dir", default="models/base", show_default=True, help="Model directory to write.")
@click.option("--stats", "stats_path", default="stats/prepare_base.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@clean_errors
def main(out_dir: str, stats_path: str, params_path: str) -> None:
    params = load_section("prepare_base", BaseModelParams, params_path)
    with Timer() as t:
        info, cache_hit = materialise(params, out_dir)
    write_stats(stats_path, {"source": params.source, "parameters": info["parameters"],
                             "weights_sha256": info["weights_sha256"], "conversion_cache_hit": cache_hit,
                             "seconds": t.seconds})
    click.echo(f"prepare_base: {info['parameters']:,} parameters -> {out_dir} "
               f"(sha256 {info['weights_sha256'][:12]}, {t.seconds}s)")


if __name__ == "__main__":
    main()
