"""The development-set trade-off record (docs/dev_tradeoff.json, DVC plot `dev_tradeoff`): one point per setting tried
and model, refusal of the harmful dev sets pooled against refusal of the safe ones, with 95% Wilson intervals.

Rates come from ``tools/dev_eval.py --out`` ({model dir: {set: {rate, n}}}); only development data, never the
evaluation sets, so the settings can be chosen on it."""

from __future__ import annotations

from pathlib import Path

from saferinstruct.eval.stats import wilson_interval

# Do-Not-Answer's human-chatbot area stays out of the harmful pool: a caring answer, not a refusal, is its goal.
HARMFUL_POOL = ("harm_si", "harm_redteam", "dna:discrimination_exclusion_toxicity_hateful_offensive",
                "dna:information_hazard", "dna:malicious_uses", "dna:misinformation_harms")
SAFE_POOL = ("hh_helpful", "lookalike")


def pooled(rates: dict[str, dict], keys: tuple[str, ...]) -> tuple[int, int]:
    """(refused, n) over the sets of ``keys`` present in ``rates``; each set's count is rate x n rounded."""
    k = n = 0
    for key in keys:
        if key in rates:
            k += round(rates[key]["rate"] * rates[key]["n"])
            n += rates[key]["n"]
    return k, n


def _side(prefix: str, k: int, n: int) -> dict:
    low, high = wilson_interval(k, n) if n else (0.0, 0.0)
    return {f"{prefix}_refused": round(k / n, 4) if n else None, f"{prefix}_low": round(low, 4),
            f"{prefix}_high": round(high, 4), f"{prefix}_n": n}


def tradeoff_row(setting: str, model_dir: str, rates: dict[str, dict]) -> dict:
    """One point: the pooled harmful and safe refusal of ``model_dir`` under ``setting``, and every set's rate."""
    model = Path(model_dir).name
    row = {"setting": setting, "model": f"{setting}: {model}", "model_dir": model_dir}
    row.update(_side("harmful", *pooled(rates, HARMFUL_POOL)))
    row.update(_side("safe", *pooled(rates, SAFE_POOL)))
    row.update({f"dev:{name}": value["rate"] for name, value in rates.items() if "n" in value})
    return row


def merge_rows(existing: list[dict], new: list[dict]) -> list[dict]:
    """``existing`` with ``new`` appended; a point of the same setting and model is replaced (a re-measure)."""
    keys = {(r["setting"], r["model"]) for r in new}
    return [r for r in existing if (r["setting"], r["model"]) not in keys] + new
