"""Progress of a long stage on stderr, with the time left: a tqdm bar on a terminal, plain lines in a log.

DVC pipes a stage's output, so stderr is usually not a terminal; a bar would then be one endless line of carriage
returns, and silence would hide a 20-minute stage. There a line is printed every ``every_steps`` steps or
``every_seconds`` seconds, whichever comes first, and at the end::

    train_dpo: step 8/20 loss 0.61, 1m12s elapsed, ~1m48s left

:class:`Progress` serves any counted loop (generation, the DPO reference pass); :func:`complete` runs a gateway batch
with one; ``saferinstruct.train.progress`` drives one from the transformers Trainer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from tqdm import tqdm


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3700`` -> ``1h01m``; under a minute: ``42s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``done`` of ``total`` units of a stage. The time left extrapolates the rate of the units done since the start
    (a resumed run starts at ``initial``: the steps it skipped cost no time)."""

    def __init__(self, desc: str, total: int, unit: str = "step", initial: int = 0, every_steps: int = 10,
                 every_seconds: float = 30.0, stream: IO[str] | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True):
        self.desc, self.total, self.unit, self.done, self.initial = desc, total, unit, initial, initial
        self.every_steps, self.every_seconds = max(1, every_steps), every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.clock, self.enabled = clock, enabled
        self.loss: float | None = None
        self.start = self._last_time = self._rate_start = clock()
        self._last_done = initial
        tty = _is_tty(self.stream) if tty is None else tty
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                        leave=True) if enabled and tty else None

    def update(self, n: int = 1) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int, loss: float | None = None) -> None:
        """``done`` units so far (and the latest loss, when known)."""
        if loss is not None:
            self.loss = loss
        step, self.done = done - self.done, done
        if self.bar is not None:
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self.bar.update(step)
        elif self.enabled and self._due():
            self._print()

    def skip(self, n: int) -> None:
        """``n`` units found done at no cost (e.g. answered by a cache): counted, but kept out of the rate."""
        if n <= 0:
            return
        self.done += n
        self.initial += n
        self._last_done += n  # the next line comes an interval after them
        self._rate_start = self.clock()  # the time so far went into finding them, not into the work the rate measures
        if self.bar is not None:
            self.bar.update(n)

    def seconds_left(self) -> float | None:
        """Estimated seconds to ``total`` (None until a unit is done)."""
        ran = self.done - self.initial
        if ran <= 0:
            return None
        return (self.clock() - self._rate_start) / ran * max(self.total - self.done, 0)

    def line(self) -> str:
        count = f"{self.done}/{self.total}"
        what = f"step {count}" if self.unit == "step" else f"{count} {self.unit}"
        loss = f" loss {self.loss:.4g}" if self.loss is not None else ""
        left = self.seconds_left()
        eta = f", ~{duration(left)} left" if left is not None and self.done < self.total else ""
        return f"{self.desc}: {what}{loss}, {duration(self.clock() - self.start)} elapsed{eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.done != self._last_done:
            self._print()  # the last state, whatever the interval
        self.enabled = False

    def _due(self) -> bool:
        if self.done == self._last_done:
            return False  # nothing new to say (a second log call at the same step)
        return (self.done - self._last_done >= self.every_steps or self.done >= self.total
                or self.clock() - self._last_time >= self.every_seconds)

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_done, self._last_time = self.done, self.clock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def complete(gateway: Any, requests: Sequence[Any], desc: str, unit: str = "calls", enabled: bool = True,
             **options: Any) -> list:
    """``gateway.complete(requests)`` with a :class:`Progress` (``options``: its settings): requests the call cache
    answers count as done at once (and not into the rate the time left is estimated from), each new result as it
    arrives. The requests go to the backend in one call as before: how it batches them, and so what it generates,
    is unchanged. A log line comes every ~10% of the requests (at least 10) or 30 s."""
    options.setdefault("every_steps", max(10, len(requests) // 10))
    with Progress(desc, len(requests), unit=unit, enabled=enabled, **options) as progress:
        results = gateway.complete(requests, on_result=lambda _result: progress.update(1), on_lookup=progress.skip)
        progress.advance_to(len(requests))  # duplicates within the batch are answered once: count them too
    return results
