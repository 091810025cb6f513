"""Training progress: one bar (or, in a log, one line every few steps) per training stage, and its closing line.

The transformers Trainer, with ``disable_tqdm``, prints a raw dict per logging step and no step counter;
:func:`progress_callback` shows ``train_dpo: step 8/20 loss 0.61, 1m12s elapsed, ~1m48s left`` instead
(:class:`saferinstruct.progress.Progress`), and :func:`training_summary` is the stage's last line.
"""

from __future__ import annotations

from typing import Any

from saferinstruct.progress import Progress


def progress_callback(stage: str, every_steps: int | None = None, **progress: Any):
    """A TrainerCallback showing ``stage``'s optimizer steps of ``state.max_steps``, the latest logged loss and the
    time left (``progress``: :class:`Progress` options, e.g. a fake clock in tests). ``every_steps`` defaults to the
    trainer's ``logging_steps``. Built lazily: transformers loads only when a stage trains."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            every = every_steps or args.logging_steps
            self.progress = Progress(stage, state.max_steps, initial=state.global_step, every_steps=every,
                                     enabled=state.is_world_process_zero, **progress)

        def on_step_end(self, args, state, control, **kwargs):
            # a step that logs is reported by on_log (called right after), so its line carries this step's loss
            if self.progress is not None and not control.should_log:
                self.progress.advance_to(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is not None:
                loss = (logs or {}).get("loss")
                self.progress.advance_to(state.global_step, float(loss) if loss is not None else None)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()

    return ProgressCallback()


def training_summary(stage: str, result: dict[str, Any], seconds: float, out_dir: Any) -> str:
    """The stage's one closing line: ``train_sft: 22 steps, final loss 0.6004, 165.1s -> models/sft``."""
    loss = result.get("final_loss")
    loss_text = f", final loss {loss:.4g}" if loss is not None else ""
    evaluated = f", eval loss {result['eval_loss']:.4g}" if result.get("eval_loss") is not None else ""
    resumed = f" (resumed at step {result['resumed_from_step']})" if result.get("resumed_from_step") else ""
    return f"{stage}: {result.get('steps', 0)} steps{resumed}{loss_text}{evaluated}, {seconds}s -> {out_dir}"
