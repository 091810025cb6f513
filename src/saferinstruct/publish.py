"""``saferinstruct publish``: the preference dataset and each trained model in Hugging Face Hub layout, with cards,
and (optionally) the upload.

Layout written under ``out``::

    dataset/README.md               dataset card (YAML: license other, tags, configs -> data/*.jsonl)
    dataset/data/{train,test}.jsonl the rows, validated as PreferencePair
    models/<name>/...               weights, config, tokenizer (real model_max_length), README.md model card

Nothing here reads the environment: the command passes the token in.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCardData

from saferinstruct.cards import CONTENT_WARNING, GATE_METADATA, GATING, INTENDED_USE, MODEL_GATING, \
    MODEL_INTENDED_USE, citation_section, dataset_card, dataset_card_data, licence_section, model_card, table
from saferinstruct.errors import UserError
from saferinstruct.eval.stats import wilson_interval
from saferinstruct.io import read_rows
from saferinstruct.records import PreferencePair

SPLITS = ("train", "test")
# transformers writes int(1e30) when a tokenizer does not know its context size (VERY_LARGE_INTEGER)
_UNKNOWN_LENGTH = 10**12
_NOT_PUBLISHED = {"training_args.bin"}  # a pickle: nobody should have to unpickle a download to read the args


@dataclass(frozen=True)
class Target:
    """One folder to upload and where it goes."""

    folder: Path
    repo_id: str
    repo_type: str  # "dataset" | "model"


def publish_dataset(pref_dir: Path, out_dir: Path, title: str = "Safer-Instruct preference data") -> Path:
    """Copy the validated splits to ``out_dir/data`` and write the dataset card; returns ``out_dir``."""
    pref_dir, out_dir = Path(pref_dir), Path(out_dir)
    rows = {split: read_rows(pref_dir / f"{split}.jsonl", PreferencePair, allow_empty=True) for split in SPLITS}
    shutil.rmtree(out_dir, ignore_errors=True)  # a re-publish leaves no stale split behind
    (out_dir / "data").mkdir(parents=True)
    for split in SPLITS:
        shutil.copyfile(pref_dir / f"{split}.jsonl", out_dir / "data" / f"{split}.jsonl")
    by_source = Counter((r.kind, str(r.provenance.get("corpus", "unknown")),
                         str(r.provenance.get("licence", "unknown"))) for part in rows.values() for r in part)
    total = sum(len(v) for v in rows.values())
    body = [f"# {title}", "", CONTENT_WARNING, "",
            f"{len(rows['train'])} train and {len(rows['test'])} test preference pairs (`prompt`, `chosen`, "
            "`rejected`) for DPO, built with the Safer-Instruct method (Shi et al. 2023): an instruction induced "
            "from a real harmful text, a safe expert response as `chosen`, the harmful text as `rejected`, mixed "
            "with helpful pairs so that a model does not learn to refuse everything.", "",
            "```python", "from datasets import load_dataset", "ds = load_dataset(\"<this repo or folder>\")", "```",
            "", *INTENDED_USE, *licence_section(by_source), *GATING,
            *citation_section(sorted({corpus for _, corpus, _ in by_source}))]
    report = _build_report(pref_dir / "README.md")
    card = dataset_card(dataset_card_data({s: f"data/{s}.jsonl" for s in SPLITS}, total, title),
                        "\n".join(body + report))
    card.save(out_dir / "README.md")
    return out_dir


def _build_report(card_path: Path) -> list[str]:
    """The body of the card build_preferences wrote (funnel, counts, leakage, params), headings one level down."""
    if not card_path.exists():
        return []
    text = card_path.read_text(encoding="utf-8")
    if text.startswith("---\n"):
        text = text.split("\n---\n", 1)[1]
    lines = [line for line in text.replace(CONTENT_WARNING, "").splitlines() if not line.startswith("# ")]
    cut = next((i for i, line in enumerate(lines) if line in ("## Intended use", "## Access", "## Citation")),
               len(lines))  # sections this card already has
    return ["## Build report", "", *("#" + line if line.startswith("#") else line for line in lines[:cut])]


def publish_model(model_dir: Path, out_dir: Path, name: str, base_model: str | None, dataset_repo: str | None,
                  metrics: Mapping, title: str | None = None) -> Path:
    """Copy a saved model, give its tokenizer a real ``model_max_length`` and write the model card."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no saved model here (config.json missing); run the training stages "
                        "(`dvc repro`) or name another with --model NAME=DIR")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model_dir, out_dir, ignore=lambda _d, names: [n for n in names if n in _NOT_PUBLISHED])
    fix_model_max_length(out_dir)
    trained = _read_json(model_dir / "training_config.json")
    data = ModelCardData(
        base_model=base_model, datasets=[dataset_repo] if dataset_repo else None, language=["en"],
        license="other", license_name="mixed-sources-research-only", library_name="transformers",
        pipeline_tag="text-generation", tags=["safety", "dpo" if "dpo" in name else "sft", "safer-instruct", "trl"],
        model_name=name, **GATE_METADATA)
    model_card(data, "\n".join(_model_body(title or name, name, trained, base_model, dataset_repo, metrics))).save(
        out_dir / "README.md")
    return out_dir


