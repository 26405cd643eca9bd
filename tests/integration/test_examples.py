"""The examples a user copies must be accepted by the real API server with our and Istio's CRDs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from coalmine_dev.devstack import binaries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gitops_overlay_renders_a_canary_only_release_the_api_server_accepts(kubeconfig: Path) -> None:
    rendered = _kubectl(kubeconfig, "kustomize", str(ROOT / "examples/gitops/overlays/production"))
    docs = {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}
    rollout = docs["Rollout"]
    assert "stable" not in rollout["spec"], "the stable is inferred, so a release edits the canary alone"
    assert rollout["spec"]["canary"]["subset"] == "v2"
    # Server-side dry run: schema, CEL rules and Istio's CRD validation all run, nothing is stored.
    _kubectl(kubeconfig, "create", "namespace", "shop", "--dry-run=server")
    rendered_ns = rendered.replace("namespace: shop", "namespace: default")
    _kubectl(kubeconfig, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=rendered_ns)
