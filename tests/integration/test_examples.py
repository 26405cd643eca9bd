"""The examples a user copies must be accepted by the real API server with our and Istio's CRDs, pass
Istio's validation, and (on the local stack's fake nodes) give Ready pods behind the `order` Service."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        timeout=180,
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


@pytest.mark.parametrize(("example", "step"), [("ab-rollout.yaml", "match"), ("mirror-rollout.yaml", "mirror")])
def test_the_strategies_examples_are_accepted_by_the_api_server(kubeconfig: Path, example: str, step: str) -> None:
    """examples/strategies/: schema and CEL rules accept the A/B step, the mirror step and readiness
    (server-side dry run)."""
    text = (ROOT / "examples/strategies" / example).read_text().replace("namespace: shop", "namespace: default")
    rollout = yaml.safe_load(text)
    assert step in rollout["spec"]["steps"][0]
    _kubectl(kubeconfig, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=text)


def test_a_step_with_a_weight_and_a_mirror_is_refused_at_apply(kubeconfig: Path) -> None:
    text = (
        (ROOT / "examples/strategies/mirror-rollout.yaml").read_text().replace("namespace: shop", "namespace: default")
    )
    text = text.replace("{mirror: 100, hold: 5m}", "{mirror: 100, weight: 5}")
    done = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), "apply", "--dry-run=server", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert done.returncode != 0
    assert "a step has exactly one of weight, match (A/B step) or mirror" in done.stderr


def test_the_webhooks_example_is_accepted_and_its_notifications_config_loads(kubeconfig: Path) -> None:
    """examples/webhooks/: the Rollout passes the CRD's schema and CEL rules (server-side dry run), and the
    operator reads notifications.json as it would from the Secret."""
    from coalmine.adapters.webhooks import NotificationsConfig

    text = (ROOT / "examples/webhooks/rollout.yaml").read_text().replace("namespace: shop", "namespace: default")
    _kubectl(kubeconfig, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=text)
    config = NotificationsConfig.load(str(ROOT / "examples/webhooks/notifications.json"))
    assert sorted(config.channels) == ["ops", "team-pay", "team-shop"]
    rollout = yaml.safe_load(text)
    assert {n["channel"] for n in rollout["spec"]["notify"]} <= set(config.channels)


def test_kubectl_apply_examples_gives_ready_pods_of_every_version(kubeconfig: Path) -> None:
    """`kubectl apply -f examples/` exactly as the README says, in namespace shop; removed afterwards."""
    try:
        applied = _kubectl(kubeconfig, "apply", "-f", str(ROOT / "examples"))
        for kind in ("service/order", "deployment.apps/order-v1", "virtualservice.networking.istio.io/order"):
            assert kind in applied, applied
        _kubectl(kubeconfig, "wait", "-n", "shop", "--for=condition=Available", "deployment", "--all", "--timeout=120s")
        pods = json.loads(_kubectl(kubeconfig, "get", "pods", "-n", "shop", "-l", "app=order", "-o", "json"))["items"]
        versions = [
            p["metadata"]["labels"]["version"]
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        assert sorted(versions) == ["v1", "v1", "v2", "v2", "v3", "v3"]
        # The EndpointSlice controller follows the pods on its own schedule: poll.
        selector = "kubernetes.io/service-name=order"
        deadline = time.monotonic() + 60
        while True:
            slices = json.loads(
                _kubectl(kubeconfig, "get", "endpointslices", "-n", "shop", "-l", selector, "-o", "json")
            )
            endpoints = [e for s in slices["items"] for e in s.get("endpoints") or []]
            if len(endpoints) == 6 and all(e["conditions"].get("ready") for e in endpoints):
                break
            assert time.monotonic() < deadline, f"the order Service's endpoints are not 6 ready ones: {endpoints}"
            time.sleep(0.5)
    finally:
        _kubectl(kubeconfig, "delete", "namespace", "shop", "--ignore-not-found", "--wait", "--timeout=120s")


def test_the_ambient_httproute_example_starts_a_rollout(
    kubeconfig: Path, api_client: Any, operator_factory: Callable[..., Any]
) -> None:
    """`kubectl apply -f examples/ambient/` (namespace shop-ambient, removed afterwards): Gateway API's CRDs
    take the waypoint and the HTTPRoute, the preflight finds the namespace enrolled with a waypoint, and with
    the simulated route controller accepting the route the Rollout starts on the `primary` rule (10 %)."""
    from coalmine_dev.routectl import RouteController

    controller = RouteController(api_client, "shop-ambient").start()
    try:
        applied = _kubectl(kubeconfig, "apply", "-f", str(ROOT / "examples/ambient"))
        for kind in ("httproute.gateway.networking.k8s.io/order", "gateway.gateway.networking.k8s.io/waypoint"):
            assert kind in applied, applied
        operator = operator_factory("shop-ambient")
        deadline = time.monotonic() + 60
        while True:
            rollout = json.loads(_kubectl(kubeconfig, "get", "rollout", "order", "-n", "shop-ambient", "-o", "json"))
            status = rollout.get("status") or {}
            if status.get("phase") == "Progressing" and status.get("canaryWeight") == 10:
                break
            assert time.monotonic() < deadline, f"not Progressing at 10 %: {status}\n{operator.tail()}"
            time.sleep(0.5)
        route = json.loads(_kubectl(kubeconfig, "get", "httproute", "order", "-n", "shop-ambient", "-o", "json"))
        primary = next(r for r in route["spec"]["rules"] if r["name"] == "primary")
        assert [(b["name"], b["weight"]) for b in primary["backendRefs"]] == [("order-v1", 90), ("order-v2", 10)]
    finally:
        controller.stop()
        _kubectl(kubeconfig, "delete", "namespace", "shop-ambient", "--ignore-not-found", "--wait", "--timeout=120s")
