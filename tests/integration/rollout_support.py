"""Support for the operator's integration tests: the operator as a real process, and the seed scenario.

`OperatorProcess` is the operator as a real process (`operator_factory` in conftest.py starts it);
it can be SIGKILLed and started again. `Shop` applies the seed scenario (an `order` service with v1 and v2, a DestinationRule with a
circuit breaker, a VirtualService with an A/B route ahead of the weighted default route) and
reads back what the operator did.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import Child

ISTIO = ("networking.istio.io", "v1")
COALMINE = ("coalmine.dev", "v1alpha1")


# The operator as a real process: started by `operator_factory` (conftest.py), it can be SIGKILLed
# (`kill`) as a crashed pod, stopped politely (`stop`), and read (`log`, `tail`).
OperatorProcess = Child


@contextlib.contextmanager
def private_stack(state_dir: Path, **options: Any) -> Iterator[devstack.StackInfo]:
    """A devstack of the test's own, for a test that kills or changes what the session's tests share (its
    etcd, its API server, a CRD); `options` go to devstack.up. Stopped afterwards, also when it fails to start."""
    try:
        info = devstack.up(state_dir, **options)
    except devstack.StackError as error:
        devstack.down(state_dir)
        pytest.fail(f"the devstack did not start:\n{error}", pytrace=False)
    try:
        yield info
    finally:
        devstack.down(state_dir)


def ts(text: str) -> datetime:
    """An RFC 3339 time from the status."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rollback_bound(*, failure_limit: int, check_every: float, scrape_interval: float, tick: float = 2.0) -> float:
    """The detection-to-rollback bound README.md and bench/README.md state, in seconds: failing requests are
    visible to `rate` within 2 scrape intervals, the next check on the checkEvery grid sees them, failureLimit
    checks fail in a row, and the tick that decides writes the status and the VirtualService (`tick`: its
    Prometheus query and two API writes, generous for a loaded 2-core machine)."""
    return 2 * scrape_interval + failure_limit * check_every + tick


def rollback_deadline(*, failure_limit: int, check_every: float, scrape_interval: float) -> float:
    """What a test holds a rollback to: the README's bound plus 20 s. The bound itself is a figure that
    bench/rollback_latency.py measures on a quiet machine; a test checks behaviour (a failed step goes
    straight to 0, nothing waits for a webhook), and a loaded machine (3 test workers on 2 cores, or other
    jobs) must not turn a slow Prometheus query into a failure. Still far below anything that waits for a
    webhook's 60 s answer or a maxNoData."""
    return rollback_bound(failure_limit=failure_limit, check_every=check_every, scrape_interval=scrape_interval) + 20


def destination_rule(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "order", "namespace": namespace},
        "spec": {
            "host": "order",
            "trafficPolicy": {
                "outlierDetection": {"consecutiveGatewayErrors": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 50}
            },
            "subsets": [
                {"name": "v1", "labels": {"app": "order", "version": "v1"}},
                {"name": "v2", "labels": {"app": "order", "version": "v2"}},
            ],
        },
    }


def virtual_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "order", "namespace": namespace, "labels": {"team": "shop"}},
        "spec": {
            "hosts": ["order"],
            "http": [
                {
                    "name": "beta",
                    "match": [{"headers": {"user-group": {"exact": "beta"}}}],
                    "route": [{"destination": {"host": "order", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 100}
                    ],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure"},
                    "timeout": "5s",
                },
            ],
        },
    }


def rollout(namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "virtualService": {"name": "order", "routes": ["primary"]},
        "stable": {"host": "order", "subset": "v1"},
        "canary": {"host": "order", "subset": "v2"},
        "steps": [{"weight": 10}, {"weight": 30}, {"weight": 50}, {"weight": 100}],
        "analysis": {
            "interval": "3s",
            "checkEvery": "1s",
            "minRequests": 10,
            "failureLimit": 2,
            "maxNoData": "30s",
            "successRate": {"min": 95},
            "latency": {"quantile": 0.99, "maxMs": 500},
        },
    }
    for key, value in spec.items():
        if key == "analysis":
            body["analysis"] = {**body["analysis"], **value}
        else:
            body[key] = value
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order", "namespace": namespace},
        "spec": body,
    }


