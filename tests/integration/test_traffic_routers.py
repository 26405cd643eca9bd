"""Both traffic routers pass one behavioural suite on the real stack (issue 19): the VirtualService router
on a sidecar mesh, and the HTTPRoute router on an ambient mesh whose waypoint reports the requests
(meshsim `mode: ambient`, `reporter="waypoint"`), with the simulated route controller (coalmine_dev.routectl)
setting the HTTPRoute's status as Istio would. Then what only an HTTPRoute has: a route its controller never
accepts, and the ambient preflight."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from rollout_support import OperatorProcess
from router_support import AMBIENT_LABELS, Routed

from coalmine_dev.routectl import REFUSE, RouteController

pytestmark = pytest.mark.integration

RPS = 100.0
STEPS = [{"weight": 30, "hold": "4s"}, {"weight": 100, "hold": "3s"}]


@pytest.fixture
def routectl(api_client: client.ApiClient, namespace: str) -> Iterator[RouteController]:
    controller = RouteController(api_client, namespace).start()
    yield controller
    controller.stop()


@pytest.fixture(params=["VirtualService", "HTTPRoute"])
def routed(request: pytest.FixtureRequest, api_client: client.ApiClient, namespace: str) -> Routed:
    kind = str(request.param)
    if kind == "HTTPRoute":
        request.getfixturevalue("routectl")
    return Routed(api_client, namespace, kind)


def _send(routed: Routed, meshsim: Any) -> None:
    mode = "ambient" if routed.http else None
    meshsim.client.set_service(routed.ns, "order", rps=RPS, mode=mode)


@pytest.mark.parametrize("healthy", [True, False], ids=["promoted", "rolled-back"])
def test_a_rollout_on_either_router(
    healthy: bool, routed: Routed, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """The same rollout on both routers: a healthy canary is promoted, a failing one rolled back; either way
    only the owned route's weights move (other rules, filters, parentRefs, timeouts byte-equal)."""
    routed.apply()
    _send(routed, meshsim)
    if not healthy:
        host, subset = routed.canary_key
        meshsim.client.set_destination(routed.ns, host, subset, error_ratio=0.5)
    before = routed.unowned()
    op = operator_factory(routed.ns)
    routed.create(steps=STEPS)
    if healthy:
        status = routed.wait_for_phase("Succeeded", 60, op)
        assert routed.canary() == 100
        assert [h["weight"] for h in status["history"]] == [30, 100]
    else:
        status = routed.wait_for_phase("RolledBack", 60, op)
        assert status["rollback"]["metric"] == "success-rate"
        assert routed.canary() == 0
        assert status["canaryWeight"] == 0
    row = next(m for m in status["analysis"]["metrics"] if m["name"] == "success-rate")
    assert 'reporter=~"destination|waypoint"' in row["query"]
    service = "order-v2" if routed.http else "order"
    assert f'destination_service_name="{service}"' in row["query"]
    assert routed.unowned() == before, "only the owned route's weights moved"
    if routed.http:
        reporters = {
            s.split('reporter="')[1].split('"')[0]
            for s in meshsim.client.metrics_text().splitlines()
            if s.startswith("istio_requests_total{")
        }
        assert reporters == {"waypoint"}, "ambient: only the waypoint reported, and the checks had data"


def test_an_httproute_never_accepted_holds_with_a_clear_message(
    api_client: client.ApiClient,
    namespace: str,
    routectl: RouteController,
    meshsim: Any,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    routed = Routed(api_client, namespace, "HTTPRoute")
    routed.apply()
    routed.patch_route_metadata({"annotations": {REFUSE: "no listener allows routes from namespace " + namespace}})
    _send(routed, meshsim)
    op = operator_factory(routed.ns)
    routed.create(steps=[{"weight": 30, "hold": "2s"}, {"weight": 100, "hold": "2s"}])
    status = routed.wait_for(
        lambda s: any(c["type"] == "Stalled" and c["status"] == "True" for c in s.get("conditions", [])),
        30,
        "Stalled",
        op,
    )
    assert "Accepted is False" in status["message"]
    assert "NotAllowedByListeners" in status["message"]
    assert "no listener allows routes" in status["message"]
    time.sleep(5)  # longer than the step's hold: it must not advance
    status = routed.status()
    assert status["phase"] == "Progressing"
    assert status["stepIndex"] == 0
    assert status["canaryWeight"] == 30 == routed.canary(), "the status says what the route has"
    routed.patch_route_metadata({"annotations": {REFUSE: None}})
    routed.wait_for_phase("Succeeded", 60, op)


@pytest.mark.parametrize(
    ("kind", "labels", "expected"),
    [
        pytest.param("HTTPRoute", {"istio.io/dataplane-mode": "ambient"}, "has no waypoint", id="no-waypoint"),
        pytest.param("VirtualService", AMBIENT_LABELS, "VirtualService is Alpha", id="virtualservice-on-ambient"),
    ],
)
def test_a_preflight_failure_is_reported_on_start(
    kind: str,
    labels: dict[str, str],
    expected: str,
    api_client: client.ApiClient,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    routed = Routed(api_client, namespace, kind)
    routed.apply(labels=labels)
    if kind == "VirtualService":
        routed.label_namespace(labels)
    op = operator_factory(routed.ns)
    routed.create(steps=STEPS)
    status = routed.wait_for(
        lambda s: s.get("phase") == "Pending" and "preflight" in (s.get("message") or ""), 30, "preflight", op
    )
    assert expected in status["message"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "PreflightFailed")
    assert routed.wait_for_event("PreflightFailed").type == "Warning"
    assert routed.canary() == 0, "nothing moved"
