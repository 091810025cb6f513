"""What every training stage shares: typed params -> trl config, model loading, DVCLive, and the saved checkpoint.

One place decides CPU vs GPU (use_cpu without CUDA; bf16 and gradient checkpointing only on a GPU), LoRA vs full
fine-tuning, and what a checkpoint carries: merged weights (downstream loads a plain model dir), the tokenizer, and a
``training_config.json`` with the full config, data hashes, base model identity and library versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from saferinstruct.hashing import file_sha256
from saferinstruct.io import OutputSet, write_json
from saferinstruct.params import Params
from saferinstruct.train import checkpoints
from saferinstruct.train.progress import progress_callback

AccelerateConfig = Literal["none", "single_gpu", "multi_gpu_ddp", "fsdp", "deepspeed_zero3"]
CONFIG_NAME = "training_config.json"
_NOT_WEIGHTS = {CONFIG_NAME, "training_args.bin"}  # files that describe a run, not the model it produced
_TIMING_SUFFIXES = ("_runtime", "_per_second")  # train_runtime, train_samples_per_second, eval_steps_per_second...
_VERSIONED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "dvclive")


class LoraParams(Params):
    enabled: bool = False
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainParams(Params):
    """Knobs every training stage shares; ``max_steps`` > 0 overrides ``epochs``."""

    lr: float = Field(default=5e-5, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=8)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    logging_steps: int = Field(default=5, ge=1)
    seed: int = 0
    lora: LoraParams = Field(default_factory=LoraParams)
    accelerate_config: AccelerateConfig = "none"
    # auto: bf16 mixed precision on a GPU that has it, float32 on CPU. bf16 forces mixed precision on CPU too: ~2.6x
    # faster steps where the CPU computes bf16 natively (AVX512-BF16 or AMX; bench/cpu_bf16.py tells), far slower
    # where it does not
    precision: Literal["auto", "float32", "bf16"] = "auto"
    # intra-op CPU threads; null: torch's default (the machine's cores). A fixed number makes CPU training give the same
    # bits on machines with other core counts (1, 2 and 4 threads agreed to the bit here, 8 did not: docs/training.md)
    threads: int | None = Field(default=None, ge=1)
    # a resumable checkpoint every save_steps optimizer steps (0: none) into the stage's checkpoint dir, outside every
    # DVC output; save_total_limit newest are kept, all are deleted once the final model is saved (docs/training.md)
    save_steps: int = Field(default=10, ge=0)
    save_total_limit: int = Field(default=1, ge=1)


def use_bf16(p: TrainParams) -> bool:
    import torch

    if p.precision == "auto":
        return on_gpu() and torch.cuda.is_bf16_supported()
    return p.precision == "bf16"


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def make_deterministic(seed: int, threads: int | None = None) -> None:
    """Same machine, same inputs -> bit-identical weights (measured: docs/training.md, "Determinism"). Seeds python,
    numpy and torch before the trainer wraps LoRA adapters (their init draws from torch's RNG; the Trainer only seeds
    after), and makes torch pick deterministic kernels: on CPU the ones it uses already are, on a GPU this rules out
    atomics-based reductions. warn_only: an op with no deterministic kernel warns rather than stopping a long run."""
    import os

    import torch
    from transformers import set_seed

    # cuBLAS reads this when it first initialises (no GPU work has happened yet): a fixed workspace, fixed reductions
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False  # autotuning may pick a different kernel each run


def trainer_kwargs(p: TrainParams, output_dir: Path) -> dict[str, Any]:
    """Arguments shared by SFTConfig and DPOConfig. trl defaults to bf16 + gradient checkpointing: both only on GPU.
    Called before the trainer is built, so it also puts torch in deterministic mode (``make_deterministic``)."""
    make_deterministic(p.seed, p.threads)
    gpu = on_gpu()
    return dict(
        output_dir=str(output_dir), learning_rate=p.lr, num_train_epochs=p.epochs, max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.grad_accum, max_length=p.max_length,
        warmup_steps=p.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        seed=p.seed, data_seed=p.seed, logging_steps=p.logging_steps, logging_first_step=True,
        use_cpu=not gpu, bf16=use_bf16(p), activation_checkpointing=gpu,
        # no tqdm bar or raw log dicts from the trainer: train_and_save shows progress.progress_callback instead
        report_to=["dvclive"], dataloader_num_workers=0, disable_tqdm=True,
        save_strategy="steps" if p.save_steps else "no", save_steps=p.save_steps or 500,
        save_total_limit=p.save_total_limit, save_only_model=False,  # optimizer + RNG state: an exact resume
        # never group_by_length: trl 1.16 DPO crashes with it after the reference log-probs are computed
        train_sampling_strategy="random",
    )


def peft_config(p: LoraParams):
    if not p.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=list(p.target_modules),
                      task_type="CAUSAL_LM")


def load_dtype(p: TrainParams):
    """The dtype weights are loaded in; call it after the trainer config exists (``load_model``'s docstring).
    Under DeepSpeed ZeRO-3 and bf16: bf16 (ZeRO-3 partitions the bf16 weights at load and keeps the fp32 master copy
    in its optimizer partitions; checkpoints then hold bf16 weights). Elsewhere fp32 master weights with bf16
    autocast: a bf16 master copy would round a 5e-6 step away on any weight above ~1e-3 (bf16 keeps 8 bits)."""
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    return torch.bfloat16 if use_bf16(p) and is_deepspeed_zero3_enabled() else torch.float32


def load_model(model_dir: Path, dtype=None):
    """A plain HF causal LM dir (fp32 unless ``dtype``). Training stages load it AFTER building their
    TrainingArguments: under ``accelerate launch`` with a DeepSpeed config that is what registers the ZeRO-3 config,
    so ``from_pretrained`` creates every weight already partitioned across ranks instead of a full copy per rank."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_dir)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32), tokenizer


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    if not (Path(model_dir) / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json); run its producing stage first")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_sft_trainer(model_dir: Path, rows: list[dict[str, Any]], p: TrainParams, output_dir: Path,
                      eval_rows: list[dict[str, Any]] | None = None):
    """An SFTTrainer on prompt/completion rows; completion_only_loss masks the prompt tokens out of the loss.
    ``output_dir``: where the trainer writes its checkpoints. The config comes first (see ``load_model``)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**trainer_kwargs(p, output_dir), completion_only_loss=True, packing=False)
    model, tokenizer = load_model(model_dir, load_dtype(p))
    return SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=peft_config(p.lora),
                      train_dataset=Dataset.from_list(rows),
                      eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None)


def attach_dvclive(trainer, live_dir: Path, resume: bool = False) -> None:
    """report_to="dvclive" gives a callback on a default Live (./dvclive, writing a dvc.yaml); swap in one on
    ``live_dir`` with dvcyaml=False: the stage's metrics and plots are declared in dvc.yaml by hand. ``resume``:
    a resumed run appends to the curves the killed run left."""
    from transformers.integrations import DVCLiveCallback

    trainer.remove_callback(DVCLiveCallback)
    if trainer.is_world_process_zero():
        from dvclive import Live

        live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=resume)
        trainer.add_callback(_TrainerStepCallback(live=live))


def attach_progress(trainer, stage: str) -> None:
    """One progress bar (a line every logging_steps or ~30 s in a log) with step/total, loss and time left, in
    place of the raw log dict the trainer prints per logging step (``disable_tqdm`` gives it a PrinterCallback)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(stage))


