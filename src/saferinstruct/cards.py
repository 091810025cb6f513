"""Hugging Face Hub cards: YAML metadata, licence table per source corpus, citations, intended use, content warning
and gating advice. Shared by the data card build_preferences writes (:mod:`saferinstruct.datacard`) and by
``saferinstruct publish`` (:mod:`saferinstruct.publish`, which adds the evaluation table)."""

from __future__ import annotations

from collections.abc import Mapping

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

CONTENT_WARNING = (
    "**Content warning.** The `rejected` side of every safety pair is a real harmful text (hate speech, self-harm, "
    "sexual or violent content) taken verbatim from a public research corpus, after PII scrubbing. It is there to be "
    "*dispreferred*; do not use it as a generation target.")

INTENDED_USE = [
    "## Intended use", "",
    "- **For:** research on safety alignment: preference optimisation (DPO and similar) that teaches a model to "
    "refuse harmful requests while still helping with harmless ones, and the study of automatically built preference "
    "data (Safer-Instruct, Shi et al. 2023).",
    "- **Not for:** generating, classifying or moderating content in production; training a model to produce the "
    "`rejected` texts; any commercial use (several sources are non-commercial or research-only, see *Licences*).",
    "- **Limits:** instructions were written by a small model and judged by automatic judges; labels are noisy, "
    "English only, and the harm categories reflect the source corpora, not a complete taxonomy of harm.", ""]

GATING = [
    "## Access", "",
    "Because the data holds verbatim harmful text and research-only sources, publish it **gated** (manual approval, "
    "with the licence terms of the sources shown to requesters) or **private**, never as a public, ungated "
    "repository. `saferinstruct publish --push` creates private repositories and asks for manual gating.", ""]

MODEL_INTENDED_USE = [
    "## Intended use", "",
    "- **For:** research on safety alignment: comparing refusal of harmful and of harmless requests across training "
    "recipes (SFT, DPO on Safer-Instruct data), and as a baseline for further work.",
    "- **Not for:** deployment, moderation or any user-facing product; the safety behaviour is measured only on the "
    "evaluation sets below, by automatic judges, and the model still complies with some harmful requests.",
    "- **Limits:** a small English model; intervals are wide at these sample sizes.", ""]

MODEL_GATING = [
    "## Access", "",
    "Publish it **gated** (manual approval) or **private**: it was trained on research-only and non-commercial "
    "data and can still produce harmful text. `saferinstruct publish --push` creates private repositories and asks "
    "for manual gating.", ""]

LICENCE_NOTE = (
    "The pipeline's sources carry different licences (MIT, Apache-2.0, CC BY-NC, and \"academic purposes only\" with "
    "no licence stated; the table below lists the ones in this file), so the metadata says `license: other`: "
    "**no single licence covers this dataset**. Each row keeps its "
    "source's licence in `provenance.licence`; the most restrictive source present governs redistribution and use of "
    "the whole file, which in practice means **non-commercial research use only**.")

PAPER_BIBTEX = """@article{shi2023saferinstruct,
  title   = {Safer-Instruct: Aligning Language Models with Automated Preference Data},
  author  = {Shi, Taiwei and Chen, Kai and Zhao, Jieyu},
  journal = {arXiv preprint arXiv:2311.08685},
  year    = {2023},
  url     = {https://arxiv.org/abs/2311.08685}
}"""