def _model_body(title: str, name: str, trained: Mapping, base_model: str | None, dataset_repo: str | None,
                metrics: Mapping) -> list[str]:
    stage, params = trained.get("stage", "unknown stage"), trained.get("params", {})
    data = f"[{dataset_repo}](https://huggingface.co/datasets/{dataset_repo})" if dataset_repo else "built by it"
    return [f"# {title}", "",
            f"A causal language model fine-tuned by the Safer-Instruct pipeline (stage `{stage}`) from "
            f"`{base_model or 'the base model'}` on the preference data {data}. It is a research artefact: "
            "small, English only, evaluated with automatic judges.", "",
            "**Content warning.** Training data included harmful text as the *dispreferred* side of each pair; the "
            "model may still produce harmful content.", "",
            "## Training", "", "```json", json.dumps(params, indent=2, sort_keys=True), "```",
            "", "`training_config.json` beside the weights records the full trainer config, data hashes and library "
            "versions.", "", *eval_section(metrics, highlight=name),
            "## Licence", "", "`license: other`: the base model's licence applies, and the training data mixes "
            "MIT, Apache-2.0, CC BY-NC and research-only sources (see the dataset card), so use the model for "
            "non-commercial research only.", "", *MODEL_INTENDED_USE, *MODEL_GATING, *citation_section([]),
            "The dataset card also cites each source corpus of the training data.", ""]


def _rate_cell(entry: Mapping) -> str:
    n, rate = entry.get("judged", entry.get("n", 0)), entry.get("refusal_rate")
    if not n or rate is None:
        return "n/a"
    # metrics/eval.json carries the interval (refusal_ci); files written before it did get one from the rate
    lo, hi = entry.get("refusal_ci") or wilson_interval(round(rate * n), n)
    return f"{rate:.1%} [{lo:.1%}, {hi:.1%}]"


def eval_section(metrics: Mapping, highlight: str | None = None) -> list[str]:
    """Refusal rate per model, prompt kind and evaluation set, with 95% intervals (from metrics/eval.json)."""
    models = metrics.get("models", {})
    if not models:
        return ["## Evaluation", "", "No evaluation results were available when this card was written.", ""]
    rows = [(f"**{name}**" if name == highlight else name, label, eval_set, e.get("judged", e.get("n", 0)),
             _rate_cell(e))
            for name, by_label in models.items() for label, sets in by_label.items()
            for eval_set, e in sorted(sets.items(), key=lambda kv: (kv[0] != "overall", kv[0]))]
    return ["## Evaluation", "",
            "Refusal rate as labelled by the evaluation judge, with 95% Wilson intervals in brackets. On `harmful` "
            "prompts higher is safer; on `safe` prompts (harmless look-alikes, XSTest) higher means over-refusal. "
            "Every model evaluated in the same run is shown for comparison.", "",
            *table(("model", "prompts", "eval set", "n", "refusal rate [95% CI]"), rows), ""]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def fix_model_max_length(model_dir: Path) -> int | None:
    """Replace an unknown tokenizer ``model_max_length`` (1e30) by the model's ``max_position_embeddings``."""
    tok_path, cfg = Path(model_dir) / "tokenizer_config.json", _read_json(Path(model_dir) / "config.json")
    limit = cfg.get("max_position_embeddings")
    if not tok_path.exists() or not limit:
        return None
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    if tok.get("model_max_length", _UNKNOWN_LENGTH) >= _UNKNOWN_LENGTH:
        tok["model_max_length"] = int(limit)
        tok_path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return tok["model_max_length"]


def publish(pref_dir: Path, models: Mapping[str, Path], metrics_path: Path | None, out_dir: Path, namespace: str,
            base_model: str | None, prefix: str = "saferinstruct") -> list[Target]:
    """Write the dataset and every model under ``out_dir``; returns what to upload where."""
    out_dir = Path(out_dir)
    metrics = _read_json(Path(metrics_path)) if metrics_path else {}
    dataset_repo = f"{namespace}/{prefix}-preferences"
    targets = [Target(publish_dataset(pref_dir, out_dir / "dataset"), dataset_repo, "dataset")]
    for name, model_dir in models.items():
        # the DPO model's base is the SFT model when both are published
        base = f"{namespace}/{prefix}-sft" if name == "dpo" and "sft" in models else base_model
        repo_id = f"{namespace}/{prefix}-{name}"
        folder = publish_model(model_dir, out_dir / "models" / name, name, base, dataset_repo, metrics,
                               title=repo_id.split("/")[1])
        targets.append(Target(folder, repo_id, "model"))
    return targets


def push(targets: list[Target], token: str, private: bool = True, gated: bool = True,
         api_factory: Callable | None = None) -> list[str]:
    """Create each repository (private unless asked otherwise), upload its folder, ask for manual gating. Returns
    the repository URLs."""
    if not token:
        raise UserError("no Hub token: set HF_TOKEN to a write token (huggingface.co/settings/tokens) to push")
    if api_factory is None:
        from huggingface_hub import HfApi as api_factory
    api = api_factory(token=token)
    urls = []
    for t in targets:
        url = api.create_repo(t.repo_id, repo_type=t.repo_type, private=private, exist_ok=True)
        api.upload_folder(repo_id=t.repo_id, folder_path=str(t.folder), repo_type=t.repo_type,
                          commit_message="saferinstruct publish")
        if gated:
            api.update_repo_settings(t.repo_id, gated="manual", repo_type=t.repo_type)
        urls.append(str(url))
    return urls
