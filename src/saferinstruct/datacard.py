"""The data card written beside the preference data: what is in it, where it came from, what removed what.

It is a Hub dataset card (YAML metadata naming the split files, licence, tags), so `datasets.load_dataset` on the
folder needs no arguments and prints no warning; `saferinstruct publish` reuses its body as the build report."""

from __future__ import annotations

import yaml

from saferinstruct.cards import CONTENT_WARNING, GATING, INTENDED_USE, LICENCE_NOTE, citation_section, \
    dataset_card_data, with_front_matter
from saferinstruct.params import Params

WARNING = CONTENT_WARNING
DATA_FILES = {"train": "train.jsonl", "test": "test.jsonl"}


def _table(head: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _by(stats: dict, key: str) -> list[str]:
    counts = stats[key]
    return _table(("kind/" + key.removeprefix("by_"), "pairs"), sorted(counts.items())) if counts else ["(none)"]


def render(stats: dict, params: Params, models: dict) -> str:
    """Data card (YAML metadata + Markdown) from the stage's stats, its params and the model identities that made
    the data."""
    data = dataset_card_data(DATA_FILES, stats["train"] + stats["test"], "Safer-Instruct preference data")
    corpora = [key.split("/", 1)[1] for key in stats["by_corpus"]]
    body = render_body(stats, params, models) + "\n".join(["", *INTENDED_USE, *GATING, *citation_section(corpora)])
    return with_front_matter(data, body)


def render_body(stats: dict, params: Params, models: dict) -> str:
    """The Markdown part: contents, funnel, counts, licences, leakage, models, params."""
    f = stats["funnel"]
    fmt = params.model_dump()["format"]
    lines = ["# Safer-Instruct preference data", "", WARNING, "",
             f"{stats['train']} train and {stats['test']} test pairs in TRL's standard preference format "
             f"(`{fmt}` variant): `prompt`, `chosen`, `rejected`, plus `id`, `parent_id`, `category`, `kind` "
             "(`safety` or `helpful`) and `provenance`. Load with `datasets.load_dataset(\"data/preferences\")` (this "
             "folder; the metadata above names the split files).",
             "", "## Funnel", ""]
    funnel = [
        ("source texts (ingest)", f["source_texts"]), ("instructions kept by the judge", f["kept_instructions"]),
        ("expert responses", f["expert_responses"]), ("responses with outcome ok", f["responses_ok"]),
        ("safety pairs (safe response, no leak, no duplicate)", f["safety_pairs"]),
        ("helpful pairs available", f["helpful_pool"]),
        (f"helpful pairs mixed in ({stats['helpful_per_safety']} per safety pair)", f["helpful_pairs"])]
    lines += _table(("step", "rows"), funnel)
    lines += ["", "Rejected here, by reason:", ""]
    lines += _table(("kind", "reason", "rows"), [(k, r, n) for k, v in stats["rejected"].items()
                                                for r, n in v.items()]) if any(stats["rejected"].values()) \
        else ["(none)"]
    lines += ["", "## Counts per category", "", *_by(stats, "by_category"), "",
              "## Counts per source corpus", "", *_by(stats, "by_corpus"), "",
              "## Licences", "",
              LICENCE_NOTE, "",
              *_by(stats, "by_licence"), "", "## Evaluation leakage", "",
              f"Prompts equal to an evaluation prompt (NFKC, lower case, punctuation and spacing folded) were removed: "
              f"{stats['eval_leak']['safety']} safety and {stats['eval_leak']['helpful']} helpful. Evaluation files "
              "checked: " + (", ".join(f"`{e['path']}`" for e in params.model_dump()["eval_files"]) or "none") + ".",
              "Training and evaluation prompts are therefore disjoint by normalised text; paraphrases are not "
              "detected.", "", "## Models", ""]
    lines += _table(("role", "identity"), [(k, ", ".join(v) or "(none)") for k, v in models.items()])
    lines += ["", "## Params (build_preferences)", "", "```yaml",
              yaml.safe_dump(params.model_dump(), sort_keys=True).rstrip(), "```", ""]
    return "\n".join(lines)
