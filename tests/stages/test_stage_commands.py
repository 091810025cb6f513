"""Every stage's dvc.yaml ``cmd`` runs its own stage file and parses against that file's click command: each option it
passes exists (and takes a value), so a renamed option fails here and not halfway through `dvc repro`."""

from __future__ import annotations

import click
import pytest
from conftest import REPO, dvc_stages, import_stage, stage_args, stage_cmd_args

STAGES = sorted(dvc_stages())


def test_every_stage_file_is_a_stage_and_every_stage_has_a_file():
    files = sorted(p.stem for p in (REPO / "stages").glob("*.py"))
    assert files == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_cmd_options_exist_in_the_stage_command(name):
    command = import_stage(name).main
    options = {opt: param for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    words = stage_cmd_args(name)
    passed = words[::2]
    assert all(w.startswith("--") for w in passed), f"{name}: cmd must be --option value pairs: {words}"
    unknown = sorted(set(passed) - set(options))
    assert not unknown, f"dvc.yaml stage {name} passes {unknown}, which stages/{name}.py does not define"
    flags = sorted(w for w in set(passed) if options[w].is_flag)
    assert not flags, f"dvc.yaml stage {name}: {flags} are flags but the cmd gives them a value"
    repeated = sorted(w for w in set(passed) if passed.count(w) > 1 and not options[w].multiple)
    assert not repeated, f"dvc.yaml stage {name}: {repeated} given more than once but not multiple=True"
    if dvc_stages()[name].get("params"):
        assert "--params" in options, f"stages/{name}.py needs a --params option (tests point it at their own file)"


@pytest.mark.parametrize("name", STAGES)
def test_cmd_parses_into_the_stage_arguments(name, tmp_path):
    """click accepts the re-rooted arguments (types, choices, multiple) without running the stage."""
    command = import_stage(name).main
    ctx = command.make_context(name, stage_args(name, tmp_path), resilient_parsing=False)
    words = stage_cmd_args(name)
    with ctx:
        passed = {p.name for p in command.params if set(p.opts) & set(words[::2]) or "--params" in p.opts}
        values = [str(v) for key in passed for v in (ctx.params[key] if isinstance(ctx.params[key], tuple)
                                                      else [ctx.params[key]])]
        outside = [v for v in values if not v.startswith(str(tmp_path)) and not v.startswith(str(REPO / "prompts"))]
        assert values and not outside, f"{name}: paths outside the tmp root: {outside}"