def _TrainerStepCallback(live):  # noqa: N802 - reads as the class it builds (transformers is imported lazily)
    """DVCLive's callback steps once per log call; the curves read better against the trainer's own step."""
    from transformers.integrations import DVCLiveCallback

    class TrainerStepCallback(DVCLiveCallback):
        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if self.live is not None:
                self.live.step = state.global_step
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    return TrainerStepCallback(live=live)


def model_dir_sha256(model_dir: Path) -> str:
    """Identity of a saved model: weights, config and tokenizer files (not the run description)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_WEIGHTS):
        st = f.stat()
        h.update(str(f.relative_to(root)).encode())
        h.update(_file_digest(str(f.resolve()), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per (path, size, mtime) per process: DPO names the same 0.5 GB model three times."""
    return file_sha256(path)


def model_identity(model_dir: Path) -> dict[str, Any]:
    """Path, weights hash and whatever the producing stage recorded (model_info.json or training_config.json)."""
    model_dir = Path(model_dir)
    ident: dict[str, Any] = {"path": str(model_dir), "weights_sha256": model_dir_sha256(model_dir)}
    for name in ("model_info.json", CONFIG_NAME):
        if (model_dir / name).exists():
            doc = json.loads((model_dir / name).read_text(encoding="utf-8"))
            ident[name.removesuffix(".json")] = doc if name == "model_info.json" else {
                k: doc.get(k) for k in ("stage", "base_model", "data")}
    return ident


def data_identity(path: Path, rows: int) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(path), "rows": rows}


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: version(name) for name in _VERSIONED}}


