"""meshsim follows ready endpoints as Envoy does: the rule in endpoints.py, routing's 503 UH, the metrics."""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coalmine_dev.meshsim import routing, runtime
from coalmine_dev.meshsim.config import parse_config
from coalmine_dev.meshsim.endpoints import EMPTY, EndpointIndex, pod_workload

NS = "shop"


def service(name: str = "order", selector: dict[str, str] | None = None, namespace: str = NS) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod(name: str, version: str, namespace: str = NS) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"app": "order", "version": version}}}


def slice_(endpoints: list[tuple[str, bool | None]], svc: str = "order", namespace: str = NS) -> dict[str, Any]:
    """An EndpointSlice of `svc` with one endpoint per (pod name, ready); ready None leaves it unset."""
    return {
        "metadata": {"name": f"{svc}-abc", "namespace": namespace, "labels": {"kubernetes.io/service-name": svc}},
        "endpoints": [
            {
                "addresses": ["10.244.0.1"],
                "conditions": {} if ready is None else {"ready": ready},
                "targetRef": {"kind": "Pod", "name": name, "namespace": namespace},
            }
            for name, ready in endpoints
        ],
    }


PODS = [pod("order-v1-a", "v1"), pod("order-v1-b", "v1"), pod("order-v2-a", "v2")]
V1 = {"app": "order", "version": "v1"}
V2 = {"app": "order", "version": "v2"}
V3 = {"app": "order", "version": "v3"}


@pytest.mark.parametrize(
    ("endpoints", "labels", "expected"),
    [
        pytest.param([("order-v1-a", True), ("order-v1-b", True)], V1, 2, id="two-ready-v1"),
        pytest.param([("order-v1-a", True), ("order-v1-b", False)], V1, 1, id="unready-not-counted"),
        pytest.param([("order-v1-a", None)], V1, 1, id="ready-unset-means-ready"),
        pytest.param([("order-v1-a", True), ("order-v2-a", True)], V2, 1, id="subset-by-pod-labels"),
        pytest.param([("order-v1-a", True), ("order-v2-a", True)], V3, 0, id="no-pod-of-the-subset"),
        pytest.param([("order-v1-a", True), ("order-v2-a", False)], None, 1, id="no-subset-counts-all-ready"),
        pytest.param([("gone", True)], V1, 0, id="unknown-pod-matches-no-subset"),
        pytest.param([], V1, 0, id="empty-slice"),
    ],
)
def test_ready_count(endpoints: list[tuple[str, bool | None]], labels: dict[str, str] | None, expected: int) -> None:
    index = EndpointIndex([service(selector={"app": "order"})], [slice_(endpoints)], PODS)
    assert index.follows(NS, "order")
    assert index.ready_count(NS, "order", labels) == expected


def test_a_service_with_a_selector_and_no_slice_has_no_endpoints() -> None:
    index = EndpointIndex([service(selector={"app": "order"})], [], PODS)
    assert index.ready_count(NS, "order", V1) == 0
    assert index.summary() == {f"{NS}/order": 0}


@pytest.mark.parametrize(
    "services",
    [
        pytest.param([], id="no-service"),
        pytest.param([service(selector=None)], id="service-without-selector"),
        pytest.param([service(selector={"app": "order"}, namespace="other")], id="service-in-another-namespace"),
    ],
)
def test_hosts_without_a_selecting_service_are_not_followed(services: list[dict[str, Any]]) -> None:
    index = EndpointIndex(services, [slice_([("order-v1-a", False)])], PODS)
    assert not index.follows(NS, "order")
    assert index.ready_count(NS, "order", V1) is None


def test_summary_counts_ready_endpoints_of_pods_seen() -> None:
    slices = [slice_([("order-v1-a", True), ("order-v1-b", False), ("not-seen-yet", True)])]
    index = EndpointIndex([service(selector={"app": "order"})], slices, PODS)
    assert index.summary() == {f"{NS}/order": 1}


def test_slices_of_other_services_do_not_count() -> None:
    index = EndpointIndex([service(selector={"app": "order"})], [slice_([("order-v1-a", True)], svc="cart")], PODS)
    assert index.ready_count(NS, "order", V1) == 0


VS = {
    "metadata": {"name": "order", "namespace": NS},
    "spec": {
        "hosts": ["order"],
        "http": [
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "order", "subset": "v1"}, "weight": 50},
                    {"destination": {"host": "order", "subset": "v2"}, "weight": 50},
                ],
            }
        ],
    },
}
DR = {
    "metadata": {"name": "order", "namespace": NS},
    "spec": {"host": "order", "subsets": [{"name": "v1", "labels": V1}, {"name": "v2", "labels": V2}]},
}


def outcomes(index: EndpointIndex, n: int = 400) -> dict[tuple[str, str], int]:
    rng = random.Random(3)
    seen: dict[tuple[str, str], int] = {}
    for _ in range(n):
        d = routing.route_request([VS], [DR], NS, "order", routing.Request(), rng, endpoints=index)
        assert d.destination is not None
        key = (d.destination.subset, f"{d.response_code} {d.response_flags}")
        seen[key] = seen.get(key, 0) + 1
    return seen


