"""validation.resolve: every way a Rollout can miss its VirtualService or DestinationRule."""

from __future__ import annotations

from typing import Any

import pytest
from builders import destination_rule, parsed_spec, resolve, virtual_service

from coalmine.core.models import Destination, RolloutSpec
from coalmine.core.validation import Problem, Target, same_host


def test_resolves_the_seed_scenario() -> None:
    target = resolve(parsed_spec(), "shop", virtual_service(), [destination_rule()])
    assert isinstance(target, Target)
    assert target.traffic.routes == ("primary",)
    assert target.destination_rule == "order"
    assert target.canary.matchers == (("destination_version", "v2"),)
    assert target.stable.service_name == "order"


def test_host_defaults_to_the_vs_only_host_and_routes_to_the_only_route() -> None:
    body = parsed_spec(virtualService={"name": "order"}, stable={"subset": "v1"}, canary={"subset": "v2"})
    target = resolve(body, "shop", virtual_service(extra=False), [destination_rule()])
    assert isinstance(target, Target)
    assert target.traffic.routes == ("primary",)
    assert target.stable.host == "order"


def test_selector_replaces_the_version_matcher() -> None:
    body = parsed_spec(analysis={"selector": {"canary": {"destination_workload": "order-canary"}}})
    target = resolve(body, "shop", virtual_service(), [destination_rule()])
    assert isinstance(target, Target)
    assert target.canary.matchers == (("destination_workload", "order-canary"),)
    assert target.stable.matchers == (("destination_version", "v1"),)


def _dr_without_version() -> dict[str, Any]:
    dr = destination_rule()
    dr["spec"]["subsets"][1]["labels"] = {"track": "canary"}
    return dr


@pytest.mark.parametrize(
    ("spec_overrides", "vs", "rules", "waiting", "expected"),
    [
        pytest.param(
            {},
            None,
            [destination_rule()],
            True,
            "VirtualService shop/order (spec.virtualService.name) not found",
            id="vs-missing",
        ),
        pytest.param(
            {}, virtual_service(), [], True, "no DestinationRule in namespace shop has host order", id="dr-missing"
        ),
        pytest.param(
            {"destinationRule": {"name": "other"}},
            virtual_service(),
            [destination_rule()],
            True,
            "DestinationRule shop/other (spec.destinationRule.name) not found",
            id="named-dr-missing",
        ),
        pytest.param(
            {"virtualService": {"name": "order", "routes": ["main"]}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.virtualService.routes[0]: VirtualService shop/order has no http route named 'main' (routes: beta, primary)",
            id="route-missing",
        ),
        pytest.param(
            {"virtualService": {"name": "order"}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.virtualService.routes: VirtualService shop/order has 2 http routes (beta, primary)",
            id="routes-needed",
        ),
        pytest.param(
            {"canary": {"host": "order", "subset": "v3"}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.canary.subset: DestinationRule shop/order defines no subset 'v3' (subsets: v1, v2)",
            id="subset-missing",
        ),
        pytest.param(
            {},
            virtual_service(),
            [_dr_without_version()],
            False,
            "spec.canary.subset: subset 'v2' of DestinationRule shop/order has no 'version' label",
            id="no-version-label",
        ),
        pytest.param(
            {"canary": {"host": "order", "subset": "v1"}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.canary: the canary is the stable destination",
            id="canary-is-stable",
        ),
        pytest.param(
            {"steps": [{"weight": 30}, {"weight": 10}, {"weight": 100}]},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.steps[1].weight: 10 does not increase on 30",
            id="weights-decrease",
        ),
        pytest.param(
            {"steps": [{"weight": 10}, {"weight": 50}]},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.steps[1].weight: the last step must be 100, not 50",
            id="last-not-100",
        ),
        pytest.param(
            {"analysis": {"interval": "10s", "checkEvery": "30s"}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.analysis.checkEvery: must not be longer than interval",
            id="check-longer-than-interval",
        ),
        pytest.param(
            {"analysis": {"metrics": [{"name": "q", "query": "x{v='{{ canary.versio }}'}", "max": 1}]}},
            virtual_service(),
            [destination_rule()],
            False,
            "spec.analysis.metrics[0].query: unknown variable {{ canary.versio }}",
            id="bad-template",
        ),
        pytest.param(
            {},
            virtual_service(),
            [destination_rule(), destination_rule("order-2")],
            False,
            "DestinationRules order, order-2 in shop all have host order",
            id="ambiguous-dr",
        ),
    ],
)
def test_problems_name_the_object_and_field(
    spec_overrides: dict[str, Any], vs: dict[str, Any] | None, rules: list[dict[str, Any]], waiting: bool, expected: str
) -> None:
    result = resolve(parsed_spec(**spec_overrides), "shop", vs, rules)
    assert isinstance(result, Problem)
    assert expected in result.message
    assert result.waiting is waiting


def test_route_without_destinations_is_refused() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1] = {"name": "primary", "redirect": {"uri": "/elsewhere"}}
    result = resolve(parsed_spec(), "shop", vs, [destination_rule()])
    assert isinstance(result, Problem)
    assert "has redirect, not destinations" in result.message


def test_route_to_another_service_is_refused() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "payments", "subset": "v1"}}]
    result = resolve(parsed_spec(), "shop", vs, [destination_rule()])
    assert isinstance(result, Problem)
    assert "routes to payments, not to order" in result.message


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("order", "order.shop.svc.cluster.local", True),
        ("order.shop", "order", True),
        ("order.other", "order", False),
        ("payments", "order", False),
    ],
)
def test_same_host(a: str, b: str, same: bool) -> None:
    assert same_host(a, b, "shop") is same


