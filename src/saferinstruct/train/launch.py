"""How a training stage picks its accelerate config: the stage re-executes itself under ``accelerate launch``.

dvc.yaml runs every training stage as plain ``python stages/<stage>.py``; the stage reads ``accelerate_config`` from
its params and, unless it is already running under a launcher, asks :func:`accelerate_command` for the command to
replace itself with. ``none`` (the CPU default) runs in the current process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from saferinstruct.params import ParamsError

CONFIG_DIR = Path("configs/accelerate")
LAUNCHED_ENV = "SAFERINSTRUCT_LAUNCHED"  # set on the relaunched process so it never relaunches itself again
_SINGLE_PROCESS = {"single_gpu"}


def accelerate_command(config: str, argv: Sequence[str], already_launched: bool, gpus: int,
                       config_dir: Path = CONFIG_DIR) -> list[str] | None:
    """The ``accelerate launch`` command line for ``argv`` (script + args), or None to run in this process."""
    if config == "none" or already_launched:
        return None
    path = Path(config_dir) / f"{config}.yaml"
    if not path.exists():
        raise ParamsError(f"{path}: accelerate config '{config}' not found (see docs/training.md)")
    if gpus < 1:
        raise ParamsError(f"accelerate_config '{config}' needs a GPU and none is visible; "
                                "set accelerate_config: none to train on CPU")
    procs = 1 if config in _SINGLE_PROCESS else gpus
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
            "--num_processes", str(procs), *argv]


def maybe_relaunch(config: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process with ``accelerate launch`` when ``config`` asks for it (never returns then)."""
    import torch

    already = LAUNCHED_ENV in env or "LOCAL_RANK" in env  # under accelerate launch or torchrun already
    cmd = accelerate_command(config, argv, already, torch.cuda.device_count())
    if cmd is not None:
        os.execvpe(cmd[0], cmd, {**env, LAUNCHED_ENV: "1"})


def is_main_process(env: Mapping[str, str]) -> bool:
    """Rank 0 (or no launcher): the one process that writes stats."""
    return env.get("RANK", "0") == "0"
