"""Readiness-gated shifts (spec.readiness) on the real stack: real Deployments whose pods kwok makes Ready,
the EndpointSlice controller's slices, the operator as a process watching them.

The promises: a canary with no ready pod never gets weight (and rolls back at readiness.timeout with
reason WaitingForCanary); the shift follows once a pod is ready; a canary that loses every ready pod
while it has traffic is rolled back; the VirtualService outside the owned route is byte-equal throughout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client
from rollout_support import COALMINE, OperatorProcess, Shop, without_owned_route
from test_workloads import deployment, ready_pods, service, wait_for

from coalmine.core.models import REQUEST_ANNOTATION, Request

pytestmark = pytest.mark.integration

HOLD = [{"weight": 10, "hold": "10m"}, {"weight": 100}]


def _order(api_client: client.ApiClient, namespace: str, v1: int, v2: int) -> client.AppsV1Api:
    """Service order (app=order) and Deployments order-v1 / order-v2 (version=v1 / v2) with that many replicas."""
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    core.create_namespaced_service(namespace, service("order", {"app": "order"}))
    for version, replicas in (("v1", v1), ("v2", v2)):
        labels = {"app": "order", "version": version}
        apps.create_namespaced_deployment(namespace, deployment(f"order-{version}", replicas, labels))
    wait_for(f"{v1} ready v1 pods", lambda: ready_pods(core, namespace, "version=v1"), lambda p: len(p) == v1)
    return apps


class WeightWatch:
    """Reads the owned route's canary weight in the background: the highest it was ever seen at."""

    def __init__(self, shop: Shop) -> None:
        self.shop, self.highest, self._stop = shop, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.highest = max(self.highest, self.shop.canary_weight())
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.highest


def test_a_canary_without_ready_pods_never_gets_weight_and_rolls_back_at_the_timeout_also_after_a_retry(
    shop: Shop, api_client: client.ApiClient, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """A finished rollout reads no pods; `retry` starts it again, and that start is gated like the first."""
    _order(api_client, shop.ns, v1=2, v2=0)
    before = without_owned_route(shop.get_vs())
    op = operator_factory(shop.ns)
    watch = WeightWatch(shop)
    shop.create_rollout(steps=HOLD, readiness={"timeout": "5s"})
    waiting = shop.wait_for(lambda s: (s.get("readiness") or {}).get("waitingSince"), 60, "waiting", op)
    assert waiting["phase"] == "Progressing"
    assert (waiting["readiness"]["canaryReady"], waiting["readiness"]["stableReady"]) == (0, 2)
    reconciling = next(c for c in waiting["conditions"] if c["type"] == "Reconciling")
    assert reconciling["reason"] == "WaitingForCanary"
    status = shop.wait_for_phase("RolledBack", 60, op)
    assert status["rollback"]["reason"] == "WaitingForCanary"
    assert "readiness.timeout 5s" in status["rollback"]["message"]
    assert status["canaryWeight"] == 0 == shop.canary_weight()

    retry = Request(id="retry-no-pods", verb="retry", by="integration test", at=datetime.now(UTC))
    shop.custom.patch_namespaced_custom_object(
        *COALMINE,
        shop.ns,
        "rollouts",
        "order",
        {"metadata": {"annotations": {REQUEST_ANNOTATION: retry.to_annotation()}}},
    )
    handled = shop.wait_for(lambda s: (s.get("lastRequest") or {}).get("id") == retry.id, 60, "the retry handled", op)
    assert handled["lastRequest"]["result"] == "Applied"
    again = shop.wait_for(
        lambda s: s.get("phase") == "RolledBack" and s.get("finishedAt") != status["finishedAt"],
        60,
        "rolled back again at readiness.timeout",
        op,
    )
    assert again["rollback"]["reason"] == "WaitingForCanary", "the retry waited for the pods again, then gave up"
    assert watch.stop() == 0, "the canary never had any weight"
    assert again["canaryWeight"] == 0 == shop.canary_weight()
    assert without_owned_route(shop.get_vs()) == before, "nothing else in the VirtualService changed"


def test_the_shift_waits_for_a_ready_pod_and_a_canary_losing_its_pods_is_rolled_back(
    shop: Shop, api_client: client.ApiClient, operator_factory: Callable[..., OperatorProcess]
) -> None:
    apps = _order(api_client, shop.ns, v1=2, v2=0)
    before = without_owned_route(shop.get_vs())
    op = operator_factory(shop.ns)
    watch = WeightWatch(shop)
    shop.create_rollout(steps=HOLD, readiness={"timeout": "2m"}, analysis={"maxNoData": "3m"})
    shop.wait_for(lambda s: (s.get("readiness") or {}).get("waitingSince"), 60, "waiting for the canary", op)
    time.sleep(3)  # a short hold: the shift must not happen by itself
    assert watch.stop() == 0

    apps.patch_namespaced_deployment_scale("order-v2", shop.ns, {"spec": {"replicas": 1}})
    status = shop.wait_for(lambda s: s.get("canaryWeight") == 10, 90, "shifted to 10 %", op)
    assert shop.canary_weight() == 10
    assert status["readiness"]["canaryReady"] == 1
    assert "waitingSince" not in status["readiness"]
    shop.wait_for_event("StepStarted")

    apps.patch_namespaced_deployment_scale("order-v2", shop.ns, {"spec": {"replicas": 0}})
    status = shop.wait_for_phase("RolledBack", 90, op)
    assert status["rollback"]["metric"] == "canary-ready"
    assert status["canaryWeight"] == 0 == shop.canary_weight()
    assert without_owned_route(shop.get_vs()) == before
