"""The ``saferinstruct`` command: compare dataset versions, describe one, calibrate the judge, render the results table.

Heavy imports (DVC, torch) happen inside the commands, so ``saferinstruct --help`` stays instant.
"""

from __future__ import annotations

import json

import click

from saferinstruct.stageutil import clean_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saferinstruct", prog_name="saferinstruct")  # the installed distribution's version
def main() -> None:
    """Safer-Instruct pipeline tools (the pipeline itself runs with `dvc repro`)."""


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--repo", default=".", show_default=True, help="Repository that revisions and experiments refer to.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--examples", default=3, show_default=True, type=click.IntRange(min=0),
              help="Examples shown per kind of change (0: counts only).")
@click.option("--timing", is_flag=True, help="Also show changed *seconds* figures in the funnel.")
@clean_errors
def diff(a: str, b: str, repo: str, as_json: bool, examples: int, timing: bool) -> None:
    """Compare two versions of the preference dataset.

    A and B are git revisions (HEAD~1, a tag, a branch), DVC experiment names, directories laid out like the
    repository, or preference .jsonl files. Rows are matched by id.
    """
    from saferinstruct.versions import diff_versions, load_version, render_diff

    d = diff_versions(load_version(a, repo), load_version(b, repo), examples=examples)
    click.echo(json.dumps(d, indent=2, ensure_ascii=False, default=str) if as_json else render_diff(d, timing))


@main.command()
@click.argument("rev", default=".")
@click.option("--repo", default=".", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@clean_errors
def stats(rev: str, repo: str, as_json: bool) -> None:
    """Describe one version (default: the workspace): rows per split and category, the funnel as a table (one row
    per stage in data-flow order: rows in, kept, dropped, top drop reasons, model calls, cache hits, cost, seconds),
    verdict labels. --json gives every count."""
    from saferinstruct.versions import load_version, render_stats, version_stats

    s = version_stats(load_version(rev, repo))
    click.echo(json.dumps(s, indent=2, ensure_ascii=False, default=str) if as_json else render_stats(s))


@main.command()
@click.argument("labelled", type=click.Path(dir_okay=False))
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="The judge is the one params.yaml configures under evaluate.judge.")
@click.option("--judge-prompt", default="prompts/eval_refusal.md", show_default=True, help="For LLM judges.")
@click.option("--cache", "cache_dir", default="cache/calibrate", show_default=True, help="LLM judge call cache.")
@click.option("--out", "out_path", default=None, help="Also write the report as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@clean_errors
def calibrate(labelled: str, params_path: str, judge_prompt: str, cache_dir: str, out_path: str | None,
              as_json: bool) -> None:
    """Agreement of the evaluation judge with human labels.

    LABELLED is a CSV or jsonl of human-labelled responses: XSTest completion files (prompt, completion,
    final_label = 1_full_compliance | 2_full_refusal | 3_partial_refusal) or prompt, response, label
    (compliance | refusal | partial).
    """
    import os

    from saferinstruct.eval.calibration import calibrate as run_calibration
    from saferinstruct.eval.calibration import load_labelled, refusal_judge_spec, render_report
    from saferinstruct.eval.harness import EvaluateParams
    from saferinstruct.io import write_json
    from saferinstruct.judging.backend_options import secrets_for
    from saferinstruct.judging.factory import build_judge
    from saferinstruct.params import load_section

    # the calibrate stage's choice too: a harm judge cannot be compared with refusal labels, the offline judge is
    spec = refusal_judge_spec(load_section("evaluate", EvaluateParams, params_path).judge)
    rows = load_labelled(labelled)
    judge = build_judge(spec, prompt_path=judge_prompt, cache_dir=cache_dir,
                        secrets=secrets_for(spec.options, os.environ), section="evaluate.judge")
    try:
        report = run_calibration(judge, rows)
    finally:
        judge.close()
    report = {"judge": judge.name, "labelled": labelled, **report}
    if out_path:
        write_json(out_path, report)
    click.echo(json.dumps(report, indent=2) if as_json else render_report(report, judge.name, labelled))


@main.command()
@click.option("--namespace", required=True, help="Hub user or organisation the repositories belong to.")
@click.option("--out", "out_dir", default="dist/hub", show_default=True,
              help="Where the Hub layout is written (git-ignored).")
@click.option("--preferences", default="data/preferences", show_default=True, help="train.jsonl, test.jsonl, README.md")
@click.option("--model", "models", multiple=True, default=("sft=models/sft", "dpo=models/dpo"), show_default=True,
              metavar="NAME=DIR", help="A trained model directory to publish; repeatable.")
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True,
              help="Evaluation metrics for the cards' table ('' for none).")
