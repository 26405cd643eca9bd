"""virtualservice.weight_patch: touch only the owned routes' destinations, guarded, and nothing when equal."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from builders import destination_rule, parsed_spec, resolve, virtual_service

from coalmine.core.validation import Target, Traffic, observe_routes, share_of
from coalmine.core.virtualservice import RouteGone, applied, weight_patch


def _target(**overrides: Any) -> Traffic:
    target = resolve(parsed_spec(**overrides), "shop", virtual_service(), [destination_rule()])
    assert isinstance(target, Target)
    return target.traffic


def test_first_step_adds_the_canary_after_stable_keeping_port_and_the_rest() -> None:
    vs = virtual_service()
    before = copy.deepcopy(vs)
    ops = weight_patch(vs, _target(), 10)
    after = jsonpatch.apply_patch(vs, ops)
    assert vs == before, "the input is not mutated"
    assert after["spec"]["http"][1]["route"] == [
        {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 90},
        {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 10},
    ]
    # Everything but the owned route's destinations is untouched.
    after["spec"]["http"][1]["route"] = before["spec"]["http"][1]["route"]
    assert after == before


def test_patch_is_guarded_by_test_ops_on_name_and_current_destinations() -> None:
    vs = virtual_service()
    ops = weight_patch(vs, _target(), 30)
    assert ops[0] == {"op": "test", "path": "/spec/http/1/name", "value": "primary"}
    assert ops[1] == {"op": "test", "path": "/spec/http/1/route", "value": vs["spec"]["http"][1]["route"]}
    assert ops[2]["op"] == "replace"
    # A concurrent edit of the owned destinations makes the patch fail instead of clobbering it.
    edited = copy.deepcopy(vs)
    edited["spec"]["http"][1]["route"][0]["headers"] = {"request": {"set": {"x-edited": "yes"}}}
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(edited, ops)


def test_no_change_means_no_patch() -> None:
    assert weight_patch(virtual_service(stable_weight=70, canary_weight=30), _target(), 30) == []


def test_existing_destination_extras_are_kept() -> None:
    vs = virtual_service(stable_weight=90, canary_weight=10)
    vs["spec"]["http"][1]["route"][1]["headers"] = {"response": {"add": {"x-canary": "1"}}}
    after = jsonpatch.apply_patch(vs, weight_patch(vs, _target(), 50))
    assert after["spec"]["http"][1]["route"][1] == {
        "destination": {"host": "order", "subset": "v2", "port": {"number": 8080}},
        "weight": 50,
        "headers": {"response": {"add": {"x-canary": "1"}}},
    }


def test_rollback_keeps_both_destinations_with_canary_zero() -> None:
    vs = virtual_service(stable_weight=70, canary_weight=30)
    after = jsonpatch.apply_patch(vs, weight_patch(vs, _target(), 0))
    assert [d["weight"] for d in after["spec"]["http"][1]["route"]] == [100, 0]
    routes = observe_routes(after, ("primary",))
    assert share_of(routes, _target().canary, "shop") == 0
    assert share_of(routes, _target().stable, "shop") == 100


def test_success_keeps_stable_at_weight_zero() -> None:
    vs = virtual_service(stable_weight=50, canary_weight=50)
    after = jsonpatch.apply_patch(vs, weight_patch(vs, _target(), 100))
    assert [(d["destination"]["subset"], d["weight"]) for d in after["spec"]["http"][1]["route"]] == [
        ("v1", 0),
        ("v2", 100),
    ]


def test_route_found_by_name_even_when_moved() -> None:
    target = _target()
    vs = virtual_service()
    vs["spec"]["http"].reverse()
    ops = weight_patch(vs, target, 10)
    assert ops[0]["path"] == "/spec/http/0/name"


def test_removed_route_is_reported() -> None:
    target = _target()
    vs = virtual_service()
    vs["spec"]["http"].pop()
    with pytest.raises(RouteGone, match="no http route 'primary'"):
        weight_patch(vs, target, 10)


def test_explicit_port_is_written() -> None:
    vs = virtual_service()
    after = jsonpatch.apply_patch(
        vs, weight_patch(vs, _target(canary={"host": "order", "subset": "v2", "port": 9090}), 10)
    )
    assert after["spec"]["http"][1]["route"][1]["destination"]["port"] == {"number": 9090}


@pytest.mark.parametrize("weight", [0, 10, 30, 100])
def test_applied_is_what_the_api_server_stores(weight: int) -> None:
    """The simulation (replay, unit tests) applies a patch exactly as RFC 6902 does."""
    vs = virtual_service(stable_weight=70, canary_weight=30)
    ops = weight_patch(vs, _target(), weight)
    assert applied(vs, ops) == jsonpatch.apply_patch(vs, ops)
    moved = copy.deepcopy(vs)
    moved["spec"]["http"][1]["route"][0]["weight"] = 55
    if ops:
        with pytest.raises(RouteGone):
            applied(moved, ops)


@pytest.mark.parametrize(
    ("route", "weight"),
    [
        ([{"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 100}], 100),
        ([{"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}}], 100),  # a lone one: all
        ([{"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}}], 0),
        (
            [
                {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 100},
                {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 0},
            ],
            100,
        ),
        (  # relative weights: 7/7 is the same as 50/50
            [
                {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 7},
                {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 7},
            ],
            50,
        ),
    ],
)
def test_a_route_already_sending_the_weight_in_other_words_is_not_rewritten(
    route: list[dict[str, Any]], weight: int
) -> None:
    """A finished Rollout re-asserts its weight every resync: a route written by a person or by Git as
    `[canary]` must not become `[stable 0, canary 100]` (a write that moves nothing and makes drift)."""
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = route
    assert weight_patch(vs, _target(), weight) == []


@pytest.mark.parametrize("weight", [10, 50, 99])
def test_a_lone_destination_still_gets_its_split(weight: int) -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}}]
    after = jsonpatch.apply_patch(vs, weight_patch(vs, _target(), weight))
    shares = observe_routes(after, ("primary",))
    assert share_of(shares, _target().canary, "shop") == weight


def test_a_changed_destination_field_is_still_written() -> None:
    """Same shares, but the spec names a port the route's destination lacks: written, as before."""
    vs = virtual_service(stable_weight=0, canary_weight=100)
    del vs["spec"]["http"][1]["route"][1]["destination"]["port"]
    vs["spec"]["http"][1]["route"].pop(0)
    assert weight_patch(vs, _target(canary={"subset": "v2", "port": 8080}), 100) != []
