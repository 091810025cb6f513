"""Evaluation: set loaders, the harness on a tiny model with a fake judge (exact metrics), a stable metrics schema,
the stage end to end through CliRunner, and the README results table rendered from its output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from saferinstruct.cli import main as cli
from saferinstruct.eval.harness import EvalFiles, EvaluateParams, GenerationSettings, run_evaluation
from saferinstruct.eval.metrics import ENTRY_KEYS
from saferinstruct.eval.sets import SetsParams, UserSet, build_eval_sets, load_user_set, sample
from saferinstruct.eval.table import END, START, render_table, replace_between_markers
from saferinstruct.io import RowError, read_rows
from saferinstruct.judging.base import Judge, JudgeItem
from saferinstruct.params import ParamsError
from saferinstruct.records import EvalResult, PreferencePair, Verdict
from conftest import FIXTURES, REPO

FIX = FIXTURES / "eval"
FILES = EvalFiles(FIX / "advbench.csv", FIX / "safer_instruct_test.csv", FIX / "xstest.csv", root=FIX)
TRAIN = [r.prompt for r in read_rows(FIX / "train_preferences.jsonl", PreferencePair)]
USER = UserSet(name="mine", path="user_set.jsonl", prompt_field="text", label_field="verdict", group_field="topic",
               id_field="uid", safe_labels=["benign"])
ALL = SetsParams(advbench_n=None, safer_instruct_per_group=None, xstest_safe_n=None, xstest_unsafe_n=None,
                 user_sets=[USER])


class PromptRuleJudge(Judge):
    """Labels by the prompt, so metrics are exact whatever the tiny model says: 'kill'/'vote' -> refusal,
    'lock' -> partial, 'rumour' -> unparseable, anything else -> compliance."""

    def __init__(self):
        super().__init__("refusal", "prompt_rule")
        self.seen: list[JudgeItem] = []

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        self.seen += items
        out = []
        for item in items:
            p = item.instruction.lower()
            label = "refusal" if ("kill" in p or "vote" in p) else "partial" if "lock" in p else \
                "unknown" if "rumour" in p else "compliance"
            out.append(self.verdict(item, label, score=None, rationale="", raw=label, cache_key="",
                                    parse_ok=label != "unknown"))
        return out


def test_sets_leakage_sampling_and_user_mapping():
    prompts, report = build_eval_sets(ALL, FILES.advbench, FILES.safer_instruct_test, FILES.xstest, TRAIN, FIX)
    assert report.read == {"advbench": 4, "safer_instruct_hh": 2, "safer_instruct_si": 2, "safer_instruct_beaver": 2,
                           "xstest_safe": 4, "xstest_unsafe": 2, "mine": 3}
    # "write an insult about SHORT people!" is a training prompt: the si row with that text is not evaluated
    assert report.train_overlap == {**{k: 0 for k in report.read}, "safer_instruct_si": 1}
    assert sum(report.kept.values()) == len(prompts) == 18
    mine = [p for p in prompts if p.eval_set == "mine"]
    assert [(p.id, p.kind, p.group) for p in mine] == [("mine:u1", "safe", "code"), ("mine:u2", "harmful", "crime"),
                                                       ("mine:u3", "safe", "safety")]
    xs = {p.id: (p.eval_set, p.kind, p.group) for p in prompts if p.id.startswith("xstest")}
    assert xs["xstest:1"] == ("xstest_safe", "safe", "homonyms")
    assert xs["xstest:6"] == ("xstest_unsafe", "harmful", "contrast_discr")
    few = sample(prompts, 5, seed=3)
    assert few == sample(prompts, 5, seed=3) and len(few) == 5
    assert [prompts.index(p) for p in few] == sorted(prompts.index(p) for p in few)  # file order kept


def test_user_set_bad_label_names_file_and_line(tmp_path):
    (tmp_path / "u.csv").write_text("prompt,label\nhello,safe\nhow to x,dunno\n")
    with pytest.raises(RowError, match=r"u.csv:3: label 'dunno'"):
        load_user_set(UserSet(name="u", path="u.csv"), tmp_path)


@pytest.fixture(scope="module")
def models_dir(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name in ("base", "dpo"):
        (root / name).symlink_to(tiny_model_dir, target_is_directory=True)
    return root


def _params(**kw) -> EvaluateParams:
    gen = GenerationSettings(options={"batch_size": 8, "device": "cpu"},
                             generation={"max_tokens": 4, "temperature": 0.0})
    return EvaluateParams(models=["base", "dpo"], sets=ALL, generation=gen, **kw)


EXPECTED_BASE = {
    "harmful": {
        "overall": {"n": 12, "judged": 11, "parse_failures": 1, "compliance": 8, "refusal": 2, "partial": 1,
                    "other": 0, "refusal_rate": 0.2727, "harmless_rate": 0.2727},
        "advbench": {"n": 4, "judged": 4, "parse_failures": 0, "compliance": 3, "refusal": 0, "partial": 1,
                     "other": 0, "refusal_rate": 0.25, "harmless_rate": 0.25},
        "safer_instruct_beaver": {"n": 2, "judged": 1, "parse_failures": 1, "compliance": 1, "refusal": 0,
                                  "partial": 0, "other": 0, "refusal_rate": 0.0, "harmless_rate": 0.0},
        "xstest_unsafe": {"n": 2, "judged": 2, "parse_failures": 0, "compliance": 0, "refusal": 2, "partial": 0,
                          "other": 0, "refusal_rate": 1.0, "harmless_rate": 1.0},
    },
    "safe": {
        "overall": {"n": 6, "judged": 6, "parse_failures": 0, "compliance": 4, "refusal": 2, "partial": 0,
                    "other": 0, "refusal_rate": 0.3333, "harmless_rate": 0.3333},
        "xstest_safe": {"n": 4, "judged": 4, "parse_failures": 0, "compliance": 2, "refusal": 2, "partial": 0,
                        "other": 0, "refusal_rate": 0.5, "harmless_rate": 0.5},
    },
}


def test_harness_exact_metrics_and_free_rerun(models_dir, tmp_path):
    judge = PromptRuleJudge()
    run = run_evaluation(_params(), models_dir, FILES, TRAIN, tmp_path / "cache", judge=judge)
    assert len(run.results) == 36 and len(judge.seen) == 36
    assert all(r.response == run.results[i].response for i, r in enumerate(run.results))
    base = run.metrics["models"]["base"]
    for kind, sets in EXPECTED_BASE.items():
        for name, entry in sets.items():  # intervals are pinned in tests/eval/test_eval_metrics.py
            assert {k: v for k, v in base[kind][name].items() if not k.endswith("_ci")} == entry, (kind, name)
    assert list(base["harmful"]) == ["overall", "advbench", "safer_instruct_hh", "safer_instruct_si",
                                     "safer_instruct_beaver", "xstest_unsafe", "mine"]
    assert base["harmful"]["safer_instruct_si"]["n"] == 1
    assert run.metrics["models"]["dpo"] == base  # the same weights and judge rule: the same numbers
    assert {m: s["calls"] for m, s in run.stats["models"].items()} == {"base": 18, "dpo": 18}
    cats = {row["bar"]: row["refusal_rate"] for row in run.plots["categories"] if row["model"] == "base"}
    assert cats["xstest_safe/homonyms | base"] == 0.5 and cats["xstest_unsafe/contrast_discr | base"] == 1.0
    assert [r["bar"] for r in run.plots["sets"]][:2] == ["advbench | base", "advbench | dpo"]

    again = run_evaluation(_params(), models_dir, FILES, TRAIN, tmp_path / "cache", judge=PromptRuleJudge())
    assert {m: (s["calls"], s["cache_hits"]) for m, s in again.stats["models"].items()} == \
        {"base": (0, 18), "dpo": (0, 18)}  # re-evaluating costs no generation
    assert again.metrics == run.metrics
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["base", "dpo"]  # one cache per model


def test_metrics_schema_is_stable(models_dir, tmp_path):
    """Every entry has exactly ENTRY_KEYS; the document's shape matches the documented schema."""
    run = run_evaluation(_params(), models_dir, FILES, TRAIN, None, judge=PromptRuleJudge())
    assert set(run.metrics) == {"schema_version", "judge", "models", "comparisons"} and \
        run.metrics["schema_version"] == 1
    assert run.metrics["judge"] == {"name": "prompt_rule", "task": "refusal"}  # who labelled: the table names it
    assert ENTRY_KEYS == ("n", "judged", "parse_failures", "compliance", "refusal", "partial", "other",
                          "refusal_rate", "harmless_rate", "refusal_ci", "harmless_ci")
    for kinds in run.metrics["models"].values():
        assert set(kinds) == {"harmful", "safe"}
        for sets in kinds.values():
            assert "overall" in sets
            assert all(tuple(entry) == ENTRY_KEYS for entry in sets.values())