@click.option("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct", show_default=True,
              help="Hub id of the model prepare_base started from (the bundled GGUF is SmolLM2-135M-Instruct).")
@click.option("--push", is_flag=True, help="Upload with the token in HF_TOKEN (docs/publishing.md).")
@click.option("--public", is_flag=True, help="With --push: create public repositories (default: private).")
@click.option("--no-gate", is_flag=True, help="With --push: do not ask for manual access approval.")
@clean_errors
def publish(namespace: str, out_dir: str, preferences: str, models: tuple[str, ...], metrics_path: str,
            base_model: str, push: bool, public: bool, no_gate: bool) -> None:
    """Write the preference dataset and each model in Hugging Face Hub layout with cards; --push uploads them."""
    import os

    from saferinstruct.errors import UserError
    from saferinstruct.publish import publish as write_layout
    from saferinstruct.publish import push as upload

    pairs = dict(m.split("=", 1) for m in models if "=" in m)
    if len(pairs) != len(models):
        raise UserError(f"--model takes NAME=DIR, got {', '.join(m for m in models if '=' not in m)}")
    targets = write_layout(preferences, pairs, metrics_path or None, out_dir, namespace, base_model)
    for t in targets:
        click.echo(f"{t.folder} -> {t.repo_type} {t.repo_id}")
    if push:
        for url in upload(targets, os.environ.get("HF_TOKEN", ""), private=not public, gated=not no_gate):
            click.echo(f"pushed {url}")


@main.command("results-table")
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True)
@click.option("--readme", default="README.md", show_default=True)
@click.option("--print", "print_only", is_flag=True, help="Print the table instead of updating the README.")
@click.option("--rev", default=None, help="Read the metrics file as committed at this git revision or DVC experiment "
              "name (e.g. the profile `full`) instead of the workspace.")
@click.option("--block", default=None, help="Write between the markers of this named block ('<!-- results-table:"
              "BLOCK:start -->') instead of the default run's.")
@clean_errors
def results_table(metrics_path: str, readme: str, print_only: bool, rev: str | None, block: str | None) -> None:
    """Regenerate the README results table (between its marker lines) from metrics/eval.json."""
    from pathlib import Path

    from saferinstruct.eval.table import render_table, update_readme
    from saferinstruct.io import read_json
    from saferinstruct.recipes import file_at

    if rev is None:
        metrics, source = read_json(metrics_path), metrics_path
    else:
        metrics, source = json.loads(file_at(Path("."), rev, metrics_path)), f"{metrics_path} of {rev}"
    if print_only:
        click.echo(render_table(metrics, source))
        return
    changed = update_readme(readme, metrics, source, block)
    click.echo(f"{readme}: results table {'updated' if changed else 'already up to date'}")


