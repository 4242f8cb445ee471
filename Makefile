# perflib — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help setup report demo test bench bench-scale serve lab comfyui-e2e clean

help: ## list every target with what it does
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: $(INSTALLED) ## create .venv and install perflib (editable) with every extra and the test one

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[all,test]'
	touch $(INSTALLED)

report: setup ## main job: weekly HTML report into reports/ (an empty database first gets demo data)
	$(VENV)/bin/perflib init-db
	$(VENV)/bin/perflib simulate --if-empty
	$(VENV)/bin/perflib report --weeks-back 1

demo: setup ## record 300 real tracked CPU jobs into data/perflib.db and print a summary
	$(VENV)/bin/perflib demo --jobs 300

test: setup ## run the tests (SQLite and a throwaway PostgreSQL server) and the notebooks (nbval)
	PERFLIB_DATABASE_URL=sqlite:///$$(mktemp -d)/perflib-test.db $(PYTHON) -m pytest -q -rs \
		--nbval-lax tests notebooks

bench: setup ## run the benchmarks; figures as ratios, written to reports/benchmarks.json
	$(PYTHON) -m tools.bench

bench-scale: setup ## not in CI: 1M and 10M jobs in PostgreSQL, 1M in SQLite (SIZES=, SQLITE_SIZES=); maintain, analysis, report, 64 writers → reports/benchmarks-scale.json
	$(PYTHON) -m tools.bench_scale $(if $(SIZES),--sizes $(SIZES)) \
		$(if $(SQLITE_SIZES),--sqlite-sizes $(SQLITE_SIZES))

.PHONY: screenshots
screenshots: setup ## the weekly report and the live dashboard as PNGs at 1280 px in reports/screenshots/ (needs chromium)
	$(PYTHON) -m tools.screenshots

serve: setup ## run the HTTP service on 127.0.0.1:8328 (estimate-time, dashboard, metrics)
	$(VENV)/bin/perflib serve

lab: setup ## JupyterLab on notebooks/ with this venv and database (LAB_ARGS="--no-browser --port=8888")
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

comfyui-e2e: setup ## not in CI: real ComfyUI on CPU with the perflib node (set COMFYUI_DIR, COMFYUI_PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[comfyui-e2e]'
	$(PYTHON) scripts/comfyui_e2e.py

clean: ## remove the virtual environment and generated files (keeps data/perflib.db)
	rm -rf $(VENV) .pytest_cache reports/*.html reports/*.json
