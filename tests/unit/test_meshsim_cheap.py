"""meshsim made cheap (issue 17) without changing what it exports or how it routes.

The exposition is compared with what prometheus_client's Counter and Histogram render for the same
requests, and routing over `MeshIndex`'s narrowed lists with routing over every object.
"""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coalmine_dev.meshsim import routing, runtime, traffic
from coalmine_dev.meshsim.config import parse_config


def vs(ns: str, name: str, hosts: list[str], http: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "creationTimestamp": f"2026-01-01T00:00:{len(name):02d}Z"}
    return {"metadata": meta, "spec": {"hosts": hosts, "http": http, **spec}}


def dr(ns: str, name: str, host: str, subsets: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


def split(host: str, a: str, b: str, wa: int) -> list[dict[str, Any]]:
    return [
        {"destination": {"host": host, "subset": a}, "weight": wa},
        {"destination": {"host": host, "subset": b}, "weight": 100 - wa},
    ]


# A mesh with the cases the index must keep: several VSs for one host (oldest wins), a gateway-only
# VS, FQDN hosts, a route to another service's host, DRs in two namespaces, a missing subset, a
# header match, and services without any VS.
VIRTUAL_SERVICES = [
    vs("a", "reviews", ["reviews"], [{"name": "p", "route": split("reviews", "v1", "v2", 70)}]),
    vs("a", "reviews-newer", ["reviews.a.svc.cluster.local"], [{"route": split("reviews", "v1", "v3", 50)}]),
    vs("a", "gw", ["ratings"], [{"route": split("ratings", "v1", "v2", 10)}], gateways=["ingress"]),
    vs(
        "b",
        "orders",
        ["orders", "ratings.a"],
        [
            {"match": [{"headers": {"x-beta": {"exact": "1"}}}], "route": split("orders", "v2", "v1", 100)},
            {"route": split("ratings.a.svc.cluster.local", "v1", "nope", 60)},
        ],
    ),
]
DESTINATION_RULES = [
    dr("a", "reviews", "reviews", ["v1", "v2"]),
    dr("b", "reviews-b", "reviews.a.svc.cluster.local", ["v1"]),
    dr("a", "ratings", "ratings", ["v1", "v2"]),
    dr("b", "orders", "orders", ["v1", "v2"]),
]
SERVICES = [("a", "reviews"), ("a", "ratings"), ("b", "orders"), ("b", "reviews"), ("c", "none")]


def config() -> Any:
    services = [
        {
            "namespace": ns,
            "host": host,
            "rps": 300,
            "headers": [{"weight": 1, "headers": {}}, {"weight": 1, "headers": {"x-beta": "1"}}],
        }
        for ns, host in SERVICES
    ]
    services.append({"namespace": "a", "host": "reviews", "rps": 200, "sourceNamespace": "b"})
    return parse_config({"services": services, "destinations": {"a/reviews/v2": {"errorRatio": 0.3}}})


def test_routing_over_the_index_decides_as_over_everything() -> None:
    everything = traffic.generate_slice(random.Random(7), config(), VIRTUAL_SERVICES, DESTINATION_RULES, 2.0)
    index = routing.MeshIndex(VIRTUAL_SERVICES, DESTINATION_RULES)
    indexed = traffic.generate_slice(random.Random(7), config(), VIRTUAL_SERVICES, DESTINATION_RULES, 2.0, index=index)
    assert len(everything) > 2000
    assert indexed == everything
    outcomes = {r.decision.outcome for r in everything}
    assert {routing.OK, routing.NO_ROUTE, routing.NO_CLUSTER} <= outcomes


def test_the_routing_snapshot_is_rebuilt_after_a_change_only() -> None:
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, "", VIRTUAL_SERVICES[:1])
    state.replace(runtime.DESTINATION_RULES, "", DESTINATION_RULES)
    first = state.routing()
    assert state.routing() is first
    changed = vs("a", "reviews", ["reviews"], [{"name": "p", "route": split("reviews", "v1", "v2", 0)}])
    state.apply(runtime.VIRTUAL_SERVICES, "", "MODIFIED", changed)
    second = state.routing()
    assert second is not first
    assert second.index.for_service("a", "reviews")[0] == [changed]


def reference(records: list[traffic.RequestRecord]) -> bytes:
    """What the exposition was before issue 17: prometheus_client's Counter and Histogram."""
    registry = CollectorRegistry()
    requests = Counter(
        "istio_requests_total", runtime.IstioMetrics.REQUESTS_HELP, runtime.ISTIO_LABELS, registry=registry
    )
    duration = Histogram(
        "istio_request_duration_milliseconds",
        runtime.IstioMetrics.DURATION_HELP,
        runtime.ISTIO_LABELS,
        buckets=runtime.ISTIO_DURATION_BUCKETS,
        registry=registry,
    )
    for record in records:
        if not record.routed:
            continue
        for reporter in ("source", "destination") if record.reached_destination else ("source",):
            labels = runtime.istio_labels(record, reporter)
            requests.labels(*labels).inc()
            duration.labels(*labels).observe(record.duration_ms)
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_is_what_prometheus_client_rendered() -> None:
    records = traffic.generate_slice(random.Random(3), config(), VIRTUAL_SERVICES, DESTINATION_RULES, 1.0)
    records += traffic.generate_slice(random.Random(4), config(), VIRTUAL_SERVICES, DESTINATION_RULES, 1.0)
    metrics = runtime.IstioMetrics()
    metrics.record(records[:500])
    metrics.record(records[500:])
    ours, theirs = metrics.exposition(), reference(records)
    assert samples(ours) == samples(theirs)

    # The same lines (series may come in another order), but for the _created timestamps.
    def lines(text: bytes) -> list[str]:
        return sorted(line.rsplit(" ", 1)[0] if "_created{" in line else line for line in text.decode().splitlines())

    assert lines(ours) == lines(theirs)


def test_label_values_are_escaped() -> None:
    metrics = runtime.IstioMetrics()
    text, _, _ = metrics._labels(("a\\b", 'q"', "n\nl", *[""] * (len(runtime.ISTIO_LABELS) - 3)))
    assert 'reporter="a\\\\b"' in text
    assert 'source_workload="q\\""' in text
    assert 'source_workload_namespace="n\\nl"' in text
