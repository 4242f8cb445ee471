# perflib — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help setup demo test bench clean

help: ## list every target with what it does
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(INSTALLED) ## create .venv and install perflib (editable) with its test extras

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

demo: setup ## record 300 real tracked CPU jobs into data/perflib.db and print a summary
	$(VENV)/bin/perflib demo --jobs 300

test: setup ## run the whole test suite (SQLite and a throwaway PostgreSQL server)
	$(PYTHON) -m pytest -q

bench: setup ## run the benchmarks; figures as ratios, written to reports/benchmarks.json
	$(PYTHON) -m perflib.bench

clean: ## remove the virtual environment and generated files (keeps data/perflib.db)
	rm -rf $(VENV) .pytest_cache reports/*.html reports/*.json
