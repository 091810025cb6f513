"""Under `dvc repro` a stage's stderr is a log: the libraries' own tqdm bars are switched off there (each would be a
line of carriage returns), the stage's progress lines stay."""

from __future__ import annotations

import os
import subprocess
import sys

CHECK = """
import sys
from saferinstruct.stageutil import quiet_library_bars
quiet_library_bars()
import datasets, transformers
print(transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
"""


def _bars_enabled(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_library_bars_are_off_when_stderr_is_a_log():
    env = {k: v for k, v in os.environ.items() if not k.endswith("DISABLE_PROGRESS_BARS")}
    assert _bars_enabled(env) == "False False"


def test_library_bars_already_imported_are_switched_off(monkeypatch):
    import datasets
    import transformers

    from saferinstruct.stageutil import quiet_library_bars

    was = transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    try:
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
        quiet_library_bars()
        assert not transformers.utils.logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    finally:  # leave the process as it was
        (transformers.utils.logging.enable_progress_bar if was[0] else transformers.utils.logging.disable_progress_bar)()
        (datasets.enable_progress_bars if was[1] else datasets.disable_progress_bars)()