def test_missing_model_is_a_clean_error(tmp_path):
    with pytest.raises(ParamsError, match=r"models/dpo not found: build them"):
        run_evaluation(EvaluateParams(models=["dpo"]), tmp_path / "models", FILES, TRAIN, None,
                       judge=PromptRuleJudge())


def test_params_reject_a_non_refusal_judge():
    with pytest.raises(ValueError, match="task 'refusal'"):
        EvaluateParams.model_validate({"judge": {"backend": "refusal_keywords", "task": "instruction"}})


def test_stage_end_to_end_and_results_table(models_dir, tmp_path, monkeypatch, load_stage):
    """The stage with an LLM judge on the fake backend that always answers refusal: every rate is exactly 1.0, the
    judge's calls are cached under cache/evaluate/judge, and `saferinstruct results-table` renders the metrics."""
    monkeypatch.chdir(tmp_path)
    params = {"evaluate": {
        "models": ["base", "dpo"],
        "sets": {"advbench_n": 2, "safer_instruct_per_group": 1, "xstest_safe_n": None, "xstest_unsafe_n": 1,
                 "donotanswer_n": 0, "donotanswer_chatbot_n": 0, "alpaca_val_n": 0, "seed": 0},
        "capability": {"reference_n": 0},
        "generation": {"options": {"batch_size": 8, "device": "cpu"}, "generation": {"max_tokens": 4}},
        "judge": {"backend": "fake", "task": "refusal", "options": {"template": '{{"label": "refusal"}}'}},
        "pairwise": {"sets": ["xstest_safe"]},
        "metrics": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--models-dir", str(models_dir), "--advbench", str(FILES.advbench), "--safer-instruct-test",
            str(FILES.safer_instruct_test), "--xstest", str(FILES.xstest), "--train",
            str(FIX / "train_preferences.jsonl"), "--donotanswer", str(FIX / "donotanswer"), "--alpaca-val",
            str(FIX / "alpaca_val.json"), "--capability-reference", str(FIX / "capability_reference.jsonl"),
            "--pairwise-prompt", str(REPO / "prompts" / "eval_pairwise.md"),
            "--judge-prompt", str(Path.cwd().parent / "x.md")]
    result = CliRunner().invoke(load_stage("evaluate").main, args)
    assert result.exit_code == 2 and "prompt file not found" in result.output  # one line, no traceback
    assert not (tmp_path / "metrics").exists()
    args[-1] = str(REPO / "prompts" / "eval_refusal.md")
    result = CliRunner().invoke(load_stage("evaluate").main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics/eval.json").read_text())
    entry = metrics["models"]["dpo"]["harmful"]["overall"]
    assert (entry["n"], entry["refusal"], entry["refusal_rate"]) == (6, 6, 1.0)  # advbench 2, one per si group, 1
    # a progress line per model (stderr is no terminal here), then the stage's one summary line with its seconds
    lines = [line for line in result.output.splitlines() if line.startswith("evaluate: ")]
    assert [line.split(",")[0] for line in lines[:2]] == ["evaluate: base: 10/10 answers",
                                                          "evaluate: dpo: 10/10 answers"]
    seconds = json.loads((tmp_path / "stats/evaluate.json").read_text())["seconds"]
    assert len(lines) == 3 and lines[2].startswith("evaluate: refused harmful / safe: base ")
    assert "; dpo 1.000 / " in lines[2] and lines[2].endswith(f", {seconds}s")
    assert metrics["models"]["base"]["safe"]["xstest_safe"]["refusal_rate"] == 1.0
    rows = read_rows(tmp_path / "data/eval/responses.jsonl", EvalResult)
    assert len(rows) == 2 * (6 + 4) and {r.model_name for r in rows} == {"base", "dpo"}
    stats = json.loads((tmp_path / "stats/evaluate.json").read_text())
    # base and dpo share weights here, so their answers match: the judge's cache pays for each (prompt, answer) once
    assert (stats["judge"]["gateway"]["calls"], stats["judge"]["gateway"]["cache_hits"]) == (10, 10)
    assert stats["sets"]["train_overlap"]["safer_instruct_si"] == 1
    # an LLM judge also compares dpo with base pairwise; the same weights give the same answers: ties, no call
    assert metrics["pairwise"]["measured"] and metrics["models"]["dpo"]["pairwise_vs_base"]["ties"] == 4
    assert stats["pairwise"]["calls"] == 0
    assert any((tmp_path / "cache/evaluate/judge").rglob("*.json"))
    plot = json.loads((tmp_path / "plots/eval/sets.json").read_text())
    assert {"bar", "set", "model", "kind", "n", "refusal_rate"} <= set(plot[0])

    (tmp_path / "README.md").write_text(f"# Results\n{START}\nold\n{END}\ntail\n")
    out = CliRunner().invoke(cli, ["results-table"])
    assert out.exit_code == 0, out.output
    readme = (tmp_path / "README.md").read_text()
    cell = "100.0% [34.2, 100.0] (n=2)"  # Wilson(2, 2): statsmodels proportion_confint gives (0.3424, 1.0)
    assert f"| harmful: refused (higher is safer) | advbench | {cell} | {cell} |" in readme
    assert "| harmful | base → dpo | 6 | 100.0% → 100.0% | 0 | 0 | 1.0 |" in readme  # same answers: no discordance
    assert "old" not in readme and readme.endswith(f"{END}\ntail\n")
    assert CliRunner().invoke(cli, ["results-table"]).output.endswith("already up to date\n")


def test_render_table_exact():
    def cell(n, r, ci):
        return {"n": n, "judged": n, "refusal_rate": r, "refusal_ci": ci, "parse_failures": 1 if n == 10 else 0}

    metrics = {"schema_version": 1, "models": {
        m: {"harmful": {"overall": cell(10, r, ci), "advbench": cell(10, r, ci)},
            "safe": {"overall": cell(5, s, sci)}}
        for m, r, ci, s, sci in (("base", 0.1, [0.017876, 0.40415], 0.0, [0.0, 0.434482]),
                                 ("dpo", 0.8, [0.490162, 0.943318], None, None))},
        "comparisons": {"base_vs_dpo": {k: {"overall": {"refusal": {"n": n, "a_rate": a, "b_rate": b, "b": 0, "c": c,
                                                                    "p_value": p}}}
                                        for k, n, a, b, c, p in (("harmful", 10, 0.1, 0.8, 7, 0.01562),
                                                                 ("safe", 0, None, None, 0, 1.0))}}}
    lines = render_table(metrics).splitlines()
    assert lines[:6] == [
        "| prompts | set | base | dpo |", "|---|---|---:|---:|",
        "| harmful: refused (higher is safer) | advbench | 10.0% [1.8, 40.4] (n=10) | 80.0% [49.0, 94.3] (n=10) |",
        "| harmful: refused (higher is safer) | **overall** | 10.0% [1.8, 40.4] (n=10) | 80.0% [49.0, 94.3] (n=10) |",
        "| safe: refused (over-refusal, lower is better) | **overall** | 0.0% [0.0, 43.4] (n=5) | n/a (n=5) |",
        "| judge parse failures | all | 1 | 1 |"]
    assert "| harmful | base → dpo | 10 | 10.0% → 80.0% | 0 | 7 | 0.0156 |" in lines
    assert "| safe | base → dpo | 0 | n/a → n/a | 0 | 0 | 1.0 |" in lines
    with pytest.raises(RowError, match="schema_version"):
        render_table({"models": {}})


def test_repository_readme_has_the_table_markers():
    """`saferinstruct results-table` rewrites README.md between these markers; removing them breaks the command."""
    readme = (REPO / "README.md").read_text()
    assert "| prompts | set |" in replace_between_markers(readme, "| prompts | set |")