# corpus-name prefix (as in params.yaml `ingest.corpora[].name` / `build_preferences.helpful[].name`) -> BibTeX
SOURCE_BIBTEX: dict[str, str] = {
    "safer_instruct": PAPER_BIBTEX,
    "davidson": """@inproceedings{davidson2017automated,
  title     = {Automated Hate Speech Detection and the Problem of Offensive Language},
  author    = {Davidson, Thomas and Warmsley, Dana and Macy, Michael and Weber, Ingmar},
  booktitle = {Proceedings of the 11th International AAAI Conference on Web and Social Media (ICWSM)},
  year      = {2017}
}""",
    "openai_moderation": """@inproceedings{markov2023holistic,
  title     = {A Holistic Approach to Undesired Content Detection in the Real World},
  author    = {Markov, Todor and Zhang, Chong and Agarwal, Sandhini and Eloundou, Tyna and Lee, Teddy and
               Adler, Steven and Jiang, Angela and Weng, Lilian},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2023}
}""",
    "rmhd": """@article{low2020reddit,
  title   = {Natural Language Processing Reveals Vulnerable Mental Health Support Groups and Heightened Health
             Anxiety on Reddit During COVID-19: Observational Study},
  author  = {Low, Daniel M. and Rumker, Laurie and Talkar, Tanya and Torous, John and Cecchi, Guillermo and
             Ghosh, Satrajit S.},
  journal = {Journal of Medical Internet Research},
  volume  = {22},
  number  = {10},
  year    = {2020}
}""",
    "hh_rlhf": """@article{bai2022training,
  title   = {Training a Helpful and Harmless Assistant with Reinforcement Learning from Human Feedback},
  author  = {Bai, Yuntao and others},
  journal = {arXiv preprint arXiv:2204.05862},
  year    = {2022}
}""",
}

# what the Hub shows (and asks) a requester once the repository is gated
GATE_METADATA = {
    "extra_gated_prompt": "This repository holds or was trained on verbatim harmful text (hate speech, self-harm, "
                          "sexual and violent content) from research corpora whose licences include non-commercial "
                          "and academic-only terms. Access is for non-commercial safety research.",
    "extra_gated_fields": {"Affiliation": "text", "Intended use": "text",
                           "I will use this for non-commercial research only and respect the source licences":
                               "checkbox"},
}

DATASET_TAGS = ["safety", "dpo", "preference", "alignment", "rlhf", "safer-instruct"]


def citation_key(corpus: str) -> str | None:
    """The BibTeX key citing a corpus, or None for a corpus this module does not know (a user's own)."""
    entry = next((bib for prefix, bib in SOURCE_BIBTEX.items() if corpus.startswith(prefix)), None)
    return entry.split("{", 1)[1].split(",", 1)[0] if entry else None


def citation_section(corpora: list[str]) -> list[str]:
    """The paper first, then each source corpus present (once per entry), as one BibTeX block."""
    entries = [PAPER_BIBTEX] + [bib for prefix, bib in SOURCE_BIBTEX.items()
                                if bib != PAPER_BIBTEX and any(c.startswith(prefix) for c in corpora)]
    unknown = sorted(c for c in set(corpora) if citation_key(c) is None)
    note = [f"Also cite the source of: {', '.join(unknown)}.", ""] if unknown else []
    return ["## Citation", "", "Cite the Safer-Instruct paper and the source corpora:", "", "```bibtex",
            "\n\n".join(entries), "```", "", *note]


def table(head: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def licence_section(pairs_by_source: Mapping[tuple[str, str, str], int]) -> list[str]:
    """Licence table, one row per (kind, corpus, licence) with its pair count and citation key."""
    rows = [(kind, corpus, licence, n, citation_key(corpus) or "(cite the source)")
            for (kind, corpus, licence), n in sorted(pairs_by_source.items())]
    return ["## Licences", "", LICENCE_NOTE, "",
            *table(("kind", "source corpus", "licence", "pairs", "citation"), rows), ""]


def dataset_card_data(data_files: Mapping[str, str], rows: int, pretty_name: str) -> DatasetCardData:
    """Card metadata: licence `other`, tags, one `default` config naming each split's file (no guessing, no
    "metadata block not found" warning from `datasets`)."""
    return DatasetCardData(
        license="other", license_name="mixed-sources-research-only", language=["en"],
        task_categories=["text-generation"], tags=DATASET_TAGS, size_categories=[_size_category(rows)],
        pretty_name=pretty_name, **GATE_METADATA,
        configs=[{"config_name": "default",
                  "data_files": [{"split": split, "path": path} for split, path in data_files.items()]}])


def _size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < bound:
            return name
    return "100K<n<1M"


def with_front_matter(data: DatasetCardData | ModelCardData, body: str) -> str:
    return f"---\n{data.to_yaml()}\n---\n\n{body.rstrip()}\n"


def dataset_card(data: DatasetCardData, body: str) -> DatasetCard:
    return DatasetCard(with_front_matter(data, body))


def model_card(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(with_front_matter(data, body))
