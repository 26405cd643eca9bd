"""meshsim against the real stack: the split it produces follows the VirtualService in the API server,
and Prometheus (really scraping it) sees that split, including after the VirtualService is edited."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client

if TYPE_CHECKING:
    from tests.conftest import Prom
    from tests.integration.conftest import MeshsimHandle

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1")
RPS = 400
WINDOW_S = 6  # >= 4 scrapes at the tests' 1 s scrape interval
SETTLE_S = WINDOW_S + 2  # after a change, wait until a whole window holds only new data


def destination_rule() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "stable", "labels": {"app": "reviews", "version": "v1"}},
                {"name": "canary", "labels": {"app": "reviews", "version": "v2"}},
            ],
        },
    }


def virtual_service(stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "reviews", "subset": "stable"}, "weight": stable},
                        {"destination": {"host": "reviews", "subset": "canary"}, "weight": canary},
                    ],
                }
            ],
        },
    }


def prom_split(prom: Prom, namespace: str) -> dict[str, float]:
    result = prom.query(
        "sum by (destination_version)(rate(istio_requests_total"
        f'{{reporter="destination",destination_workload_namespace="{namespace}"}}[{WINDOW_S}s]))'
    )
    return {r["metric"]["destination_version"]: float(r["value"][1]) for r in result}


def assert_share(rates: dict[str, float], key: str, expected: float, tolerance: float) -> None:
    total = sum(rates.values())
    assert total > 0, rates
    share = rates.get(key, 0.0) / total
    assert abs(share - expected) <= tolerance, f"{key}: {share:.3f} vs {expected} ± {tolerance} in {rates}"


def apply_mesh(api_client: client.ApiClient, namespace: str, stable: int, canary: int) -> tuple[str, str]:
    custom = client.CustomObjectsApi(api_client)
    dr = custom.create_namespaced_custom_object(*ISTIO, namespace, "destinationrules", destination_rule())
    vs = custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", virtual_service(stable, canary))
    return dr["metadata"]["resourceVersion"], vs["metadata"]["resourceVersion"]


def set_weights(api_client: client.ApiClient, namespace: str, stable: int, canary: int) -> str:
    custom = client.CustomObjectsApi(api_client)
    current = custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "reviews")
    current["spec"] = virtual_service(stable, canary)["spec"]
    updated = custom.replace_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "reviews", current)
    return str(updated["metadata"]["resourceVersion"])


def test_split_follows_the_virtual_service_in_prometheus_and_counts(
    api_client: client.ApiClient, namespace: str, meshsim: MeshsimHandle, prom: Prom
) -> None:
    dr_version, vs_version = apply_mesh(api_client, namespace, 90, 10)
    meshsim.wait_until_seen("destinationrules", f"{namespace}/reviews", dr_version)
    meshsim.wait_until_seen("virtualservices", f"{namespace}/reviews", vs_version)
    meshsim.client.set_service(namespace, "reviews", RPS)
    meshsim.client.reset_counts()
    time.sleep(SETTLE_S)

    # Prometheus, having scraped meshsim, sees 90/10 between the DR subsets' versions.
    rates = prom_split(prom, namespace)
    assert set(rates) == {"v1", "v2"}, rates
    assert_share(rates, "v2", 0.10, 0.03)
    assert sum(rates.values()) == pytest.approx(RPS, rel=0.2)
    workloads = prom.query(
        f'count by (destination_workload)(istio_requests_total{{destination_workload_namespace="{namespace}"}})'
    )
    assert {r["metric"]["destination_workload"] for r in workloads} == {"reviews-v1", "reviews-v2"}
    # ...and meshsim's own counts agree.
    counts = meshsim.client.counts()
    stable, canary = (counts["destinations"][f"{namespace}/reviews/{s}"] for s in ("stable", "canary"))
    assert counts["total"] == stable + canary == counts["routes"][f"{namespace}/reviews/primary"]
    assert counts["total"] > RPS * (SETTLE_S - 1)
    assert_share({"stable": stable, "canary": canary}, "canary", 0.10, 0.03)

    # Edit the VirtualService: the split moves to 50/50, in counts and in Prometheus.
    meshsim.wait_until_seen("virtualservices", f"{namespace}/reviews", set_weights(api_client, namespace, 50, 50))
    meshsim.client.reset_counts()
    time.sleep(SETTLE_S)
    assert_share(prom_split(prom, namespace), "v2", 0.50, 0.05)
    counts = meshsim.client.counts()
    stable, canary = (counts["destinations"][f"{namespace}/reviews/{s}"] for s in ("stable", "canary"))
    assert_share({"stable": stable, "canary": canary}, "canary", 0.50, 0.05)

    # Roll back (canary weight 0): the canary gets nothing at all.
    meshsim.wait_until_seen("virtualservices", f"{namespace}/reviews", set_weights(api_client, namespace, 100, 0))
    meshsim.client.reset_counts()
    time.sleep(2)
    counts = meshsim.client.counts()
    assert counts["total"] > 0
    assert counts["destinations"].get(f"{namespace}/reviews/canary", 0) == 0


def test_breaking_the_canary_mid_run_shows_in_prometheus(
    api_client: client.ApiClient, namespace: str, meshsim: MeshsimHandle, prom: Prom
) -> None:
    dr_version, vs_version = apply_mesh(api_client, namespace, 50, 50)
    meshsim.wait_until_seen("destinationrules", f"{namespace}/reviews", dr_version)
    meshsim.wait_until_seen("virtualservices", f"{namespace}/reviews", vs_version)
    meshsim.client.set_service(namespace, "reviews", RPS)
    meshsim.client.set_destination(namespace, "reviews", "canary", error_ratio=0.3, p50_ms=300, p99_ms=900)
    time.sleep(SETTLE_S)

    selector = f'reporter="destination",destination_workload_namespace="{namespace}"'
    errors = prom.query(
        f'sum by (destination_workload)(rate(istio_requests_total{{{selector},response_code=~"5.."}}[{WINDOW_S}s]))'
        f" / sum by (destination_workload)(rate(istio_requests_total{{{selector}}}[{WINDOW_S}s]))"
    )
    ratio = {r["metric"]["destination_workload"]: float(r["value"][1]) for r in errors}
    # The stable workload has never failed, so it has no 5xx series at all (realistic: empty, not 0).
    assert set(ratio) == {"reviews-v2"}, ratio
    assert ratio["reviews-v2"] == pytest.approx(0.3, abs=0.06)

    p50 = prom.query(
        "histogram_quantile(0.5, sum by (destination_workload, le)"
        f"(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{WINDOW_S}s])))"
    )
    median = {r["metric"]["destination_workload"]: float(r["value"][1]) for r in p50}
    # Interpolated inside Istio's buckets: 20 ms lies in (10, 25], 300 ms in (250, 500].
    assert 10 < median["reviews-v1"] <= 25, median
    assert 250 < median["reviews-v2"] <= 500, median


def workload(version: str, replicas: int) -> dict[str, Any]:
    """A Deployment of `reviews` pods at `version` (run by kwok's fake nodes: Ready, nothing pulled)."""
    labels = {"app": "reviews", "version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"reviews-{version}"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "reviews", "image": "example.invalid/reviews:1"}]},
            },
        },
    }


