# Two commands on a fresh machine: `make run` (the embedded default) and `make test`.
# Both create the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install install-browser run sweep ablation test test-slow test-all lint format dashboard benchmark clean
.DEFAULT_GOAL := help

## list the targets with what each does (the default: `make` alone prints this)
help:
	@awk '/^## /{ d = d (d == "" ? "" : "\n                   ") substr($$0, 4); next } \
		/^[a-z][a-z-]*:/{ if (d != "") printf "  %-16s %s\n", substr($$1, 1, length($$1) - 1), d; d = ""; next } \
		/^[A-Z_]+ \?=/{ next } { d = "" }' $(firstword $(MAKEFILE_LIST))

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

## create the virtual environment in .venv and install the package with its dev tools (the other targets do it first)
install: $(STAMP)

## Debian's chromium for the dashboard test (tests/test_dashboard.py, skipped with the reason without it); needs root
install-browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

## run the whole pipeline on the embedded default (synthetic benchmark, tiny models, CPU); ARGS="..." adds overrides
run: $(STAMP)
	$(VENV)/bin/regionaldiff $(ARGS)

## the two-variant sweep: global-only vs region-aware LDM, one MLflow parent run with two children
sweep: $(STAMP)
	$(VENV)/bin/regionaldiff -m ldm=global,regional $(ARGS)

## the region-awareness ablation (6 arms x 3 seeds, one multirun), then `regionaldiff report`: its table, paired
## tests and figure in docs/results/ablation_regions.md (+ .csv, .png; also logged to the sweep's parent run;
## docs/ablation.md is the curated summary). REPORT_ARGS adds e.g. --note-file NOTES.md;
## LAUNCHER=hydra/launcher=local_parallel runs jobs in parallel
REPORT_ARGS ?=
LAUNCHER ?=
ablation: $(STAMP)
	$(VENV)/bin/regionaldiff experiment=ablation_regions $(LAUNCHER) $(ARGS)
	$(VENV)/bin/regionaldiff report --experiment ablation_regions --out docs/results --name ablation_regions $(REPORT_ARGS)

## speed/memory benchmarks (results: docs/benchmarks.md)
benchmark: $(STAMP)
	$(PY) benchmarks/speed/bench_dataset_cache.py

## the test suite without the end-to-end runs of the real CLI (CPU, 2 cores: see README); what CI runs first
test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## the end-to-end runs of the real CLI (the `slow` marker: whole pipelines, sweeps, reconstruct); CI runs them second
test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

## both tiers in one pytest session
test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## lint and type gates: ruff (lint + format check) and mypy on src/ (settings in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

## apply ruff's fixes and formatting
format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

## MLflow dashboard of the runs under outputs/ (prints each experiment's link in the model-training view)
dashboard: $(STAMP)
	@$(PY) -c "from regionaldiff.tracking.mlflow_run import dashboard_links as d; print('open', *d('sqlite:///$(CURDIR)/outputs/mlflow.db'), sep='\n  ')"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db

## remove the outputs of runs and sweeps (outputs/, multirun/) and pytest's cache
clean:
	rm -rf outputs multirun .pytest_cache
