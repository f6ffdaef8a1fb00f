# Two entry points: `make run` (quickstart) and `make test` (lint + docs site + tests).
# `make docs` serves the documentation site at http://127.0.0.1:8000 (mkdocs.yml, docs/).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Editable install, so `configs/` at the repo root is found by the entry points.
STAMP := $(VENV)/.installed

.PHONY: run test lint format install clean lock docs docs-build

# requirements.lock pins every package of the tested install; `make lock` refreshes it.
$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e '.[dev]'
	touch $(STAMP)

# Resolve pyproject's ranges afresh in a clean venv and pin the result (then run make test).
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	echo "# pip freeze of a clean install of .[dev] ($$(date -u +%F), $$($(PY) --version)); refresh: make lock" > requirements.lock
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^scatterlab' >> requirements.lock
	rm -rf .lock-venv

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python train.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The site with warnings as errors: a broken link, anchor or figure fails (a few seconds).
docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve $(DOCS_ARGS)

test: lint docs-build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs/* .pytest_cache
