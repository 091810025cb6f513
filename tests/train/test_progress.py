"""Training progress: step/total, the latest loss and the time left, as a bar on a terminal and as lines in a log."""

from __future__ import annotations

import io
from types import SimpleNamespace

from saferinstruct.progress import Progress, duration
from saferinstruct.train.progress import progress_callback, training_summary


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _train(callback, clock: FakeClock, steps: int, seconds_per_step: float, logging_steps: int,
           losses: dict[int, float], start: int = 0) -> None:
    """Drive ``callback`` the way the Trainer does: on_step_end, then on_log on a logging step."""
    args = SimpleNamespace(logging_steps=logging_steps)
    state = SimpleNamespace(max_steps=steps, global_step=start, is_world_process_zero=True)
    callback.on_train_begin(args, state, SimpleNamespace())
    for step in range(start + 1, steps + 1):
        clock.now += seconds_per_step
        state.global_step = step
        logs = step in losses
        callback.on_step_end(args, state, SimpleNamespace(should_log=logs))
        if logs:
            callback.on_log(args, state, SimpleNamespace(), logs={"loss": losses[step], "learning_rate": 1e-5})
    callback.on_log(args, state, SimpleNamespace(), logs={"train_runtime": 60.0})  # the trainer's closing log
    callback.on_train_end(args, state, SimpleNamespace())


def test_log_lines_report_step_total_loss_and_time_left_on_a_fake_clock():
    clock, stream = FakeClock(), io.StringIO()
    callback = progress_callback("train_dpo", stream=stream, tty=False, clock=clock)
    _train(callback, clock, steps=20, seconds_per_step=3.0, logging_steps=5, losses={5: 0.69, 10: 0.65, 15: 0.61,
                                                                                     20: 0.58})
    assert stream.getvalue().splitlines() == [
        "train_dpo: step 5/20 loss 0.69, 15s elapsed, ~45s left",
        "train_dpo: step 10/20 loss 0.65, 30s elapsed, ~30s left",
        "train_dpo: step 15/20 loss 0.61, 45s elapsed, ~15s left",
        "train_dpo: step 20/20 loss 0.58, 1m00s elapsed",  # once at the end, not again for the closing log
    ]


def test_a_slow_run_prints_a_line_every_interval_even_between_logging_steps():
    clock, stream = FakeClock(), io.StringIO()
    callback = progress_callback("train_sft", every_steps=100, every_seconds=30, stream=stream, tty=False,
                                 clock=clock)
    _train(callback, clock, steps=4, seconds_per_step=40.0, logging_steps=100, losses={})
    assert stream.getvalue().splitlines() == [
        "train_sft: step 1/4, 40s elapsed, ~2m00s left",
        "train_sft: step 2/4, 1m20s elapsed, ~1m20s left",
        "train_sft: step 3/4, 2m00s elapsed, ~40s left",
        "train_sft: step 4/4, 2m40s elapsed",
    ]


def test_a_resumed_run_estimates_from_the_steps_it_ran():
    clock, stream = FakeClock(), io.StringIO()
    callback = progress_callback("train_sft", stream=stream, tty=False, clock=clock)
    _train(callback, clock, steps=20, seconds_per_step=2.0, logging_steps=5, losses={15: 1.0}, start=10)
    # 5 steps in 10 s since the resume at step 10: 5 left take 10 s (steps 1-10 cost this run nothing)
    assert stream.getvalue().splitlines()[0] == "train_sft: step 15/20 loss 1, 10s elapsed, ~10s left"


def test_on_a_terminal_it_is_a_tqdm_bar_and_other_ranks_are_silent():
    clock, stream = FakeClock(), io.StringIO()
    callback = progress_callback("train_reverse", stream=stream, tty=True, clock=clock)
    _train(callback, clock, steps=8, seconds_per_step=1.0, logging_steps=4, losses={4: 2.5, 8: 2.0})
    text = stream.getvalue()
    assert "train_reverse" in text and "8/8" in text and "loss=2" in text and "\r" in text
    quiet = io.StringIO()
    silent = progress_callback("train_reverse", stream=quiet, tty=False, clock=clock)
    args, state = SimpleNamespace(logging_steps=1), SimpleNamespace(max_steps=2, global_step=0,
                                                                    is_world_process_zero=False)
    silent.on_train_begin(args, state, SimpleNamespace())
    state.global_step = 2
    silent.on_step_end(args, state, SimpleNamespace(should_log=False))
    silent.on_train_end(args, state, SimpleNamespace())
    assert quiet.getvalue() == ""


def test_counted_loop_lines_and_durations():
    clock, stream = FakeClock(), io.StringIO()
    with Progress("train_dpo: reference log-probs", 160, unit="pairs", every_steps=64, stream=stream, tty=False,
                  clock=clock) as progress:
        for done in (8, 64, 128, 160):
            clock.now += 10
            progress.advance_to(done)
    assert stream.getvalue().splitlines() == [
        "train_dpo: reference log-probs: 64/160 pairs, 20s elapsed, ~30s left",
        "train_dpo: reference log-probs: 128/160 pairs, 30s elapsed, ~8s left",
        "train_dpo: reference log-probs: 160/160 pairs, 40s elapsed",
    ]
    assert (duration(42), duration(75), duration(3700)) == ("42s", "1m15s", "1h01m")


def test_training_summary_is_one_line_with_steps_loss_seconds_and_output():
    line = training_summary("train_sft", {"steps": 22, "final_loss": 0.60041, "resumed_from_step": 0}, 165.1,
                            "models/sft")
    assert line == "train_sft: 22 steps, final loss 0.6004, 165.1s -> models/sft"
    resumed = training_summary("train_reverse", {"steps": 40, "final_loss": 2.0, "eval_loss": 2.025,
                                                 "resumed_from_step": 30}, 12.0, "models/reverse")
    assert resumed == ("train_reverse: 40 steps (resumed at step 30), final loss 2, eval loss 2.025, 12.0s "
                       "-> models/reverse")
