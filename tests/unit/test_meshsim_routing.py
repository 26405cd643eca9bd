"""meshsim's routing rules, table-driven, on plain VirtualService/DestinationRule dicts."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from coalmine_dev.meshsim import routing
from coalmine_dev.meshsim.routing import Request, route_request

NS = "shop"


def vs(http: list[dict[str, Any]], *, name: str = "reviews", namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"hosts": ["reviews"], "http": http, **spec},
    }


def dr(subsets: dict[str, str | None], *, host: str = "reviews", namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {"name": host, "namespace": namespace},
        "spec": {
            "host": host,
            "subsets": [
                {"name": name, "labels": {"app": host} | ({"version": v} if v else {})} for name, v in subsets.items()
            ],
        },
    }


def dest(subset: str | None, weight: int | None = None, host: str = "reviews") -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host} | ({"subset": subset} if subset else {})}
    if weight is not None:
        d["weight"] = weight
    return d


DR = dr({"stable": "v1", "canary": "v2"})
SPLIT_90_10 = vs([{"name": "primary", "route": [dest("stable", 90), dest("canary", 10)]}])
BETA_FIRST = vs(
    [
        {
            "name": "beta",
            "match": [{"headers": {"user-group": {"exact": "beta"}}}],
            "route": [dest("canary", 100)],
        },
        {"name": "primary", "route": [dest("stable", 100), dest("canary", 0)]},
    ]
)


def decide(
    virtual_service: dict[str, Any], request: Request | None = None, drs: list[dict[str, Any]] | None = None
) -> routing.Decision:
    drs = [DR] if drs is None else drs
    return route_request([virtual_service], drs, NS, "reviews", request or Request(), random.Random(1))


@pytest.mark.parametrize(
    ("virtual_service", "request_", "route", "version"),
    [
        pytest.param(BETA_FIRST, Request(headers={"user-group": "beta"}), "beta", "v2", id="header-exact-beta-to-v2"),
        pytest.param(
            BETA_FIRST, Request(headers={"User-Group": "beta"}), "beta", "v2", id="header-name-case-insensitive"
        ),
        pytest.param(
            BETA_FIRST, Request(headers={"user-group": "alpha"}), "primary", "v1", id="other-header-falls-through"
        ),
        pytest.param(BETA_FIRST, Request(), "primary", "v1", id="no-header-falls-through"),
        pytest.param(
            vs(
                [
                    {"name": "first", "match": [{"uri": {"prefix": "/api"}}], "route": [dest("canary")]},
                    {"name": "second", "match": [{"uri": {"prefix": "/api/v1"}}], "route": [dest("stable")]},
                ]
            ),
            Request(uri="/api/v1/items"),
            "first",
            "v2",
            id="first-match-wins",
        ),
        pytest.param(
            vs(
                [
                    {"name": "exact", "match": [{"uri": {"exact": "/login"}}], "route": [dest("canary")]},
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(uri="/login/x"),
            "rest",
            "v1",
            id="uri-exact-is-exact",
        ),
        pytest.param(
            vs(
                [
                    {"name": "re", "match": [{"headers": {"x-id": {"regex": "[0-9]+"}}}], "route": [dest("canary")]},
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(headers={"x-id": "12a"}),
            "rest",
            "v1",
            id="regex-is-full-match",
        ),
        pytest.param(
            vs(
                [
                    {"name": "re", "match": [{"headers": {"x-id": {"regex": "[0-9]+"}}}], "route": [dest("canary")]},
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(headers={"x-id": "123"}),
            "re",
            "v2",
            id="regex-matches",
        ),
        pytest.param(
            vs(
                [
                    {
                        "name": "and",
                        "match": [{"headers": {"a": {"exact": "1"}}, "uri": {"prefix": "/x"}}],
                        "route": [dest("canary")],
                    },
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(headers={"a": "1"}, uri="/y"),
            "rest",
            "v1",
            id="conditions-in-a-block-are-anded",
        ),
        pytest.param(
            vs(
                [
                    {
                        "name": "or",
                        "match": [{"headers": {"a": {"exact": "1"}}}, {"uri": {"prefix": "/y"}}],
                        "route": [dest("canary")],
                    },
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(uri="/y"),
            "or",
            "v2",
            id="blocks-are-ored",
        ),
        pytest.param(
            vs(
                [
                    {"name": "present", "match": [{"headers": {"x-debug": {}}}], "route": [dest("canary")]},
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(headers={"x-debug": ""}),
            "present",
            "v2",
            id="empty-string-match-means-present",
        ),
        pytest.param(
            vs(
                [
                    {"name": "src", "match": [{"sourceLabels": {"app": "x"}}], "route": [dest("canary")]},
                    {"name": "rest", "route": [dest("stable")]},
                ]
            ),
            Request(),
            "rest",
            "v1",
            id="unsupported-condition-never-matches",
        ),
    ],
)
def test_route_selection(virtual_service: dict[str, Any], request_: Request, route: str, version: str) -> None:
    decision = decide(virtual_service, request_)
    assert decision.outcome == routing.OK
    assert decision.route == f"{NS}/reviews/{route}"
    assert decision.destination is not None
    assert decision.destination.version == version


def split(virtual_service: dict[str, Any], n: int = 20000, seed: int = 7) -> Counter[str]:
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    for _ in range(n):
        d = route_request([virtual_service], [DR], NS, "reviews", Request(), rng)
        out[d.destination.subset if d.destination else d.outcome] += 1
    return out


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param([dest("stable", 90), dest("canary", 10)], {"stable": 0.9, "canary": 0.1}, id="90-10"),
        pytest.param([dest("stable", 50), dest("canary", 50)], {"stable": 0.5, "canary": 0.5}, id="50-50"),
        pytest.param([dest("stable", 3), dest("canary", 1)], {"stable": 0.75, "canary": 0.25}, id="relative-3-1"),
        pytest.param([dest("stable", 100), dest("canary", 0)], {"stable": 1.0}, id="weight-0-gets-nothing"),
        pytest.param([dest("stable", 0), dest("canary", 100)], {"canary": 1.0}, id="weight-0-first"),
        pytest.param([dest("canary")], {"canary": 1.0}, id="single-destination-without-weight"),
        pytest.param([dest("canary", 0)], {"canary": 1.0}, id="single-destination-weight-0"),
        pytest.param([dest("stable", 100), dest("canary")], {"stable": 1.0}, id="unset-weight-is-0"),
        pytest.param([dest("stable"), dest("canary")], {routing.NO_ROUTE: 1.0}, id="all-zero-is-no-route"),
    ],
)
def test_weighted_split(route: list[dict[str, Any]], expected: dict[str, float]) -> None:
    n = 20000
    got = split(vs([{"name": "primary", "route": route}]), n)
    assert set(got) == set(expected)
    for key, share in expected.items():
        # 4 standard deviations of a binomial proportion, plus a floor for 0/1 shares.
        tolerance = 4 * (share * (1 - share) / n) ** 0.5 + 1e-9
        assert abs(got[key] / n - share) <= tolerance, (key, got)


def test_split_is_reproducible_with_a_seed() -> None:
    assert split(SPLIT_90_10, 1000, seed=3) == split(SPLIT_90_10, 1000, seed=3)


@pytest.mark.parametrize(
    ("drs", "outcome", "version", "code", "flags"),
    [
        pytest.param([dr({"stable": "v1", "canary": "v2"})], routing.OK, "v2", None, "-", id="version-from-subset"),
        pytest.param(
            [dr({"stable": "1.0.0", "canary": "2.0.0-rc1"})], routing.OK, "2.0.0-rc1", None, "-", id="any-version-value"
        ),
        pytest.param([dr({"canary": None})], routing.OK, "unknown", None, "-", id="subset-without-version-label"),
        pytest.param([dr({"stable": "v1"})], routing.NO_CLUSTER, "unknown", 503, "NC", id="subset-missing-in-dr"),
        pytest.param([], routing.NO_CLUSTER, "unknown", 503, "NC", id="no-destination-rule"),
        pytest.param(
            [dr({"canary": "v2"}, host="ratings")], routing.NO_CLUSTER, "unknown", 503, "NC", id="dr-for-another-host"
        ),
        pytest.param(
            [
                {
                    **dr({"canary": "v2"}),
                    "spec": {**dr({"canary": "v2"})["spec"], "host": f"reviews.{NS}.svc.cluster.local"},
                }
            ],
            routing.OK,
            "v2",
            None,
            "-",
            id="dr-host-as-fqdn",
        ),
    ],
)
def test_version_from_destination_rule(
    drs: list[dict[str, Any]], outcome: str, version: str, code: int | None, flags: str
) -> None:
    decision = decide(vs([{"name": "primary", "route": [dest("canary")]}]), drs=drs)
    assert decision.outcome == outcome
    assert decision.destination is not None
    assert decision.destination.key == f"{NS}/reviews/canary"
    assert decision.destination.version == version
    assert decision.response_code == code
    assert decision.response_flags == flags


@pytest.mark.parametrize(
    ("virtual_services", "applies"),
    [
        pytest.param([vs([], name="a")], True, id="short-host-in-vs-namespace"),
        pytest.param([{**vs([]), "spec": {"hosts": [f"reviews.{NS}.svc.cluster.local"]}}], True, id="fqdn-host"),
        pytest.param([{**vs([]), "spec": {"hosts": [f"reviews.{NS}"]}}], True, id="name-dot-namespace-host"),
        pytest.param([vs([], namespace="other")], False, id="short-host-resolves-in-other-namespace"),
        pytest.param([vs([], gateways=["istio-system/gw"])], False, id="gateway-only-vs-ignored"),
        pytest.param([vs([], gateways=["mesh", "istio-system/gw"])], True, id="mesh-gateway-applies"),
        pytest.param([], False, id="no-vs"),
    ],
)
def test_find_virtual_service(virtual_services: list[dict[str, Any]], applies: bool) -> None:
    assert (routing.find_virtual_service(virtual_services, NS, "reviews") is not None) is applies


def test_oldest_virtual_service_wins_a_conflict() -> None:
    older = vs([{"name": "old", "route": [dest("stable")]}], name="z-old")
    newer = vs([{"name": "new", "route": [dest("canary")]}], name="a-new")
    newer["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"
    decision = route_request([newer, older], [DR], NS, "reviews", Request(), random.Random(0))
    assert decision.route == f"{NS}/z-old/old"


@pytest.mark.parametrize(
    ("http", "route"),
    [
        pytest.param(
            [{"name": "only-beta", "match": [{"headers": {"g": {"exact": "b"}}}], "route": [dest("canary")]}],
            f"{NS}/reviews/<no match>",
            id="nothing-matches",
        ),
        pytest.param(
            [{"name": "redir", "redirect": {"uri": "/x"}}], f"{NS}/reviews/redir", id="redirect-not-simulated"
        ),
        pytest.param([{"route": [dest("stable"), dest("canary")]}], f"{NS}/reviews/#0", id="unnamed-route-all-zero"),
    ],
)
def test_no_route_is_404_nr(http: list[dict[str, Any]], route: str) -> None:
    decision = decide(vs(http))
    assert (decision.outcome, decision.response_code, decision.response_flags) == (routing.NO_ROUTE, 404, "NR")
    assert decision.route == route
    assert decision.destination is None


def test_no_virtual_service_is_unrouted() -> None:
    decision = route_request([], [DR], NS, "reviews", Request(), random.Random(0))
    assert decision.outcome == routing.NO_ROUTE
    assert decision.route is None


def test_destination_in_another_namespace() -> None:
    route = [{"destination": {"host": "ratings.backend.svc.cluster.local", "subset": "v9"}}]
    backend_dr = dr({"v9": "v9"}, host="ratings", namespace="backend")
    decision = decide(vs([{"name": "x", "route": route}]), drs=[backend_dr])
    assert decision.destination == routing.Destination("backend", "ratings", "v9", "v9")
    assert decision.destination.fqdn == "ratings.backend.svc.cluster.local"


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        pytest.param("reviews", "shop", "reviews.shop.svc.cluster.local", id="short"),
        pytest.param("reviews.other", "shop", "reviews.other.svc.cluster.local", id="name.ns"),
        pytest.param("reviews.other.svc", "shop", "reviews.other.svc.cluster.local", id="name.ns.svc"),
        pytest.param("reviews.other.svc.cluster.local", "shop", "reviews.other.svc.cluster.local", id="fqdn"),
        pytest.param("api.example.com", "shop", "api.example.com", id="external"),
    ],
)
def test_fqdn(name: str, namespace: str, expected: str) -> None:
    assert routing.fqdn(name, namespace) == expected


def test_a_mesh_httproute_splits_a_service_by_backend_ref_weights() -> None:
    import random as _random

    route = {
        "metadata": {"name": "order", "namespace": NS},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "order"}],
            "rules": [
                {
                    "name": "beta",
                    "matches": [{"headers": [{"name": "user-group", "value": "beta"}]}],
                    "backendRefs": [{"name": "order-v2"}],
                },
                {
                    "name": "primary",
                    "backendRefs": [{"name": "order-v1", "weight": 70}, {"name": "order-v2", "weight": 30}],
                },
            ],
        },
    }
    rng = _random.Random(7)
    seen: dict[str, int] = {}
    for _ in range(2000):
        d = routing.route_request([], [], NS, "order", routing.Request(), rng, http_routes=[route])
        assert d.outcome == routing.OK
        assert d.destination is not None
        assert d.route == f"{NS}/order/primary"
        seen[d.destination.host] = seen.get(d.destination.host, 0) + 1
    assert 0.26 < seen["order-v2"] / 2000 < 0.34
    beta = routing.route_request(
        [], [], NS, "order", routing.Request(headers={"user-group": "beta"}), rng, http_routes=[route]
    )
    assert beta.destination is not None
    assert (beta.route, beta.destination.host, beta.destination.subset) == (f"{NS}/order/beta", "order-v2", "")
    assert routing.route_request([], [], NS, "other", routing.Request(), rng, http_routes=[route]).route is None