def wait_for_ready_endpoints(meshsim: MeshsimHandle, key: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := meshsim.client.mesh()["endpoints"].get(key)) != count:
        assert time.monotonic() < deadline, f"meshsim sees {seen!r} ready endpoints of {key}, not {count}"
        time.sleep(0.2)


def test_a_subset_without_ready_pods_answers_503_uh_seen_by_the_source_only(
    api_client: client.ApiClient, namespace: str, meshsim: MeshsimHandle, prom: Prom
) -> None:
    """With a Service selecting the pods, meshsim follows its EndpointSlices: canary (v2) has no ready pod,
    so its share of the traffic fails at the source sidecar (503 UH) and no destination sidecar reports it;
    once a v2 pod is Ready, the same share reaches v2."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "reviews"}, "spec": {"selector": {"app": "reviews"}, "ports": [{"port": 80}]}},
    )
    apps.create_namespaced_deployment(namespace, workload("v1", 2))
    apps.create_namespaced_deployment(namespace, workload("v2", 0))
    dr_version, vs_version = apply_mesh(api_client, namespace, 50, 50)
    meshsim.wait_until_seen("virtualservices", f"{namespace}/reviews", vs_version)
    meshsim.wait_until_seen("destinationrules", f"{namespace}/reviews", dr_version)
    wait_for_ready_endpoints(meshsim, f"{namespace}/reviews", 2)
    meshsim.client.set_service(namespace, "reviews", RPS)
    meshsim.client.reset_counts()
    time.sleep(SETTLE_S)

    responses = meshsim.client.counts()["responses"]
    assert set(responses[f"{namespace}/reviews/canary"]) == {"503"}, responses
    assert set(responses[f"{namespace}/reviews/stable"]) == {"200"}, responses
    by = "reporter, destination_version, response_code, response_flags"
    rates = prom.query(
        f'sum by ({by})(rate(istio_requests_total{{destination_service_namespace="{namespace}"}}[{WINDOW_S}s]))'
    )
    seen = {tuple(r["metric"][k] for k in by.split(", ")): float(r["value"][1]) for r in rates}
    assert set(seen) == {
        ("source", "v1", "200", "-"),
        ("destination", "v1", "200", "-"),
        ("source", "unknown", "503", "UH"),  # no pod was picked: no destination workload, no destination report
    }, seen
    assert seen[("source", "unknown", "503", "UH")] == pytest.approx(RPS / 2, rel=0.25)

    # A ready v2 pod: its half of the traffic now reaches it.
    apps.patch_namespaced_deployment_scale("reviews-v2", namespace, {"spec": {"replicas": 1}})
    wait_for_ready_endpoints(meshsim, f"{namespace}/reviews", 3)
    time.sleep(0.5)  # a tick that took its snapshot just before may still record a UH; let it pass first
    meshsim.client.reset_counts()
    time.sleep(2)
    responses = meshsim.client.counts()["responses"]
    assert set(responses[f"{namespace}/reviews/canary"]) == {"200"}, responses
    selector = f'reporter="destination",destination_workload_namespace="{namespace}",destination_version="v2"'
    prom.wait_for(f"sum(rate(istio_requests_total{{{selector}}}[{WINDOW_S}s])) > 0", bool)
