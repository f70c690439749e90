# transferlab — every target does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo train sweep report test test-fast lint format clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

# The demo, train, sweep and report need transferlab alone; tests and lint need the dev tools too.
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install transferlab with dev tools (re-runs only when pyproject.toml changed)

demo: $(RUN_STAMP) ## The main job, offline: source pretraining, strategy comparison on the target, report; then which source
	$(PY) -m transferlab.demo $(ARGS)
	$(PY) -m transferlab.demo_sources

train: $(RUN_STAMP) ## One run: make train ARGS="strategy=partial backbone=resnet18"
	$(PY) -m transferlab.train $(ARGS)

sweep: $(RUN_STAMP) ## A sweep: make sweep ARGS="experiment=compare_strategies"
	$(PY) -m transferlab.train -m $(ARGS)

report: $(RUN_STAMP) ## Rebuild a sweep's report: make report ARGS=outputs/<exp>/multiruns/<time>
	$(PY) -m transferlab.report $(ARGS)

test: $(STAMP) ## Run the whole test suite (slow end-to-end tests included)
	$(PY) -m pytest -q -n 2 --durations=25 $(ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest -q -n 2 -m "not slow" $(ARGS)

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP) ## Format with ruff
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

clean: ## Remove outputs, caches and the virtual environment
	rm -rf $(VENV) outputs multirun .cache .pytest_cache .ruff_cache wandb src/*.egg-info
