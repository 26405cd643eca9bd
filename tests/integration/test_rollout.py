"""The operator against a real kube-apiserver, Prometheus and Istio CRDs, with meshsim traffic."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rollout_support import OperatorProcess, Shop, without_owned_route

from coalmine.devstack import binaries

pytestmark = pytest.mark.integration

RPS = 150.0  # meshsim requests per second to `order`: 15/s reach the canary at 10 %


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def shop(api_client: client.ApiClient, namespace: str) -> Shop:
    s = Shop(api_client, namespace)
    s.apply_istio()
    return s


def _traffic(meshsim: Any, namespace: str, rps: float = RPS) -> None:
    meshsim.client.set_service(namespace, "order", rps=rps, headers=[(0.9, {}), (0.1, {"user-group": "beta"})])


def test_healthy_canary_is_promoted_step_by_step(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    _traffic(meshsim, namespace)
    before = shop.get_vs()
    dr_before = shop.get_dr()
    op = operator_factory(namespace)
    shop.create_rollout(steps=[{"weight": 10, "hold": "4s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}])

    seen: list[tuple[int, float]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        weight = shop.canary_weight()
        if not seen or seen[-1][0] != weight:
            seen.append((weight, time.monotonic()))
        if shop.status().get("phase") == "Succeeded":
            break
        time.sleep(0.1)
    status = shop.wait_for_phase("Succeeded", 5, op)

    assert [w for w, _ in seen] == [0, 10, 30, 50, 100], f"weights seen on the VS: {seen}"
    history = status["history"]
    assert [h["weight"] for h in history] == [10, 30, 50, 100]
    holds = [4, 3, 3, 3]
    starts = [ts(h["startedAt"]) for h in history] + [ts(status["finishedAt"])]
    for i, hold in enumerate(holds):
        assert (starts[i + 1] - starts[i]).total_seconds() >= hold, f"step {i + 1} held {starts[i + 1] - starts[i]}"
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert status["canaryWeight"] == 100
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == status["observedGeneration"] == 1
    assert all(m["verdict"] == "Pass" for m in status["analysis"]["metrics"])
    assert {m["name"] for m in status["analysis"]["metrics"]} == {"success-rate", "latency-p99"}
    assert 'destination_version="v2"' in status["analysis"]["metrics"][0]["query"]

    # Everything but the owned route's destinations is as the user wrote it; the DR is untouched.
    assert without_owned_route(shop.get_vs()) == without_owned_route(before)
    assert shop.get_dr()["spec"] == dr_before["spec"]
    assert shop.get_dr()["metadata"]["resourceVersion"] == dr_before["metadata"]["resourceVersion"]

    reasons = [e.reason for e in shop.events()]
    assert reasons.count("StepAdvanced") == 3
    assert reasons[0] == "RolloutStarted"
    assert reasons[-1] == "Succeeded"

    # Flux and `kubectl wait` read the same condition.
    done = subprocess.run(
        [
            str(binaries.kubectl()),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "wait",
            "rollout/order",
            "--for=condition=Ready",
            "--timeout=5s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
