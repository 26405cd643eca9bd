# coalmine: the two commands a new machine needs are `make demo` and `make test`.
# Everything else here is what those two depend on.

VENV      ?= .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed-stamp

.PHONY: demo test setup python binaries prometheus lint unit integration peers clean

demo: setup
	$(BIN)/coalmine demo

test: setup lint
	$(BIN)/python -m pytest

setup: python binaries prometheus

python: $(STAMP)

# The product (with its `status` extra), the dev harness (tools/devkit) and the test and lint groups.
$(STAMP): pyproject.toml tools/devkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[status]' -e tools/devkit --group test --group lint
	touch $@

# kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler, kwok and the Istio validation
# webhook built from Go modules, and toxiproxy for the chaos run (cached by version; a no-op when built).
binaries:
	tools/build-control-plane.sh
	tools/build-toxiproxy.sh

# Flagger and Argo Rollouts from their Go modules, for bench/peers.py (not part of `make test`).
peers:
	tools/build-peers.sh

# Prometheus from Debian's package (a no-op when installed).
prometheus:
	tools/install-prometheus.sh

lint: python
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

unit: python
	$(BIN)/python -m pytest tests/unit

integration: setup
	$(BIN)/python -m pytest tests/integration

clean:
	rm -rf $(VENV) .state demo-output
