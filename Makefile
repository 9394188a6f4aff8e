# The two commands of the README: `make demo` and `make test`. Each creates what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The whole tool chain (tests, linters: what `make test` needs), and the runtime with the
# local extra alone (what `make demo` needs: a fresh clone's demo installs no test tools).
# The demo's is installed with uv (pinned here), which resolves and installs it in seconds
# where pip takes half a minute, and compiles no .pyc ahead (the demo imports a fraction
# of what it installs, botocore's above all); with pip if uv cannot be had.
STAMP  := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
UV_VERSION := 0.13.10

.PHONY: venv tools test test-fast e2e cluster cluster-down demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,local]'
	touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)' \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[local]' ) \
	|| $(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[local]'
	touch $(RUNTIME_STAMP)

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

## The e2e suite on a real control plane (etcd, kube-apiserver, kube-controller-manager,
## kube-scheduler and kwok, built from their Go modules): tests/e2e and both halves of
## tests/test_conformance.py. The cluster stays up afterwards (`make cluster-down` stops it).
e2e: venv tools
	bash scripts/ensure-rabbitmq.sh
	bash scripts/cluster.sh up
	bash scripts/cluster.sh versions
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest -m "" tests/e2e tests/test_conformance.py

## The control plane alone: `eval "$$(scripts/cluster.sh env)"` then points kubectl at it.
cluster: tools
	bash scripts/cluster.sh up

cluster-down:
	bash scripts/cluster.sh down

## Unit tests only: no broker, no helm, nothing slow (the whole suite runs in `make test`).
test-fast: venv
	$(BIN)/python -m pytest -m "not integration and not slow and not helm and not e2e" tests

demo: $(RUNTIME_STAMP)
	bash scripts/ensure-rabbitmq.sh
	$(BIN)/cloud-worker demo

bench: venv
	$(BIN)/python -m bench

clean:
	-bash scripts/cluster.sh down
	rm -rf $(VENV) .tools .pytest_cache
