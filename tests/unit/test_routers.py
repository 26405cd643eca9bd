"""The HTTPRoute router (core/httproute.py), resolution through it, and the ambient preflight."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from builders import rollout as build
from builders import spec

from coalmine.core import httproute, preflight, validation
from coalmine.core.models import HTTP_ROUTE
from coalmine.core.routes import RouteGone
from coalmine.core.validation import Cluster


def http_route(weights: tuple[int, int] = (100, 0), generation: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "order", "namespace": "shop", "generation": generation},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "order", "port": 8080}],
            "rules": [
                {
                    "name": "beta",
                    "matches": [{"headers": [{"name": "user-group", "value": "beta"}]}],
                    "backendRefs": [{"name": "order-v2", "port": 8080}],
                },
                {
                    "name": "primary",
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]},
                        }
                    ],
                    "backendRefs": [
                        {"name": "order-v1", "port": 8080, "weight": weights[0]},
                        *([{"name": "order-v2", "port": 8080, "weight": weights[1]}] if weights[1] else []),
                    ],
                },
            ],
        },
    }


def route_spec(**overrides: Any) -> dict[str, Any]:
    body = spec(
        httpRoute={"name": "order", "rules": ["primary"]}, stable={"host": "order-v1"}, canary={"host": "order-v2"}
    )
    body.pop("virtualService")
    return {**body, **overrides}


def rollout(**overrides: Any) -> Any:
    return build(route_spec(**overrides))


def test_an_httproute_resolves_to_two_services_selected_by_service_name() -> None:
    resolution = validation.resolve(rollout(), Cluster(http_route()))
    assert resolution.problem is None
    assert resolution.traffic is not None
    assert resolution.traffic.kind == HTTP_ROUTE
    assert resolution.target is not None
    assert resolution.target.canary.service_name == "order-v2"
    assert resolution.target.canary.matchers == ()
    assert resolution.target.shared_by == ("beta",)


def test_the_weight_patch_touches_only_the_owned_rules_backend_refs() -> None:
    route = http_route()
    traffic = validation.resolve(rollout(), Cluster(route)).traffic
    assert traffic is not None
    ops = httproute.weight_patch(route, traffic, 30)
    assert [op["op"] for op in ops] == ["test", "test", "replace"]
    assert {op["path"] for op in ops} == {"/spec/rules/1/name", "/spec/rules/1/backendRefs"}
    after = jsonpatch.apply_patch(route, ops)
    assert after["spec"]["rules"][1]["backendRefs"] == [
        {"name": "order-v1", "port": 8080, "weight": 70},
        {"name": "order-v2", "port": 8080, "weight": 30},
    ]
    unowned = copy.deepcopy(after)
    unowned["spec"]["rules"][1].pop("backendRefs")
    expected = copy.deepcopy(route)
    expected["spec"]["rules"][1].pop("backendRefs")
    assert unowned == expected, "matches, filters, other rules and parentRefs stay as they are"
    assert httproute.weight_patch(after, traffic, 30) == []
    gone = copy.deepcopy(route)
    gone["spec"]["rules"][1]["name"] = "renamed"
    with pytest.raises(RouteGone, match="no rule 'primary'"):
        httproute.weight_patch(gone, traffic, 50)


@pytest.mark.parametrize(
    ("backend_refs", "weight"),
    [
        ([{"name": "order-v2", "port": 8080}], 100),  # no weight: Gateway API's 1, all of it alone
        ([{"name": "order-v2", "port": 8080, "weight": 5}], 100),
        ([{"name": "order-v1", "port": 8080}], 0),
        ([{"name": "order-v2", "port": 8080, "weight": 1}, {"name": "order-v1", "port": 8080, "weight": 0}], 100),
    ],
)
def test_a_rule_already_sending_the_weight_in_other_words_is_not_rewritten(
    backend_refs: list[dict[str, Any]], weight: int
) -> None:
    route = http_route()
    traffic = validation.resolve(rollout(), Cluster(route)).traffic
    assert traffic is not None
    route["spec"]["rules"][1]["backendRefs"] = backend_refs
    assert httproute.weight_patch(route, traffic, weight) == []
    assert httproute.weight_patch(route, traffic, 10) != [], "a split is still written"


def test_a_service_host_and_no_subset_are_required_with_httproute() -> None:
    body = rollout(canary={"host": "order", "subset": "v2"})
    problem = validation.resolve(body, Cluster(http_route())).problem
    assert problem is not None
    assert problem.message.startswith("spec.canary.subset: with spec.httpRoute each version is a Service")
    both = route_spec(virtualService={"name": "order"})
    with pytest.raises(ValueError, match="set exactly one of virtualService and httpRoute"):
        build(both)


def _accepted(route: dict[str, Any], generation: int, accepted: str = "True", resolved: str = "True") -> dict[str, Any]:
    route = copy.deepcopy(route)
    conditions = [
        {"type": "Accepted", "status": accepted, "observedGeneration": generation, "reason": "Accepted", "message": ""},
        {
            "type": "ResolvedRefs",
            "status": resolved,
            "observedGeneration": generation,
            "reason": "BackendNotFound",
            "message": "order-v3 not found",
        },
    ]
    route["status"] = {
        "parents": [
            {"parentRef": {"kind": "Service", "name": "order"}, "controllerName": "sim", "conditions": conditions}
        ]
    }
    return route


def test_acceptance_is_for_the_current_generation() -> None:
    route = http_route(generation=3)
    assert "no route controller has reported" in (httproute.not_accepted(route) or "")
    assert "has not reported Accepted for generation 3" in (httproute.not_accepted(_accepted(route, 2)) or "")
    assert httproute.not_accepted(_accepted(route, 3)) is None
    why = httproute.not_accepted(_accepted(route, 3, resolved="False")) or ""
    assert "ResolvedRefs is False for generation 3" in why
    assert "order-v3 not found" in why


AMBIENT = {"istio.io/dataplane-mode": "ambient"}


@pytest.mark.parametrize(
    ("kind", "ns", "services", "parents", "expected"),
    [
        ("VirtualService", {}, {"order": {}}, None, []),
        ("HTTPRoute", {}, {"order-v1": {}, "order-v2": {}}, None, ["namespace shop is not enrolled"]),
        ("VirtualService", AMBIENT, {"order": {"istio.io/use-waypoint": "w"}}, None, ["VirtualService is Alpha"]),
        (
            "HTTPRoute",
            AMBIENT,
            {"order-v1": {}, "order-v2": {}},
            None,
            ["order-v1 has no waypoint", "order-v2 has no waypoint"],
        ),
        ("HTTPRoute", {**AMBIENT, "istio.io/use-waypoint": "w"}, {"order-v1": {}, "order-v2": {}}, None, []),
        (
            "HTTPRoute",
            {**AMBIENT, "istio.io/use-waypoint": "w"},
            {"order-v1": {}, "order-v2": {"istio.io/dataplane-mode": "none"}},
            None,
            ["order-v2 is not enrolled"],
        ),
        (
            "HTTPRoute",
            {**AMBIENT, "istio.io/use-waypoint": "w"},
            {"order-v1": {}, "order-v2": {}},
            "Gateway",
            ["bypasses the waypoint"],
        ),
        (
            "HTTPRoute",
            {**AMBIENT, "istio.io/use-waypoint": "w", "istio.io/ingress-use-waypoint": "true"},
            {"order-v1": {}, "order-v2": {}},
            "Gateway",
            [],
        ),
    ],
)
def test_preflight(
    kind: str, ns: dict[str, str], services: dict[str, Any], parents: str | None, expected: list[str]
) -> None:
    route = http_route()
    if parents == "Gateway":
        route["spec"]["parentRefs"] = [{"name": "ingress", "namespace": "istio-ingress"}]
    found = preflight.check(kind, "shop", ns, services, route)
    assert len(found) == len(expected), found
    for text, problem in zip(expected, found, strict=True):
        assert text in problem