class Shop:
    """The seed scenario in one namespace, and the reads tests make of it."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def apply_istio(self) -> None:
        self.custom.create_namespaced_custom_object(*ISTIO, self.ns, "destinationrules", destination_rule(self.ns))
        self.custom.create_namespaced_custom_object(*ISTIO, self.ns, "virtualservices", virtual_service(self.ns))

    def create_rollout(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            *COALMINE, self.ns, "rollouts", rollout(self.ns, **spec)
        )
        return result

    def patch_rollout_spec(self, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(*COALMINE, self.ns, "rollouts", "order", {"spec": spec})

    def get_rollout(self) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(*COALMINE, self.ns, "rollouts", "order")
        return result

    def status(self) -> dict[str, Any]:
        return self.get_rollout().get("status") or {}

    def get_vs(self) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(*ISTIO, self.ns, "virtualservices", "order")
        return result

    def patch_vs(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """A JSON patch of the VirtualService, as a person or another controller would write it."""
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            *ISTIO, self.ns, "virtualservices", "order", ops, _content_type="application/json-patch+json"
        )
        return result

    def route_index(self, name: str, vs: dict[str, Any] | None = None) -> int:
        vs = vs or self.get_vs()
        return next(i for i, r in enumerate(vs["spec"]["http"]) if r.get("name") == name)

    def get_dr(self) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(*ISTIO, self.ns, "destinationrules", "order")
        return result

    def primary_weights(self, vs: dict[str, Any] | None = None) -> dict[str, int]:
        vs = vs or self.get_vs()
        route = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
        return {d["destination"]["subset"]: d.get("weight", 0) for d in route["route"]}

    def canary_weight(self) -> int:
        return self.primary_weights().get("v2", 0)

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        operator: OperatorProcess | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                logs = f"\noperator log:\n{operator.tail()}" if operator else ""
                pytest.fail(f"after {timeout:.0f} s, still not {what}; status: {status}{logs}")
            time.sleep(0.1)

    def wait_for_phase(self, phase: str, timeout: float, operator: OperatorProcess | None = None) -> dict[str, Any]:
        return self.wait_for(lambda s: s.get("phase") == phase, timeout, f"phase {phase}", operator)

    def wait_for_event(self, reason: str, timeout: float = 10.0) -> client.CoreV1Event:
        """Events are posted right after the writes they report: wait for one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.reason == reason]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                pytest.fail(f"no {reason} Event after {timeout:.0f} s; events: {[e.reason for e in self.events()]}")
            time.sleep(0.1)

    def events(self) -> list[client.CoreV1Event]:
        items: list[client.CoreV1Event] = self.core.list_namespaced_event(self.ns).items
        return sorted(
            (e for e in items if e.involved_object.kind == "Rollout"),
            key=lambda e: (e.first_timestamp or e.event_time, e.metadata.creation_timestamp),
        )


def without_owned_route(vs: dict[str, Any]) -> dict[str, Any]:
    """The VS with the parts the operator owns (the primary route's destinations) and server metadata removed."""
    vs = copy.deepcopy(vs)
    for route in vs["spec"]["http"]:
        if route.get("name") == "primary":
            route.pop("route")
    vs["metadata"] = {k: v for k, v in vs["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
    return vs


def ignore_not_found(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ApiException as exc:
        if exc.status != 404:
            raise


class VsReader:
    """Reads the Shop's VirtualService every 50 ms in a background thread until stopped, handing each read
    to `observe` (what a test keeps of it is the subclass's)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def observe(self, vs: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.observe(self.shop.get_vs())
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop reading (idempotent: also a test's finalizer, so a failed test leaves no reader behind)."""
        self._stop.set()
        self._thread.join()
