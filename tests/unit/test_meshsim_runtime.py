"""meshsim's shell without an API server: metrics exposition, counts, and the HTTP control API.

The watchers are exercised against the real API server in tests/integration/test_meshsim.py;
here the mesh state is filled directly, as the watchers would fill it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coalmine_dev.meshsim import runtime
from coalmine_dev.meshsim.client import MeshsimClient
from coalmine_dev.meshsim.config import parse_config

NS = "shop"
VS = {
    "metadata": {"name": "reviews", "namespace": NS, "resourceVersion": "7"},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "reviews", "subset": "stable"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "canary"}, "weight": 10},
                ],
            }
        ],
    },
}
DR = {
    "metadata": {"name": "reviews", "namespace": NS, "resourceVersion": "8"},
    "spec": {
        "host": "reviews",
        "subsets": [
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "v2"}},
        ],
    },
}


def make_simulator(**doc: Any) -> runtime.Simulator:
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, "", [VS])
    state.replace(runtime.DESTINATION_RULES, "", [DR])
    cfg = parse_config({"services": [{"namespace": NS, "host": "reviews", "rps": 1000}], **doc})
    return runtime.Simulator(cfg, state, runtime.IstioMetrics(), seed=1)


def families(sim: runtime.Simulator) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(sim.metrics.exposition().decode())}


def test_metrics_have_istio_names_labels_and_buckets() -> None:
    sim = make_simulator()
    sim.tick(1.0)
    fams = families(sim)
    requests = [s for s in fams["istio_requests"].samples if s.name == "istio_requests_total"]
    assert requests
    for sample in requests:
        assert set(sample.labels) == set(runtime.ISTIO_LABELS)
    dest = {s.labels["destination_version"]: s for s in requests if s.labels["reporter"] == "destination"}
    assert set(dest) == {"v1", "v2"}
    v2 = dest["v2"].labels
    assert v2 == {
        "reporter": "destination",
        "source_workload": "loadgen",
        "source_workload_namespace": NS,
        "source_app": "loadgen",
        "destination_workload": "reviews-v2",
        "destination_workload_namespace": NS,
        "destination_app": "reviews",
        "destination_version": "v2",
        "destination_service": f"reviews.{NS}.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": NS,
        "destination_canonical_service": "reviews",
        "destination_canonical_revision": "v2",
        "request_protocol": "http",
        "response_code": "200",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
        "grpc_response_status": "",
    }
    source_total = sum(s.value for s in requests if s.labels["reporter"] == "source")
    assert source_total == sum(s.value for s in dest.values()) == sim.counts()["total"]
    buckets = sorted(
        {
            float(s.labels["le"])
            for s in fams["istio_request_duration_milliseconds"].samples
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
        }
    )
    assert buckets == [float(b) for b in runtime.ISTIO_DURATION_BUCKETS]


def test_error_series_appears_with_the_first_error() -> None:
    sim = make_simulator()
    sim.tick(0.5)

    def codes() -> set[str]:
        return {
            s.labels["response_code"]
            for s in families(sim)["istio_requests"].samples
            if s.name == "istio_requests_total"
        }

    assert codes() == {"200"}
    sim.set_destination(f"{NS}/reviews/canary", {"errorRatio": 1.0, "errorCode": 503})
    sim.tick(0.5)
    assert codes() == {"200", "503"}
    assert sim.counts()["responses"][f"{NS}/reviews/canary"]["503"] > 0


def test_missing_subset_is_reported_by_source_only() -> None:
    sim = make_simulator()
    sim.state.replace(runtime.DESTINATION_RULES, "", [])
    sim.tick(0.5)
    samples = [s for s in families(sim)["istio_requests"].samples if s.name == "istio_requests_total"]
    assert {(s.labels["reporter"], s.labels["response_code"], s.labels["response_flags"]) for s in samples} == {
        ("source", "503", "NC")
    }
    assert {s.labels["destination_service_name"] for s in samples} == {"reviews"}


def test_counts_follow_weights_and_reset() -> None:
    sim = make_simulator()
    for _ in range(20):
        sim.tick(0.5)
    counts = sim.counts()
    stable, canary = counts["destinations"][f"{NS}/reviews/stable"], counts["destinations"][f"{NS}/reviews/canary"]
    assert counts["total"] == stable + canary == counts["routes"][f"{NS}/reviews/primary"]
    assert abs(canary / counts["total"] - 0.10) < 0.015
    sim.reset_counts()
    assert sim.counts()["total"] == 0


def test_unrouted_services_are_counted_not_exported() -> None:
    sim = make_simulator()
    sim.set_service("other", "ghost", {"rps": 500})
    sim.tick(0.5)
    assert sim.counts()["unrouted"]["other/ghost"] > 0
    samples = families(sim)["istio_requests"].samples
    assert all(s.labels["destination_service_namespace"] != "other" for s in samples)


@pytest.fixture
def api() -> Iterator[MeshsimClient]:
    sim = make_simulator()
    server = ThreadingHTTPServer(("127.0.0.1", 0), runtime.make_handler(sim, expected_watchers=2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    client = MeshsimClient(f"{host!s}:{port}")
    client.tick = sim.tick  # type: ignore[attr-defined]
    yield client
    client.close()
    server.shutdown()
    server.server_close()


def test_http_api(api: MeshsimClient) -> None:
    assert api.healthz() == {"status": "ok", "synced": True}  # both kinds were listed (replace()d)
    assert api.mesh() == {
        "virtualservices": {f"{NS}/reviews": "7"},
        "destinationrules": {f"{NS}/reviews": "8"},
        "endpoints": {},  # no Service with a selector: nothing followed
    }

    changed = api.set_destination(NS, "reviews", "canary", error_ratio=0.5, p50_ms=100, p99_ms=900)
    assert changed == {
        "errorRatio": 0.5,
        "latency": {"p50Ms": 100.0, "p99Ms": 900.0},
        "errorCode": 500,
        "sidecarless": 0.0,
    }
    assert api.config()["destinations"][f"{NS}/reviews/canary"]["errorRatio"] == 0.5
    api.reset_destination(NS, "reviews", "canary")
    assert api.config()["destinations"] == {}

    service = api.set_service(NS, "reviews", 250, headers=[(1.0, {"user-group": "beta"})], source_workload="web")
    assert (service["rps"], service["sourceWorkload"]) == (250, "web")
    assert service["headers"] == [{"weight": 1.0, "headers": {"user-group": "beta"}}]

    api.tick(1.0)  # type: ignore[attr-defined]
    assert api.counts()["total"] > 0
    assert "istio_requests_total{" in api.metrics_text()
    api.reset_counts()
    assert api.counts()["total"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("PUT", f"/destinations/{NS}/reviews/canary", {"errorRatio": 2}, 400, id="ratio-out-of-range"),
        pytest.param("PUT", f"/services/{NS}/reviews", {"rps": -3}, 400, id="negative-rps"),
        pytest.param("GET", "/nope", None, 404, id="unknown-path"),
        pytest.param("PUT", "/destinations/only-two", {}, 404, id="short-destination-path"),
    ],
)
def test_http_api_errors(api: MeshsimClient, method: str, path: str, body: Any, status: int) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        api._call(method, path, body)
    assert info.value.response.status_code == status
    assert "error" in info.value.response.json()


def test_grpc_services_report_grpc_status_with_http_200_and_ambient_ones_report_as_a_waypoint() -> None:
    sim = make_simulator(
        services=[{"namespace": NS, "host": "reviews", "rps": 1000, "protocol": "grpc", "mode": "ambient"}],
        destinations={f"{NS}/reviews/canary": {"grpcErrorRatio": 1.0, "grpcErrorCode": 5}},
    )
    sim.tick(1.0)
    requests = [s for s in families(sim)["istio_requests"].samples if s.name == "istio_requests_total"]
    assert {s.labels["reporter"] for s in requests} == {"waypoint"}, "ambient: the waypoint alone reports"
    by_version = {(s.labels["destination_version"], s.labels["grpc_response_status"]) for s in requests}
    assert by_version == {("v1", "0"), ("v2", "5")}
    assert {s.labels["request_protocol"] for s in requests} == {"grpc"}
    assert {s.labels["response_code"] for s in requests} == {"200"}
