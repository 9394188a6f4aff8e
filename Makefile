# The two commands of the README: `make demo` and `make test`. Each creates what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv tools test test-fast demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,local]'
	touch $(STAMP)

tools:
	bash scripts/install-tools.sh

## Style, the layers' import contracts (.importlinter) and the types.
lint: venv
	$(BIN)/ruff check handler tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

## The whole test suite (what CI runs).
test: venv tools lint
	bash scripts/ensure-rabbitmq.sh
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest

## Unit tests only: no broker, no helm, nothing slow (the whole suite runs in `make test`).
test-fast: venv
	$(BIN)/python -m pytest -m "not integration and not slow" tests

demo: venv
	bash scripts/ensure-rabbitmq.sh
	$(BIN)/cloud-worker demo

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools .pytest_cache
