"""Mirror steps (spec.steps[].mirror): the operator's mirror on the owned route while the step runs, 0 % users on
the canary; the route's own mirror recorded in the status before it is touched and put back byte-equal when the
step ends, on success and on rollback; a restart between the writes neither loses nor duplicates anything."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import jsonpatch
import pytest
from builders import T0, destination_rule, rollout, spec, virtual_service
from test_plan import check

from coalmine.core import analysis, plan, validation
from coalmine.core.models import Analysis, Phase, Rollout, Verdict
from coalmine.core.validation import Cluster
from coalmine.core.virtualservice import MirrorChanged, applied, weight_patch

S = timedelta(seconds=1)
MIRROR_STEPS = [{"mirror": 100, "hold": "30s"}, {"weight": 50, "hold": "30s"}, {"weight": 100}]
CANARY = {"host": "order", "subset": "v2", "port": {"number": 8080}}
OURS = {"mirror": CANARY, "mirrorPercentage": {"value": 100}}
SHADOW = {"host": "order-shadow", "port": {"number": 8080}}


class Mesh:
    def __init__(self, vs: dict[str, Any] | None = None) -> None:
        self.vs = vs if vs is not None else virtual_service()
        self.rules = [destination_rule()]
        self.writes: list[list[dict[str, Any]]] = []

    def resolve(self, r: Rollout) -> validation.Resolution:
        return validation.resolve(r, Cluster(self.vs, self.rules))

    def primary(self) -> dict[str, Any]:
        return next(r for r in self.vs["spec"]["http"] if r.get("name") == "primary")

    def mirror(self) -> dict[str, Any]:
        return validation.mirror_fields(self.primary())

    def canary(self) -> int:
        return {d["destination"]["subset"]: d.get("weight", 0) for d in self.primary()["route"]}.get("v2", 0)

    def write(self, r: Rollout, weight: int, traffic: validation.Traffic) -> None:
        ops = plan.virtual_service_patch(r, self.vs, traffic, weight)
        if ops:
            self.writes.append(ops)
            after = jsonpatch.apply_patch(self.vs, ops)  # RFC 6902 as the API server applies it (test ops too)
            assert after == applied(self.vs, ops), "the core's simulation of a patch agrees with RFC 6902"
            self.vs = after


def decide(r: Rollout, mesh: Mesh, now: datetime, verdict: Verdict = Verdict.PASS) -> tuple[Rollout, plan.Decision]:
    resolution = mesh.resolve(r)
    result = check(verdict) if plan.wants_check(r, resolution, now) else None
    decision = plan.decide(r, resolution, result, now)
    return r.model_copy(update={"status": decision.status}), decision


def tick(r: Rollout, mesh: Mesh, now: datetime, verdict: Verdict = Verdict.PASS) -> Rollout:
    r, decision = decide(r, mesh, now, verdict)  # the status is written first (write-ahead) ...
    outcome = plan.TrafficOutcome(at_weight=False, observed=r.status.canary_weight)
    if decision.weight is not None and decision.traffic is not None:
        mesh.write(r, decision.weight, decision.traffic)  # ... then the traffic moves ...
        outcome = plan.TrafficOutcome(at_weight=True, observed=decision.weight)
    return r.model_copy(update={"status": plan.record_traffic(r, decision.weight, outcome, now).status})  # recorded


def run(
    r: Rollout, mesh: Mesh, start: datetime, seconds: int, verdict: Verdict = Verdict.PASS
) -> tuple[Rollout, datetime]:
    now = start
    for _ in range(seconds):
        now += S
        r = tick(r, mesh, now, verdict)
    return r, now


def without_owned_destinations(vs: dict[str, Any]) -> dict[str, Any]:
    vs = copy.deepcopy(vs)
    for route in vs["spec"]["http"]:
        if route.get("name") == "primary":
            route.pop("route")
    return vs


def test_mirror_step_then_weights_to_success() -> None:
    mesh = Mesh()
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    assert mesh.mirror() == OURS, "mirror = the canary destination as the route names it, and mirrorPercentage"
    assert mesh.canary() == 0, "no user goes to the canary in a mirror step"
    assert r.status.mirror is not None
    assert r.status.mirror.active
    assert r.status.mirror.saved == {}
    assert r.status.message == "step 1/3: mirror 100% to the canary, 0% users, holding 30s"
    writes = len(mesh.writes)
    r, now = run(r, mesh, T0, 29)
    assert len(mesh.writes) == writes, "a mirror already on the route is not written again"
    r, now = run(r, mesh, now, 5)
    assert mesh.canary() == 50
    assert mesh.mirror() == {}, "removed before the weight steps"
    assert r.status.mirror is None
    r, now = run(r, mesh, now, 80)
    assert r.status.phase is Phase.SUCCEEDED
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


@pytest.mark.parametrize(
    "own",
    [
        {"mirror": SHADOW, "mirrorPercentage": {"value": 5.5}},
        {"mirror": SHADOW},
        {"mirror": SHADOW, "mirrorPercent": 7},
        {"mirrors": [{"destination": SHADOW, "percentage": {"value": 1}}]},
    ],
    ids=["mirror+percentage", "mirror", "deprecated-mirrorPercent", "mirrors"],
)
def test_a_failing_mirror_step_rolls_back_and_puts_the_users_mirror_back(own: dict[str, Any]) -> None:
    vs = virtual_service()
    vs["spec"]["http"][1].update(copy.deepcopy(own))
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    r, decision = decide(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == own, "recorded before the route is touched"
    assert mesh.vs == before
    assert decision.traffic is not None
    assert decision.weight == 0
    mesh.write(r, decision.weight, decision.traffic)
    during = mesh.mirror()
    assert "mirror" not in during, "Istio refuses mirror and mirrors together"
    assert during["mirrors"][-1] == {"destination": CANARY, "percentage": {"value": 100}}
    assert len(during["mirrors"]) == 2, "the user's mirror keeps working beside the canary's"
    assert mesh.canary() == 0
    r = r.model_copy(update={"status": plan.record_traffic(r, 0, plan.TrafficOutcome(True, 0), T0).status})
    seen = []
    now = T0
    for _ in range(40):
        now += S
        r = tick(r, mesh, now, Verdict.FAIL)
        seen.append(mesh.canary())
    assert r.status.phase is Phase.ROLLED_BACK
    assert set(seen) == {0}, "a failing mirror step never gives users to the canary"
    assert mesh.mirror() == own
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before), (
        "rolled back: the route's own mirror is back, byte-equal, and nothing else moved"
    )
    assert r.status.mirror is None


def test_a_restart_between_the_writes_neither_loses_nor_duplicates() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirror"] = copy.deepcopy(SHADOW)
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    r, _ = decide(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)  # status written, then the operator died
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirror": SHADOW}
    r = tick(r, mesh, T0 + S)  # a new operator: the record is used, not taken again from a half-written route
    r = tick(r, mesh, T0 + 2 * S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirror": SHADOW}
    assert [m["destination"] for m in mesh.mirror()["mirrors"]] == [SHADOW, CANARY]
    # died after the VirtualService write, before recording it: the next tick sees its own mirror
    written = copy.deepcopy(mesh.vs)
    stale = r.status.model_copy(update={"mirror": r.status.mirror.model_copy(update={"active": False})})
    r = tick(r.model_copy(update={"status": stale}), mesh, T0 + 3 * S)
    assert mesh.vs == written
    assert r.status.mirror is not None
    assert r.status.mirror.active
    assert r.status.mirror.saved == {"mirror": SHADOW}
    r, _ = run(r, mesh, T0 + 3 * S, 100)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.mirror() == {"mirror": SHADOW}, "put back once, not duplicated"
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


def test_a_rollback_decided_between_the_writes_restores_from_the_record() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirrors"] = [{"destination": SHADOW}]
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    r, _ = decide(r, mesh, T0 + 10 * S, Verdict.FAIL)
    r, _ = decide(r, mesh, T0 + 20 * S, Verdict.FAIL)  # RollingBack is recorded; the operator dies before the write
    assert r.status.phase is Phase.ROLLING_BACK
    assert r.status.mirror is not None, "kept while the route has the operator's mirror"
    r = tick(r, mesh, T0 + 21 * S)
    assert r.status.phase is Phase.ROLLED_BACK
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


def test_a_user_edit_of_their_mirror_mid_step_is_recorded_again_and_put_back() -> None:
    mesh = Mesh()
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    mesh.primary()["mirror"] = copy.deepcopy(SHADOW)  # GitOps puts the user's own mirror back mid-step
    mesh.primary()["mirrorPercentage"] = {"value": 3}
    r = tick(r, mesh, T0 + S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {
        "mirror": SHADOW,
        "mirrorPercentage": {"value": 3},
    }
    assert [m["destination"] for m in mesh.mirror()["mirrors"]] == [SHADOW, CANARY]
    r, _ = run(r, mesh, T0 + S, 100)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.mirror() == {"mirror": SHADOW, "mirrorPercentage": {"value": 3}}


def test_a_mirror_changed_after_the_record_is_never_overwritten() -> None:
    mesh = Mesh()
    r, decision = decide(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    mesh.primary()["mirror"] = copy.deepcopy(SHADOW)  # someone adds a mirror between the read and the write
    assert decision.traffic is not None
    with pytest.raises(MirrorChanged, match="recorded again"):
        mesh.write(r, 0, decision.traffic)
    r = tick(r, mesh, T0 + S)  # the next tick records it, then writes
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirror": SHADOW}
    assert [m["destination"] for m in mesh.mirror()["mirrors"]] == [SHADOW, CANARY]


def test_the_whole_route_is_guarded() -> None:
    mesh = Mesh()
    r, decision = decide(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    assert decision.traffic is not None
    ops = weight_patch(mesh.vs, decision.traffic, 0, mirror=r.status.mirror, mirror_on=True)
    assert ops[0] == {"op": "test", "path": "/spec/http/1", "value": mesh.primary()}
    mesh.primary()["mirror"] = copy.deepcopy(SHADOW)
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(mesh.vs, ops)


def test_a_new_generation_mid_mirror_keeps_the_record_and_moves_the_mirror() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirror"] = copy.deepcopy(SHADOW)
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    body = spec(steps=[{"mirror": 20, "hold": "30s"}, {"weight": 100}], canary={"host": "order", "subset": "v3"})
    mesh.rules = [destination_rule(subsets=("v1", "v2", "v3"))]
    r = r.model_copy(update={"spec": rollout(body).spec, "ref": r.ref.model_copy(update={"generation": 2})})
    r, decision = decide(r, mesh, T0 + S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirror": SHADOW}, "the user's mirror stays on record"
    assert r.status.mirror.previous is not None, "the old generation's mirror is still the operator's to replace"
    assert decision.traffic is not None
    assert decision.weight is not None
    mesh.write(r, decision.weight, decision.traffic)
    r = r.model_copy(
        update={"status": plan.record_traffic(r, decision.weight, plan.TrafficOutcome(True, 0), T0).status}
    )
    assert mesh.mirror()["mirrors"] == [
        {"destination": SHADOW},
        {"destination": {"host": "order", "subset": "v3", "port": {"number": 8080}}, "percentage": {"value": 20}},
    ]
    assert r.status.mirror is not None
    assert r.status.mirror.previous is None
    r, _ = run(r, mesh, T0 + S, 100)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.mirror() == {"mirror": SHADOW}
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


def test_a_new_generation_without_a_mirror_step_puts_the_users_mirror_back() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirrorPercentage"] = {"value": 50}  # a stray field of the user's, kept as it is
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    assert mesh.mirror() == OURS
    r = r.model_copy(
        update={"spec": rollout(spec()).spec, "ref": r.ref.model_copy(update={"generation": 2})}
    )  # default steps 10 .. 100
    r = tick(r, mesh, T0 + S)
    assert mesh.canary() == 10
    assert mesh.mirror() == {"mirrorPercentage": {"value": 50}}
    assert r.status.mirror is None
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


def test_a_recreated_rollout_takes_its_own_mirror_back_without_duplicating_it() -> None:
    mesh = Mesh()
    tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)  # then the Rollout is deleted and created again
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0 + S)
    assert mesh.mirror() == OURS
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {}
    r, _ = run(r, mesh, T0 + S, 100)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.mirror() == {}


def test_the_step_does_not_advance_before_the_mirror_is_on_the_route() -> None:
    mesh = Mesh()
    r, _ = decide(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    assert r.status.mirror is not None
    assert not r.status.mirror.active
    r, _ = decide(r, mesh, T0 + 40 * S)  # the write never happened: the step does not advance
    assert r.status.step_index == 0


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([{"weight": 10}, {"mirror": 100}, {"weight": 100}], "spec.steps[1].mirror: mirror steps come before"),
        ([{"mirror": 100, "weight": 10}, {"weight": 100}], "spec.steps[0]: a step has one of weight"),
        (
            [{"mirror": 100, "match": [{"headers": {"a": {"exact": "b"}}}]}, {"weight": 100}],
            "not both match and mirror",
        ),
        ([{"mirror": 0}, {"weight": 100}], "spec.steps[0].mirror: 0 is not a percent between 1 and 100"),
        ([{"mirror": 101}, {"weight": 100}], "spec.steps[0].mirror: 101 is not a percent"),
        ([{"mirror": 100}], "at least one weight step"),
    ],
)
def test_bad_mirror_steps_are_invalid_naming_the_field(steps: list[dict[str, Any]], problem: str) -> None:
    mesh = Mesh()
    before = copy.deepcopy(mesh.vs)
    r = tick(rollout(spec(steps=steps)), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert problem in (r.status.message or "")
    assert mesh.vs == before


def test_a_mirror_step_needs_exactly_one_owned_route() -> None:
    vs = virtual_service()
    vs["spec"]["http"][0]["route"] = [{"destination": {"host": "order", "subset": "v1"}}]
    mesh = Mesh(vs)
    body = spec(steps=MIRROR_STEPS, virtualService={"name": "order", "routes": ["beta", "primary"]})
    r = tick(rollout(body), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert "spec.steps[0].mirror: a mirror step needs exactly one owned route" in (r.status.message or "")


def test_an_ab_step_then_a_mirror_step_then_weights() -> None:
    mesh = Mesh()
    before = copy.deepcopy(mesh.vs)
    beta = [{"headers": {"x-beta": {"exact": "1"}}}]
    steps = [{"match": beta, "hold": "10s"}, {"mirror": 50, "hold": "10s"}, {"weight": 100}]
    r = tick(rollout(spec(steps=steps)), mesh, T0)
    assert "coalmine-order" in [h["name"] for h in mesh.vs["spec"]["http"]]
    r, now = run(r, mesh, T0, 15)
    assert r.status.step_index == 1
    assert "coalmine-order" not in [h["name"] for h in mesh.vs["spec"]["http"]]
    assert mesh.mirror() == {"mirror": CANARY, "mirrorPercentage": {"value": 50}}
    r, now = run(r, mesh, now, 60)
    assert r.status.phase is Phase.SUCCEEDED
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


# --- the analysis of a mirror step ------------------------------------------------------------------------


def _target() -> validation.Target:
    r = rollout(spec(steps=MIRROR_STEPS))
    resolution = validation.resolve(r, Cluster(virtual_service(extra=False), [destination_rule()]))
    assert resolution.target is not None
    return resolution.target


def test_a_mirror_steps_queries_count_users_by_the_source_and_skip_the_breaker() -> None:
    a = Analysis.model_validate({"circuitBreaker": {"enabled": True}})
    step = analysis.StepContext(elapsed=timedelta(seconds=30), scrape_interval=S, weight=0, mirror=100)
    asked = {q.name: q.promql for q in analysis.queries(a, _target(), timedelta(seconds=30), step)}
    assert 'reporter=~"destination|waypoint"' in asked["requests"], "the canary is judged on what it served"
    assert asked["user-requests"].startswith('sum(increase(istio_requests_total{reporter="source"')
    assert 'destination_version="v2"' in asked["user-requests"]
    assert 'destination_version="v1"' in asked["user-requests@stable"]
    assert "circuit-breaker" not in asked


def _answers(canary_users: float) -> dict[str, analysis.Sample]:
    return {
        "requests": analysis.Sample(500.0),  # the mirror's copies, reported by the canary's proxy
        "success-rate": analysis.Sample(100.0),
        "latency-p99": analysis.Sample(20.0),
        "requests@stable": analysis.Sample(500.0),
        "success-rate@stable": analysis.Sample(100.0),
        "latency-p99@stable": analysis.Sample(20.0),
        "user-requests": analysis.Sample(canary_users),
        "user-requests@stable": analysis.Sample(500.0 - canary_users),
    }


def test_mirrored_requests_do_not_fail_the_traffic_check_but_users_on_the_canary_do() -> None:
    a, target = Analysis(), _target()
    step = analysis.StepContext(elapsed=timedelta(seconds=30), scrape_interval=S, weight=0, mirror=100)
    window = timedelta(seconds=30)
    asked = analysis.queries(a, target, window, step)
    ok = analysis.evaluate(a, asked, _answers(0.0), window, target, step)
    assert ok.verdict is Verdict.PASS
    traffic = next(m for m in ok.metrics if m.name == "traffic")
    assert traffic.value == 0
    assert "mirrored copies not counted" in traffic.threshold
    bad = step
    for _ in range(3):
        result = analysis.evaluate(a, asked, _answers(150.0), window, target, bad)
        bad = analysis.StepContext(
            elapsed=bad.elapsed, scrape_interval=S, weight=0, mirror=100, mismatches=result.traffic_mismatches
        )
    assert result.verdict is Verdict.FAIL
    row = next(m for m in result.metrics if m.name == "traffic")
    assert "in a mirror step the canary got 30% of 500 users' requests" in row.reason


def test_the_breaker_row_says_why_it_is_skipped_in_a_mirror_step() -> None:
    a, target = Analysis.model_validate({"circuitBreaker": {"enabled": True}}), _target()
    step = analysis.StepContext(elapsed=timedelta(seconds=30), scrape_interval=S, weight=0, mirror=100)
    window = timedelta(seconds=30)
    result = analysis.evaluate(a, analysis.queries(a, target, window, step), _answers(0.0), window, target, step)
    row = next(m for m in result.metrics if m.name == "circuit-breaker")
    assert row.verdict is Verdict.SKIPPED
    assert "mirrored copies" in row.reason


def test_a_mirror_step_then_an_ab_step_then_weights() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirrors"] = [{"destination": copy.deepcopy(SHADOW)}]
    mesh = Mesh(vs)
    before = copy.deepcopy(mesh.vs)
    beta = [{"headers": {"x-beta": {"exact": "1"}}}]
    steps = [{"mirror": 30, "hold": "10s"}, {"match": beta, "hold": "10s"}, {"weight": 100}]
    r = tick(rollout(spec(steps=steps)), mesh, T0)
    assert len(mesh.mirror()["mirrors"]) == 2
    r, now = run(r, mesh, T0, 15)
    assert r.status.step_index == 1
    assert mesh.mirror() == {"mirrors": [{"destination": SHADOW}]}, "put back in the patch that adds the A/B route"
    assert [h["name"] for h in mesh.vs["spec"]["http"]] == ["beta", "coalmine-order", "primary"]
    assert mesh.vs["spec"]["http"][1]["match"] == beta
    r, now = run(r, mesh, now, 60)
    assert r.status.phase is Phase.SUCCEEDED
    assert without_owned_destinations(mesh.vs) == without_owned_destinations(before)


def test_a_mirror_added_beside_the_operators_mid_step_is_put_back_without_the_operators() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirror"] = copy.deepcopy(SHADOW)
    mesh = Mesh(vs)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    other = {"destination": {"host": "audit"}, "percentage": {"value": 1}}
    mesh.primary()["mirrors"].append(other)  # someone adds a mirror of their own to the list mid-step
    r = tick(r, mesh, T0 + S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirrors": [{"destination": SHADOW}, other]}, "the operator's entry is not saved"
    assert [m["destination"] for m in mesh.mirror()["mirrors"]] == [SHADOW, {"host": "audit"}, CANARY], "not twice"
    r, _ = run(r, mesh, T0 + S, 100)
    assert r.status.phase is Phase.SUCCEEDED
    assert mesh.mirror() == {"mirrors": [{"destination": SHADOW}, other]}, "no copy left going to the canary"
    gitops = virtual_service()  # GitOps puts the route back as in Git mid-step: operator's mirror replaced whole
    gitops["spec"]["http"][1]["mirror"] = copy.deepcopy(SHADOW)
    mesh = Mesh(gitops)
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)
    mesh.primary().pop("mirrors")
    mesh.primary()["mirror"] = copy.deepcopy(SHADOW)
    r = tick(r, mesh, T0 + S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirror": SHADOW}


def test_a_recreated_rollout_does_not_save_its_own_entry_of_a_mirrors_list() -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["mirrors"] = [{"destination": copy.deepcopy(SHADOW)}]
    mesh = Mesh(vs)
    tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0)  # then the Rollout is deleted and created again
    r = tick(rollout(spec(steps=MIRROR_STEPS)), mesh, T0 + S)
    assert r.status.mirror is not None
    assert r.status.mirror.saved == {"mirrors": [{"destination": SHADOW}]}
    assert len(mesh.mirror()["mirrors"]) == 2, "its entry is not added twice"
    r, _ = run(r, mesh, T0 + S, 100)
    assert mesh.mirror() == {"mirrors": [{"destination": SHADOW}]}
