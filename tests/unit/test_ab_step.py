"""A/B steps (spec.steps[].match): the operator's route `coalmine-<rollout>` ahead of the owned route while the
step runs, gone when the weights begin, on success and on rollback; never duplicated; everything else untouched."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import T0, destination_rule, rollout, spec, virtual_service
from test_plan import check

from coalmine.core import plan, validation
from coalmine.core.models import Phase, Rollout, Verdict
from coalmine.core.validation import Cluster
from coalmine.core.virtualservice import applied

S = timedelta(seconds=1)
BETA = [{"headers": {"user-group": {"exact": "beta"}}}]
AB_STEPS = [{"match": BETA, "hold": "30s"}, {"weight": 50, "hold": "30s"}, {"weight": 100}]


class Mesh:
    def __init__(self, vs: dict[str, Any] | None = None) -> None:
        self.vs = vs if vs is not None else virtual_service()
        self.rules = [destination_rule()]
        self.writes = 0

    def resolve(self, r: Rollout) -> validation.Resolution:
        return validation.resolve(r, Cluster(self.vs, self.rules))

    def names(self) -> list[str]:
        return [str(route.get("name")) for route in self.vs["spec"]["http"]]

    def route(self, name: str) -> dict[str, Any]:
        return next(r for r in self.vs["spec"]["http"] if r.get("name") == name)

    def canary(self) -> int:
        return {d["destination"]["subset"]: d.get("weight", 0) for d in self.route("primary")["route"]}.get("v2", 0)


def tick(r: Rollout, mesh: Mesh, now: datetime, verdict: Verdict = Verdict.PASS) -> Rollout:
    resolution = mesh.resolve(r)
    result = check(verdict) if plan.wants_check(r, resolution, now) else None
    decision = plan.decide(r, resolution, result, now)
    r = r.model_copy(update={"status": decision.status})
    outcome = plan.TrafficOutcome(at_weight=False, observed=r.status.canary_weight)
    if decision.weight is not None and decision.traffic is not None:
        ops = plan.virtual_service_patch(r, mesh.vs, decision.traffic, decision.weight)
        if ops:
            mesh.writes += 1
            mesh.vs = applied(mesh.vs, ops)
        outcome = plan.TrafficOutcome(at_weight=True, observed=decision.weight)
    return r.model_copy(update={"status": plan.record_traffic(r, decision.weight, outcome, now).status})


def test_ab_step_then_weights_to_success() -> None:
    mesh = Mesh()
    untouched = copy.deepcopy(mesh.vs["spec"]["http"][0])  # the user's own beta route
    r = tick(rollout(spec(steps=AB_STEPS)), mesh, T0)
    assert mesh.names() == ["beta", "coalmine-order", "primary"], "right ahead of the owned route"
    ours, primary = mesh.route("coalmine-order"), mesh.route("primary")
    assert ours["match"] == BETA
    assert ours["route"] == [{"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}}]
    assert (ours["retries"], ours["timeout"]) == (primary["retries"], primary["timeout"]), "same resilience"
    assert mesh.canary() == 0
    assert r.status.match_route == "coalmine-order"
    assert "A/B, users with header user-group exact beta" in (r.status.message or "")
    writes = mesh.writes
    now = T0
    for _ in range(29):
        now += S
        r = tick(r, mesh, now)
    assert mesh.writes == writes, "a route already as wanted is not written again"
    assert mesh.names().count("coalmine-order") == 1
    for _ in range(5):
        now += S
        r = tick(r, mesh, now)
    assert mesh.canary() == 50
    assert "coalmine-order" not in mesh.names(), "removed when the weight steps begin"
    assert r.status.match_route is None
    for _ in range(80):
        now += S
        r = tick(r, mesh, now)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.names() == ["beta", "primary"]
    assert mesh.vs["spec"]["http"][0] == untouched


def test_a_failing_ab_step_rolls_back_and_removes_the_route() -> None:
    mesh = Mesh()
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=AB_STEPS)), mesh, T0)
    now = T0
    for _ in range(40):
        now += S
        r = tick(r, mesh, now, Verdict.FAIL)
    assert r.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0
    assert "coalmine-order" not in mesh.names()
    for vs in (mesh.vs, before):
        mesh.route("primary")  # exists
        next(route for route in vs["spec"]["http"] if route["name"] == "primary").pop("route")
    assert mesh.vs == before, "rolled back: all but the owned route's destinations is as it was"


def test_the_match_sits_inside_the_owned_routes_own_match() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["match"] = [{"uri": {"prefix": "/api"}, "headers": {"x-env": {"exact": "prod"}}}]
    mesh = Mesh(vs)
    tick(rollout(spec(steps=AB_STEPS)), mesh, T0)
    assert mesh.route("coalmine-order")["match"] == [
        {"uri": {"prefix": "/api"}, "headers": {"x-env": {"exact": "prod"}, "user-group": {"exact": "beta"}}}
    ]


def test_a_restart_between_the_writes_neither_loses_nor_duplicates_the_route() -> None:
    mesh = Mesh()
    r = rollout(spec(steps=AB_STEPS))
    decision = plan.decide(r, mesh.resolve(r), None, T0)  # status written, then the operator died
    r = r.model_copy(update={"status": decision.status})
    assert "coalmine-order" not in mesh.names()
    r = tick(r, mesh, T0 + S)
    r = tick(r, mesh, T0 + 2 * S)
    assert mesh.names() == ["beta", "coalmine-order", "primary"]
    assert r.status.match_route == "coalmine-order"


def test_a_route_edited_by_hand_is_put_back_in_place() -> None:
    mesh = Mesh()
    r = tick(rollout(spec(steps=AB_STEPS)), mesh, T0)
    mesh.route("coalmine-order")["match"] = [{"headers": {"user-group": {"exact": "everyone"}}}]
    tick(r, mesh, T0 + S)
    assert mesh.route("coalmine-order")["match"] == BETA
    assert mesh.names().count("coalmine-order") == 1


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([{"weight": 10}, {"match": BETA}, {"weight": 100}], "A/B steps come before every weight step"),
        ([{"match": BETA, "weight": 10}, {"weight": 100}], "not both weight and match"),
        ([{"match": [{"sourceLabels": {"a": "b"}}]}, {"weight": 100}], "'sourceLabels' is not supported"),
        ([{"match": [{"headers": {"a": {"exact": "b", "prefix": "c"}}}]}, {"weight": 100}], "exactly one of"),
        ([{"match": BETA}], "at least one weight step"),
    ],
)
def test_bad_ab_steps_are_invalid_naming_the_field(steps: list[dict[str, Any]], problem: str) -> None:
    mesh = Mesh()
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=steps)), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert problem in (r.status.message or "")
    assert "spec.steps" in (r.status.message or "")
    assert mesh.vs == before


def test_an_ab_step_needs_exactly_one_owned_route() -> None:
    vs = virtual_service()
    vs["spec"]["http"][0]["route"] = [{"destination": {"host": "order", "subset": "v1"}}]
    mesh = Mesh(vs)
    body = spec(steps=AB_STEPS, virtualService={"name": "order", "routes": ["beta", "primary"]})
    r = tick(rollout(body), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert "exactly one owned route" in (r.status.message or "")


def test_events_name_the_ab_step_by_its_kind_not_its_weight_0() -> None:
    mesh = Mesh()
    r = rollout(spec(steps=AB_STEPS))
    started = plan.decide(r, mesh.resolve(r), None, T0)
    assert "steps A/B, 50, 100" in started.events[0].message
    r = tick(r, mesh, T0)
    now, advanced = T0, []
    while not advanced and now < T0 + 120 * S:
        now += S
        resolution = mesh.resolve(r)
        result = check(Verdict.PASS) if plan.wants_check(r, resolution, now) else None
        advanced = [e.message for e in plan.decide(r, resolution, result, now).events if e.reason == "StepAdvanced"]
        r = tick(r, mesh, now)
    assert advanced[0].startswith("canary 0% and the A/B route coalmine-order -> 50%: "), advanced