def train_and_save(trainer, out_dir: Path, live_dir: Path, base_dir: Path, doc: dict[str, Any],
                   evaluate: bool = False, out: OutputSet | None = None) -> dict[str, Any]:
    """Train (then score the eval set once), write ``out_dir``: merged weights + tokenizer + training_config.json.
    Returns the trainer's metrics plus ``steps`` and ``final_loss`` (the last logged training loss). DVCLive logs
    into a staging folder that replaces ``live_dir`` with the model: a failed run leaves the last good curves (a
    persisted DVC output). With ``out`` (the stage's :func:`~saferinstruct.io.output_set`) both folders are only
    staged and change together with the stage's stats file at commit; without it they are swapped in at once.
    A complete checkpoint in the trainer's output_dir (a killed run of the same key: ``checkpoints.run_dir``) is
    resumed from; the checkpoints are deleted once the final model is saved."""
    live_dir = Path(live_dir)
    live_staging = live_dir.parent / f".{live_dir.name}.staging"
    run = Path(trainer.args.output_dir)
    resume = checkpoints.last_checkpoint(run) if trainer.args.save_strategy != "no" else None
    if trainer.is_world_process_zero():  # the only process that logs
        if resume is None:
            shutil.rmtree(live_staging, ignore_errors=True)  # left by a killed run
        if trainer.args.save_strategy != "no":  # output_dir is then a checkpoint run dir (checkpoints.run_dir)
            checkpoints.remove_other_runs(run)
    attach_dvclive(trainer, live_staging, resume=resume is not None and live_staging.exists())
    attach_progress(trainer, doc["stage"])
    metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    if evaluate:
        metrics.update(trainer.evaluate())
    metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
    staged = _save(trainer, Path(out_dir), Path(base_dir), {**doc, "train_metrics": _without_timings(metrics),
                                                            "trainer_config": trainer.args.to_dict()})
    if trainer.is_world_process_zero():
        for built, target in ((staged, Path(out_dir)), (live_staging, live_dir)):
            if built is None or not built.exists():
                continue
            if out is not None:
                out.stage_dir(built, target)
            else:
                _swap_into_place(built, target)
        if trainer.args.save_strategy != "no":
            checkpoints.remove_run(run)
    return {**metrics, "resumed_from_step": checkpoints.step_of(resume), "steps": trainer.state.global_step,
            "final_loss": _last_loss(trainer.state.log_history)}


def _last_loss(log_history: list[dict[str, Any]]) -> float | None:
    return next((round(entry["loss"], 6) for entry in reversed(log_history) if "loss" in entry), None)


def _without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    """Wall-clock figures change every run: kept out of the model directory so a rerun writes identical bytes (same
    DVC hash, downstream stages skipped); the stage's stats file keeps them."""
    return {k: v for k, v in metrics.items() if not k.endswith(_TIMING_SUFFIXES)}


def _save(trainer, out_dir: Path, base_dir: Path, doc: dict[str, Any]) -> Path | None:
    """The complete model in a staging folder beside ``out_dir`` (returned on the main process, None elsewhere)."""
    staging = out_dir.parent / f".{out_dir.name}.staging"
    is_peft = hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config")
    target = staging / "adapter" if is_peft else staging
    trainer.save_model(str(target))  # every rank: gathers FSDP / ZeRO-3 shards; only the main process writes
    if trainer.accelerator.is_main_process:
        if is_peft:
            _merge_adapter(base_dir, target, staging)
            trainer.processing_class.save_pretrained(staging)
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the JSON below says the same, readably
        write_json(staging / CONFIG_NAME, {**doc, "versions": library_versions(), "device": _device(trainer)})
    trainer.accelerator.wait_for_everyone()
    return staging if trainer.accelerator.is_main_process else None


def _merge_adapter(base_dir: Path, adapter_dir: Path, dest: Path) -> None:
    """Fold LoRA weights into the base so downstream stages load a plain model dir (no peft needed)."""
    from peft import PeftModel

    base, _ = load_model(base_dir)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    shutil.rmtree(adapter_dir)
    merged.save_pretrained(dest)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _device(trainer) -> dict[str, Any]:
    state = trainer.accelerator.state
    return {"type": str(trainer.args.device.type), "distributed_type": str(state.distributed_type),
            "num_processes": state.num_processes, "bf16": bool(trainer.args.bf16)}


def output_dir(out_dir: Path, checkpoint_root: Path | None, doc: dict[str, Any]) -> Path:
    """The trainer's output_dir: the checkpoint run dir of ``doc`` (``checkpoints.run_dir``) under
    ``checkpoint_root``, else a fresh staging dir beside ``out_dir`` (callers then set save_steps to 0)."""
    staging = prepare_staging(out_dir)  # always cleared: a killed save leaves one
    return checkpoints.run_dir(checkpoint_root, doc) if checkpoint_root is not None else staging


def checkpointed(p: TrainParams, checkpoint_root: Path | None) -> TrainParams:
    """``p`` with checkpoints off when the stage gives no checkpoint dir (they must never land in an output)."""
    return p if checkpoint_root is not None else p.model_copy(update={"save_steps": 0})


def prepare_staging(out_dir: Path) -> Path:
    """Fresh staging dir beside ``out_dir`` (same filesystem, so the final rename is atomic)."""
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging
