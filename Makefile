# coalmine: the two commands a new machine needs are `make demo` and `make test`.
# Everything else here is what those two depend on.

VENV      ?= .venv
PYTHON    ?= python3
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed-stamp

.PHONY: demo test setup python binaries prometheus helm image e2e-kind peers lint unit integration clean

demo: setup
	$(BIN)/coalmine demo

test: setup lint
	$(BIN)/python -m pytest -n 4 --dist loadfile

setup: python binaries prometheus helm

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

# helm built from its Go module (cached by version; a no-op when built), for the chart's tests.
helm:
	tools/build-helm.sh >/dev/null

# The operator image, built with podman from the Dockerfile on a local Debian base (no registry needed;
# installs podman, buildah, runc and debootstrap when missing). tests/integration/test_image.py runs it.
image:
	tools/build-image.sh

# kind + real Istio + the chart + the demo's scenarios, for machines with Docker. Not run in CI (no Docker
# engine there); tests/unit/test_e2e_kind.py checks its --dry-run. HOLD=30s shortens the steps.
e2e-kind: setup
	tests/e2e/kind.sh $(if $(HOLD),--hold $(HOLD))

# Prometheus from Debian's package (a no-op when installed).
prometheus:
	tools/install-prometheus.sh

lint: python
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/mypy tests/e2e/kind_demo.py tests/e2e/app/app.py
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile tests/e2e/app/Dockerfile
	$(BIN)/shellcheck tools/*.sh tests/e2e/*.sh .ci/run

unit: python
	$(BIN)/python -m pytest tests/unit

integration: setup
	$(BIN)/python -m pytest tests/integration

clean:
	rm -rf $(VENV) .state demo-output
