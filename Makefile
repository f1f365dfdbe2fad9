# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON3 ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON3) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# The browser tests drive Debian's chromium; Playwright never downloads one.
	@test -x /usr/bin/chromium || apt-get install -y --no-install-recommends chromium \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium)
	@touch $@

demo: $(INSTALLED)
	$(BIN)/fieldwise demo

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy core connectors

test: lint typecheck
	$(BIN)/pytest

bench: $(INSTALLED)
	PYTHONPATH=. $(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
