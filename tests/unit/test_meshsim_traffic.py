"""meshsim's traffic statistics: arrivals, request mix, error ratios, latency, and config parsing."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from typing import Any

import pytest

from coalmine_dev.meshsim import routing, traffic
from coalmine_dev.meshsim.config import (
    ConfigError,
    DestinationBehaviour,
    HeaderMix,
    Latency,
    parse_config,
    parse_destination,
)
from coalmine_dev.meshsim.runtime import IstioMetrics

NS = "shop"
VS = {
    "metadata": {"name": "reviews", "namespace": NS},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "name": "beta",
                "match": [{"headers": {"user-group": {"exact": "beta"}}}],
                "route": [{"destination": {"host": "reviews", "subset": "canary"}}],
            },
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "reviews", "subset": "stable"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "canary"}, "weight": 10},
                ],
            },
        ],
    },
}
DR = {
    "metadata": {"name": "reviews", "namespace": NS},
    "spec": {
        "host": "reviews",
        "subsets": [
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "v2"}},
        ],
    },
}


def config(**doc: Any) -> Any:
    return parse_config({"services": [{"namespace": NS, "host": "reviews", "rps": 100}], **doc})


@pytest.mark.parametrize(
    ("rate", "duration"),
    [
        pytest.param(5.0, 0.1, id="5rps-100ms-slices"),
        pytest.param(100.0, 0.1, id="100rps-100ms-slices"),
        pytest.param(1000.0, 0.05, id="1000rps-50ms-slices"),
    ],
)
def test_poisson_mean_is_the_rate(rate: float, duration: float) -> None:
    rng = random.Random(11)
    slices = 4000
    counts = [len(traffic.poisson_arrivals(rng, rate, duration)) for _ in range(slices)]
    mean = statistics.fmean(counts)
    expected = rate * duration
    # Poisson: variance == mean; allow 5 standard errors of the mean.
    assert abs(mean - expected) <= 5 * (expected / slices) ** 0.5
    assert statistics.pvariance(counts) == pytest.approx(expected, rel=0.15)


def test_arrivals_lie_within_the_slice() -> None:
    arrivals = traffic.poisson_arrivals(random.Random(0), 500.0, 0.2)
    assert arrivals == sorted(arrivals)
    assert all(0 <= t < 0.2 for t in arrivals)


@pytest.mark.parametrize(
    ("rate", "duration"),
    [pytest.param(0.0, 1.0, id="zero-rate"), pytest.param(10.0, 0.0, id="zero-duration")],
)
def test_no_arrivals(rate: float, duration: float) -> None:
    assert traffic.poisson_arrivals(random.Random(0), rate, duration) == []


@pytest.mark.parametrize(
    "error_ratio",
    [pytest.param(0.0, id="healthy"), pytest.param(0.05, id="5pct"), pytest.param(0.5, id="half"),
     pytest.param(1.0, id="all-fail")],
)  # fmt: skip
def test_error_ratio_is_honoured(error_ratio: float) -> None:
    rng = random.Random(5)
    n = 20000
    behaviour = DestinationBehaviour(error_ratio=error_ratio, error_code=503)
    codes = Counter(traffic.sample_response_code(rng, behaviour) for _ in range(n))
    assert set(codes) <= {200, 503}
    tolerance = 4 * (error_ratio * (1 - error_ratio) / n) ** 0.5 + 1e-9
    assert abs(codes[503] / n - error_ratio) <= tolerance


@pytest.mark.parametrize(
    ("p50", "p99"),
    [
        pytest.param(20.0, 80.0, id="default-20-80"),
        pytest.param(5.0, 500.0, id="heavy-tail"),
        pytest.param(100.0, 120.0, id="narrow"),
    ],
)
def test_latency_quantiles_are_roughly_honoured(p50: float, p99: float) -> None:
    rng = random.Random(9)
    samples = sorted(traffic.sample_latency(rng, Latency(p50, p99)) for _ in range(50000))
    q = statistics.quantiles(samples, n=100)
    assert q[49] == pytest.approx(p50, rel=0.05)
    assert q[98] == pytest.approx(p99, rel=0.10)
    assert min(samples) > 0


def test_fixed_latency() -> None:
    rng = random.Random(0)
    latency = parse_destination({"latency": {"fixedMs": 7}}).latency
    assert {traffic.sample_latency(rng, latency) for _ in range(100)} == {7.0}


def test_header_mix_proportions() -> None:
    rng = random.Random(2)
    mix = (HeaderMix(3, {}), HeaderMix(1, {"user-group": "beta"}))
    n = 20000
    beta = sum(1 for _ in range(n) if traffic.pick_headers(rng, mix).get("user-group") == "beta")
    assert abs(beta / n - 0.25) <= 4 * (0.25 * 0.75 / n) ** 0.5


def test_slice_follows_routes_headers_and_destination_behaviour() -> None:
    cfg = parse_config(
        {
            "services": [
                {
                    "namespace": NS,
                    "host": "reviews",
                    "rps": 20000,
                    "sourceWorkload": "frontend",
                    "headers": [{"weight": 1, "headers": {"user-group": "beta"}}, {"weight": 1, "headers": {}}],
                }
            ],
            "destinations": {f"{NS}/reviews/canary": {"errorRatio": 0.2, "errorCode": 500}},
        }
    )
    records = traffic.generate_slice(random.Random(4), cfg, [VS], [DR], 1.0)
    n = len(records)
    assert abs(n - 20000) < 5 * 20000**0.5
    routes = Counter((r.decision.route or "").rsplit("/", 1)[-1] for r in records)
    # half the requests carry user-group=beta and take the beta route
    assert abs(routes["beta"] / n - 0.5) < 0.02
    primary = [r for r in records if r.decision.route == f"{NS}/reviews/primary"]
    canary_share = sum(1 for r in primary if r.decision.destination and r.decision.destination.subset == "canary")
    assert abs(canary_share / len(primary) - 0.10) < 0.015
    by_dest: dict[str, Counter[int]] = {}
    for r in records:
        assert r.decision.destination is not None
        by_dest.setdefault(r.decision.destination.key, Counter())[r.response_code] += 1
        assert r.service.source_workload == "frontend"
        assert r.response_flags == "-"
        assert r.reached_destination
    stable, canary = by_dest[f"{NS}/reviews/stable"], by_dest[f"{NS}/reviews/canary"]
    assert set(stable) == {200}, "unlisted destinations use the healthy default"
    assert abs(canary[500] / canary.total() - 0.2) < 0.02


def test_slice_is_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[tuple[str | None, int, float]]:
        records = traffic.generate_slice(random.Random(seed), config(), [VS], [DR], 2.0)
        return [(r.decision.route, r.response_code, r.duration_ms) for r in records]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_missing_subset_gives_503_nc_records() -> None:
    dr_without_canary = {**DR, "spec": {**DR["spec"], "subsets": DR["spec"]["subsets"][:1]}}  # type: ignore[index]
    cfg = parse_config({"services": [{"namespace": NS, "host": "reviews", "rps": 2000}]})
    records = traffic.generate_slice(random.Random(4), cfg, [VS], [dr_without_canary], 1.0)
    failed = [r for r in records if r.decision.outcome == routing.NO_CLUSTER]
    assert failed, "10% of primary traffic goes to the undefined canary subset"
    assert {(r.response_code, r.response_flags, r.reached_destination) for r in failed} == {(503, "NC", False)}


def test_service_without_virtual_service_is_unrouted() -> None:
    records = traffic.generate_slice(random.Random(4), config(), [], [DR], 0.5)
    assert records
    assert not any(r.routed for r in records)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param({"destinations": {"a/b/c": {"errorRatio": 1.5}}}, "errorRatio", id="ratio-above-1"),
        pytest.param({"destinations": {"a/b/c": {"latency": {"p50Ms": 50, "p99Ms": 10}}}}, "p99Ms", id="p99-below-p50"),
        pytest.param({"destinations": {"a/b": {}}}, "<namespace>/<host>/<subset>", id="bad-key"),
        pytest.param({"services": [{"namespace": "a", "rps": 1}]}, "host", id="service-without-host"),
        pytest.param({"services": [{"namespace": "a", "host": "b", "rps": -1}]}, "rps", id="negative-rps"),
        pytest.param({"services": [{"namespace": "a", "host": "b", "rps": "fast"}]}, "rps", id="rps-not-a-number"),
    ],
)
def test_config_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_config_defaults_and_round_trip() -> None:
    cfg = parse_config(
        {
            "services": [{"namespace": NS, "host": "reviews", "rps": 5, "source_workload": "lg"}],
            "defaultDestination": {"errorRatio": 0.01},
            "destinations": {f"{NS}/reviews/canary": {"latency": {"p50Ms": 40}}},
        }
    )
    assert cfg.behaviour("x/y/z") == DestinationBehaviour(error_ratio=0.01)
    # unlisted keys of a listed destination come from defaultDestination
    assert cfg.behaviour(f"{NS}/reviews/canary") == DestinationBehaviour(0.01, Latency(40, 80))
    assert cfg.services[f"{NS}/reviews"].source_workload == "lg"
    assert parse_config(cfg.to_dict()) == cfg


def test_a_sidecarless_share_is_served_but_reported_by_the_source_only_without_workload_labels() -> None:
    cfg = parse_config(
        {
            "services": [{"namespace": NS, "host": "reviews", "rps": 20000}],
            "destinations": {f"{NS}/reviews/canary": {"sidecarless": 0.6}},
        }
    )
    records = traffic.generate_slice(random.Random(4), cfg, [VS], [DR], 1.0)
    canary = [r for r in records if r.decision.destination and r.decision.destination.subset == "canary"]
    stable = [r for r in records if r.decision.destination and r.decision.destination.subset == "stable"]
    assert all(r.reached_destination and r.response_code == 200 for r in canary), "served all the same"
    assert all(r.reported_by_destination for r in stable), "other destinations keep their sidecars"
    unreported = [r for r in canary if not r.reported_by_destination]
    assert abs(len(unreported) / len(canary) - 0.6) < 0.05
    metrics = IstioMetrics()
    metrics.record(unreported[:1])
    text = metrics.exposition().decode()
    assert 'reporter="source"' in text
    assert 'reporter="destination"' not in text
    assert 'destination_version="unknown"' in text


def _mirror_samples(route_extra: dict[str, Any], behaviours: dict[str, Any] | None = None) -> tuple[Any, Counter[Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    from coalmine_dev.meshsim import runtime

    vs = {
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "primary",
                    "route": [{"destination": {"host": "reviews", "subset": "stable"}, "weight": 100}],
                    **route_extra,
                }
            ],
        },
    }
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, "", [vs])
    state.replace(runtime.DESTINATION_RULES, "", [DR])
    sim = runtime.Simulator(config(destinations=behaviours or {}), state, runtime.IstioMetrics(), seed=3)
    sim.tick(10.0)
    seen: Counter[Any] = Counter()
    for family in text_string_to_metric_families(sim.metrics.exposition().decode()):
        for s in family.samples:
            if s.name == "istio_requests_total":
                seen[(s.labels["reporter"], s.labels["destination_version"], s.labels["response_code"])] += s.value
    return sim.counts(), seen


def test_mirrored_copies_are_reported_by_the_destination_only_with_the_canarys_behaviour() -> None:
    counts, seen = _mirror_samples(
        {"mirror": {"host": "reviews", "subset": "canary"}, "mirrorPercentage": {"value": 50}},
        {f"{NS}/reviews/canary": {"errorRatio": 0.3}},
    )
    users = seen[("source", "v1", "200")]
    assert users == seen[("destination", "v1", "200")] == counts["total"], "users reach the stable alone"
    assert not any(reporter == "source" and version == "v2" for reporter, version, _ in seen), "no copy at the source"
    copies = seen[("destination", "v2", "200")] + seen[("destination", "v2", "500")]
    assert copies == counts["mirrored"][f"{NS}/reviews/canary"], "each copy is reported once, by the destination"
    assert 0.4 * users < copies < 0.6 * users, "mirrorPercentage 50"
    assert 0.2 < seen[("destination", "v2", "500")] / copies < 0.4, "the canary's own error ratio"
    assert f"{NS}/reviews/canary" not in counts["destinations"], "a copy is never a user response"


@pytest.mark.parametrize(
    ("route_extra", "share"),
    [
        ({"mirror": {"host": "reviews", "subset": "canary"}}, 1.0),  # no percentage: 100 %
        ({"mirror": {"host": "reviews", "subset": "canary"}, "mirrorPercent": 20}, 0.2),
        ({"mirrors": [{"destination": {"host": "reviews", "subset": "canary"}, "percentage": {"value": 30}}]}, 0.3),
        ({"mirror": {"host": "reviews", "subset": "canary"}, "mirrorPercentage": {"value": 0}}, 0.0),
    ],
    ids=["mirror", "mirrorPercent", "mirrors", "zero"],
)
def test_mirror_percentages_as_istio_reads_them(route_extra: dict[str, Any], share: float) -> None:
    counts, seen = _mirror_samples(route_extra)
    copies = seen[("destination", "v2", "200")]
    assert copies == pytest.approx(share * counts["total"], abs=0.05 * counts["total"] + 1)