def test_a_subset_without_ready_pods_answers_503_uh_and_the_other_is_served() -> None:
    index = EndpointIndex([service(selector={"app": "order"})], [slice_([("order-v1-a", True)])], PODS)
    seen = outcomes(index)
    assert set(seen) == {("v1", "None -"), ("v2", "503 UH")}
    assert 0.4 < seen[("v2", "503 UH")] / sum(seen.values()) < 0.6  # the split itself does not change


def test_when_the_subset_gets_a_ready_pod_traffic_reaches_it() -> None:
    ready_both = EndpointIndex(
        [service(selector={"app": "order"})], [slice_([("order-v1-a", True), ("order-v2-a", True)])], PODS
    )
    assert set(outcomes(ready_both)) == {("v1", "None -"), ("v2", "None -")}


def test_not_followed_hosts_are_served_as_before() -> None:
    assert set(outcomes(EMPTY)) == {("v1", "None -"), ("v2", "None -")}


def test_uh_is_reported_by_the_source_proxy_only() -> None:
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, "", [VS])
    state.replace(runtime.DESTINATION_RULES, "", [DR])
    state.replace(runtime.SERVICES, "", [service(selector={"app": "order"})])
    state.replace(runtime.ENDPOINT_SLICES, "", [slice_([("order-v1-a", True)])])
    state.replace(runtime.PODS, "", PODS)
    cfg = parse_config({"services": [{"namespace": NS, "host": "order", "rps": 1000}]})
    sim = runtime.Simulator(cfg, state, runtime.IstioMetrics(), seed=1)
    sim.tick(0.5)
    text = sim.metrics.exposition().decode()
    samples = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "istio_requests_total" and s.value > 0
    ]
    seen = {
        (s.labels["reporter"], s.labels["destination_version"], s.labels["response_code"], s.labels["response_flags"])
        for s in samples
    }
    assert seen == {
        ("source", "v1", "200", "-"),
        ("destination", "v1", "200", "-"),
        ("source", "unknown", "503", "UH"),  # no upstream host was picked: no workload labels
    }
    uh = next(s for s in samples if s.labels["response_flags"] == "UH")
    assert uh.labels["destination_service_name"] == "order"
    assert sim.counts()["responses"][f"{NS}/order/v2"] == {"503": pytest.approx(uh.value)}
    assert state.summary()["endpoints"] == {f"{NS}/order": 1}


def owned_pod(name: str, labels: dict[str, str], owner_kind: str, owner: str) -> dict[str, Any]:
    ref = {"kind": owner_kind, "name": owner, "controller": True}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels, "ownerReferences": [ref]}}


@pytest.mark.parametrize(
    ("pod_", "expected"),
    [
        pytest.param(
            owned_pod("web-7d9f-x", {"pod-template-hash": "7d9f"}, "ReplicaSet", "web-7d9f"), "web", id="deployment"
        ),
        pytest.param(
            owned_pod("web-5c4b-x", {"rollouts-pod-template-hash": "5c4b"}, "ReplicaSet", "web-5c4b"),
            "web",
            id="argo-rollout",
        ),
        pytest.param(owned_pod("web-0", {}, "StatefulSet", "web"), "web", id="statefulset"),
        pytest.param(owned_pod("odd-x", {"pod-template-hash": "zz"}, "ReplicaSet", "odd"), "odd", id="rs-without-hash"),
        pytest.param(pod("order-v1-a", "v1"), "", id="bare-pod-unknown"),
    ],
)
def test_pod_workload_is_named_after_its_controller_as_istio_does(pod_: dict[str, Any], expected: str) -> None:
    assert pod_workload(pod_) == expected


def test_host_level_routes_report_the_owning_deployment_as_destination_workload() -> None:
    """Flagger's shape: the VS splits between the `web-primary` and `web-canary` Services; its checks select
    destination_workload=~"web" (the canary Deployment) and destination_workload_namespace."""
    primary = owned_pod(
        "web-primary-1a-x", {"app": "web-primary", "pod-template-hash": "1a"}, "ReplicaSet", "web-primary-1a"
    )
    canary = owned_pod("web-2b-x", {"app": "web", "pod-template-hash": "2b"}, "ReplicaSet", "web-2b")
    vs = {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "hosts": ["web"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "web-primary"}, "weight": 50},
                        {"destination": {"host": "web-canary"}, "weight": 50},
                    ]
                }
            ],
        },
    }
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, "", [vs])
    state.replace(runtime.DESTINATION_RULES, "", [])
    state.replace(
        runtime.SERVICES,
        "",
        [service("web-primary", {"app": "web-primary"}), service("web-canary", {"app": "web"})],
    )
    state.replace(
        runtime.ENDPOINT_SLICES,
        "",
        [slice_([("web-primary-1a-x", True)], svc="web-primary"), slice_([("web-2b-x", True)], svc="web-canary")],
    )
    state.replace(runtime.PODS, "", [primary, canary])
    cfg = parse_config({"services": [{"namespace": NS, "host": "web", "rps": 1000}]})
    sim = runtime.Simulator(cfg, state, runtime.IstioMetrics(), seed=1)
    sim.tick(0.5)
    seen = {
        (
            s.labels["destination_service_name"],
            s.labels["destination_workload"],
            s.labels["destination_workload_namespace"],
        )
        for f in text_string_to_metric_families(sim.metrics.exposition().decode())
        for s in f.samples
        if s.name == "istio_requests_total" and s.value > 0 and s.labels["reporter"] == "destination"
    }
    assert seen == {("web-primary", "web-primary", NS), ("web-canary", "web", NS)}