def test_spec_defaults_match_the_issue() -> None:
    body = RolloutSpec.model_validate(
        {"virtualService": {"name": "order"}, "stable": {"subset": "v1"}, "canary": {"subset": "v2"}}
    )
    assert [s.weight for s in body.steps] == [10, 30, 50, 100]
    assert body.analysis.success_rate.min == 99
    assert body.analysis.latency.quantile == 0.99
    assert body.analysis.latency.max_ms == 500
    assert body.analysis.min_requests == 20
    assert body.analysis.failure_limit == 2
    assert body.hold(0).total_seconds() == 60


def _without_stable(**overrides: Any) -> RolloutSpec:
    body = parsed_spec(**overrides).model_dump(by_alias=True, exclude_none=True, mode="json")
    body.pop("stable", None)
    return RolloutSpec.model_validate(body)


@pytest.mark.parametrize(
    ("weights", "stable"),
    [
        pytest.param({"v1": 100}, "v1", id="first-release"),
        pytest.param({"v1": 0, "v2": 100}, "v1", id="canary-already-v2-stable-is-the-other"),
    ],
)
def test_stable_is_inferred_from_what_serves_the_route(weights: dict[str, int], stable: str) -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "order", "subset": s}, "weight": w} for s, w in weights.items()
    ]
    target = resolve(_without_stable(), "shop", vs, [destination_rule()])
    assert isinstance(target, Target)
    assert target.stable.subset == stable


def test_next_release_changes_only_the_canary_and_the_promoted_version_becomes_stable() -> None:
    promoted = virtual_service(stable_weight=0, canary_weight=100)  # v2 was promoted
    spec = _without_stable(canary={"host": "order", "subset": "v3"})
    target = resolve(spec, "shop", promoted, [destination_rule(subsets=("v1", "v2", "v3"))])
    assert isinstance(target, Target)
    assert (target.stable.subset, target.canary.subset) == ("v2", "v3")


def test_recorded_stable_wins_over_inference() -> None:
    vs = virtual_service(stable_weight=0, canary_weight=100)
    spec = _without_stable()
    target = resolve(spec, "shop", vs, [destination_rule()], recorded_stable=Destination(host="order", subset="v1"))
    assert isinstance(target, Target)
    assert target.stable.subset == "v1"


def test_stable_cannot_be_inferred_from_a_canary_only_route() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "order", "subset": "v2"}}]
    result = resolve(_without_stable(), "shop", vs, [destination_rule()])
    assert isinstance(result, Problem)
    assert "spec.stable: omitted, and http route 'primary' sends traffic only to the canary" in result.message