@main.command()
@click.option("--recipes", "recipes_path", default="configs/recipes.yaml", show_default=True)
@click.option("--repo", default=".", show_default=True, help="Repository root.")
@click.option("--readme", default="README.md", show_default=True)
@click.option("--no-run", is_flag=True, help="Render from the recipes' existing experiments; run nothing.")
@click.option("--rerun", is_flag=True, help="Run every recipe again, even one already run from HEAD with its params.")
@click.option("--print", "print_only", is_flag=True, help="Print the table instead of updating the README.")
@clean_errors
def compare(recipes_path: str, repo: str, readme: str, no_run: bool, rerun: bool, print_only: bool) -> None:
    """Run each recipe of configs/recipes.yaml as a DVC experiment (`dvc exp run --name <recipe> -S ...`, in turn,
    from the committed params), then render them side by side (rates with 95% Wilson intervals, recipe-vs-recipe
    exact McNemar tests) into the README between its recipe markers."""
    from pathlib import Path

    from saferinstruct.compare import collect, dvc_reader, render, update_readme
    from saferinstruct.recipes import committed_params, existing_runs, load_recipes, lookup, run_recipes

    root = Path(repo)
    book = load_recipes(root / recipes_path)
    runs = existing_runs(book, root) if no_run else run_recipes(book, root, rerun=rerun)
    labels = lookup(committed_params(root), "evaluate.metrics.refusal_labels")
    table = render(book, collect(book, {n: r["rev"] for n, r in runs.items()}, dvc_reader(root), labels), runs)
    if print_only:
        click.echo(table)
        return
    changed = update_readme(root / readme, table)
    click.echo(f"{readme}: recipe table {'updated' if changed else 'already up to date'}")


@main.command()
@click.argument("name")
@click.option("--profiles", "profiles_path", default="configs/profiles.yaml", show_default=True)
@click.option("--repo", default=".", show_default=True, help="Repository root.")
@click.option("--rerun", is_flag=True, help="Run it again even if an experiment of HEAD with these params exists.")
@clean_errors
def profile(name: str, profiles_path: str, repo: str, rerun: bool) -> None:
    """Run a profile of configs/profiles.yaml (e.g. `full`) as the DVC experiment NAME from the committed params; an
    experiment already run from HEAD with the same params is reused. Then: `dvc exp show`, `saferinstruct
    results-table --rev NAME --block NAME`, or `dvc exp apply NAME`."""
    from pathlib import Path

    from saferinstruct.recipes import load_profiles, run_profile

    root = Path(repo)
    run = run_profile(load_profiles(root / profiles_path), name, root, rerun=rerun)
    how = "reused (same params, same HEAD)" if run["reused"] else f"ran in {run['seconds']:.0f} s"
    click.echo(f"profile {name}: experiment {run['rev'][:7]} {how}")


@main.group()
def caches() -> None:
    """Share the persisted call caches through the DVC remote (docs/sharing.md)."""


@caches.command("pull")
@click.option("--rev", "revs", multiple=True, help="Also merge the caches as committed at this revision (a teammate's "
              "branch, a tag); repeatable. HEAD is always merged.")
@click.option("--repo", default=".", show_default=True, help="Repository root.")
@click.option("-r", "--remote", default=None, help="DVC remote to fetch from (default: the repository's default).")
@click.option("--offline", is_flag=True, help="Merge only from the local DVC cache; do not contact the remote.")
@click.option("--best-effort", is_flag=True,
              help="An unreachable or missing remote prints one line and exits 0 (what `make repro` uses).")
@clean_errors
def caches_pull(revs: tuple[str, ...], repo: str, remote: str | None, offline: bool, best_effort: bool) -> None:
    """Fetch every persisted call cache recorded in dvc.lock at HEAD (and each --rev) and merge it into the workspace.

    Adds the entries the workspace lacks, never deletes or overwrites one (entries are content-addressed), so a stage
    that must re-run pays only for calls nobody has paid for yet.
    """
    import sys

    from saferinstruct.cachesync import RemoteUnavailable, pull_caches, render

    try:
        results = pull_caches(repo, ["HEAD", *revs], remote=remote, offline=offline)
    except RemoteUnavailable as err:
        click.echo(f"caches pull: {err}; continuing without the remote's caches" if best_effort
                   else f"error: {err}", err=True)
        sys.exit(0 if best_effort else 2)
    click.echo(render(results))
