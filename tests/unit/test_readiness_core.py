"""Readiness-gated shifts (spec.readiness): a shift waits for the canary's ready pods, a wait longer than
readiness.timeout rolls back (WaitingForCanary), and a canary with traffic and no ready pod fails its checks.
Driven through `decide` and `record_traffic` like test_plan.py, with the namespace's workloads as plain data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from builders import T0, destination_rule, rollout, spec, virtual_service
from test_plan import Mesh, check, tick

from coalmine.core import plan, validation
from coalmine.core.models import Phase, Rollout, Verdict
from coalmine.core.validation import Cluster, Resolution, Workloads

S = timedelta(seconds=1)


def workloads(canary: int, stable: int = 3, *, unready_canary: int = 0, selector: bool = True) -> Workloads:
    """Service `order` with `stable` ready v1 pods, `canary` ready v2 pods and `unready_canary` unready ones."""
    pods = {f"v1-{i}": {"app": "order", "version": "v1"} for i in range(stable)}
    pods |= {f"v2-{i}": {"app": "order", "version": "v2"} for i in range(canary + unready_canary)}
    endpoints = [(True, name) for name in pods if name.startswith("v1")]
    endpoints += [(i < canary, f"v2-{i}") for i in range(canary + unready_canary)]
    return Workloads(selectors={"order": selector}, endpoints={"order": endpoints}, pod_labels=pods)


class PodMesh(Mesh):
    def __init__(self, pods: Workloads | None, vs: dict[str, Any] | None = None) -> None:
        super().__init__(vs)
        self.pods = pods

    def resolve(self, r: Rollout) -> Resolution:
        return validation.resolve(r, Cluster(self.vs, self.rules, self.claims, self.pods))


def drive(r: Rollout, mesh: Mesh, start: datetime, seconds: int, verdict: Verdict = Verdict.PASS) -> Rollout:
    now = start
    for _ in range(seconds):
        now += S
        result = check(verdict) if plan.wants_check(r, mesh.resolve(r), now) else None
        r, _ = tick(r, mesh, now, result)
        assert r.status.canary_weight == mesh.canary(), "the status says what the routes have"
    return r


def test_count_ready_needs_a_service_with_a_selector_and_the_subset_labels() -> None:
    pods = workloads(canary=2, unready_canary=1)
    assert validation.count_ready(pods, "order", {"version": "v2"}) == 2, "unready endpoints do not count"
    assert validation.count_ready(pods, "order", {"version": "v1"}) == 3
    assert validation.count_ready(pods, "order", {"version": "v2", "app": "other"}) == 0
    assert validation.count_ready(pods, "payment", {"version": "v2"}) is None, "no such Service"
    assert validation.count_ready(workloads(2, selector=False), "order", {"version": "v2"}) is None


def test_a_canary_without_ready_pods_never_gets_weight_and_rolls_back_at_the_timeout() -> None:
    mesh = PodMesh(workloads(canary=0, unready_canary=2))
    body = spec(readiness={"timeout": "1m"})
    r, events = tick(rollout(body), mesh, T0)
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == 0 == r.status.canary_weight
    assert r.status.readiness is not None
    assert r.status.readiness.waiting_since == T0
    assert (r.status.readiness.canary_ready, r.status.readiness.stable_ready, r.status.readiness.needed) == (0, 3, 1)
    assert "WaitingForCanary" in [e.reason for e in events]
    reconciling = next(c for c in r.status.conditions if c.type == "Reconciling")
    assert reconciling.reason == "WaitingForCanary"
    assert "has 0 ready pods" in (r.status.message or "")
    assert not plan.wants_check(r, mesh.resolve(r), T0 + 30 * S), "nothing to judge at 0%"
    r = drive(r, mesh, T0, 59)
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == 0, "never a shift to a canary without pods"
    r = drive(r, mesh, T0 + 59 * S, 2)
    assert r.status.phase is Phase.ROLLED_BACK
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "WaitingForCanary"
    assert "readiness.timeout 1m" in r.status.rollback.message
    assert mesh.canary() == 0


def test_the_shift_follows_once_the_pods_are_ready_and_the_hold_counts_from_then() -> None:
    mesh = PodMesh(workloads(canary=0))
    r, _ = tick(rollout(), mesh, T0)
    r = drive(r, mesh, T0, 20)
    assert mesh.canary() == 0
    mesh.pods = workloads(canary=1)
    r, events = tick(r, mesh, T0 + 21 * S)
    assert mesh.canary() == 10 == r.status.canary_weight
    assert r.status.step_started_at == T0 + 21 * S, "the hold counts from the shift"
    assert r.status.readiness is not None
    assert r.status.readiness.waiting_since is None
    assert "StepStarted" in [e.reason for e in events]
    r = drive(r, mesh, T0 + 21 * S, 29)
    assert mesh.canary() == 10, "step 1 holds 30s from the shift"
    r = drive(r, mesh, T0 + 50 * S, 60)
    assert mesh.canary() >= 30


def test_proportional_capacity_gates_each_increase_at_the_weight_before() -> None:
    # 4 stable pods: 30% needs 2 canary pods, 50% needs 2, 100% needs 4.
    mesh = PodMesh(workloads(canary=1, stable=4))
    body = spec(readiness={"capacity": "proportional", "timeout": "5m"})
    r, _ = tick(rollout(body), mesh, T0)
    assert mesh.canary() == 10, "10% of 4 rounds up to 1, which the canary has"
    r = drive(r, mesh, T0, 40)
    assert mesh.canary() == 10, "the routes keep step 1's weight ..."
    assert r.status.step_index == 1, "... while step 2's shift waits"
    assert r.status.readiness is not None
    assert r.status.readiness.waiting_since is not None
    assert r.status.readiness.needed == 2
    assert plan.wants_check(r, mesh.resolve(r), T0 + 50 * S), "a canary with traffic is still judged"
    r = drive(r, mesh, T0 + 40 * S, 20, Verdict.FAIL)
    assert r.status.phase is Phase.ROLLED_BACK, "failing checks still roll it back"
    assert mesh.canary() == 0


def test_a_canary_losing_its_pods_while_it_has_traffic_fails_its_checks() -> None:
    mesh = PodMesh(workloads(canary=2))
    r, _ = tick(rollout(), mesh, T0)
    assert mesh.canary() == 10
    mesh.pods = workloads(canary=0, unready_canary=2)
    r = drive(r, mesh, T0, 25)
    assert r.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0
    assert r.status.rollback is not None
    assert r.status.rollback.metric == "canary-ready"


def test_hosts_that_cannot_be_counted_are_not_gated_and_the_status_says_so() -> None:
    mesh = PodMesh(workloads(canary=0, selector=False))
    r, _ = tick(rollout(), mesh, T0)
    assert mesh.canary() == 10
    assert r.status.readiness is not None
    assert r.status.readiness.canary_ready is None
    assert "not checked" in r.status.readiness.message


def test_min_ready_zero_turns_the_gate_off() -> None:
    mesh = PodMesh(workloads(canary=0))
    _r, _ = tick(rollout(spec(readiness={"minReady": 0})), mesh, T0)
    assert mesh.canary() == 10


def test_a_restart_resumes_the_wait_from_the_status() -> None:
    """All of the wait is in the status: a new operator reading it goes on waiting, with the same deadline."""
    mesh = PodMesh(workloads(canary=0))
    r, _ = tick(rollout(spec(readiness={"timeout": "30s"})), mesh, T0)
    body = {"metadata": {"name": "order", "namespace": "shop", "generation": 1, "resourceVersion": "2"}}
    again = Rollout.from_body({**body, "spec": spec(readiness={"timeout": "30s"}), "status": r.status.to_wire()})
    again = drive(again, mesh, T0 + 20 * S, 15)
    assert again.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0


def test_unchanged_routes_when_resumed_at_a_step_need_no_pods() -> None:
    """A new generation whose routes already split at a step's weight moves nothing, so it waits for nothing."""
    mesh = PodMesh(workloads(canary=0), vs=virtual_service(stable_weight=70, canary_weight=30))
    r, _ = tick(rollout(), mesh, T0)
    assert r.status.step_index == 1
    assert mesh.canary() == 30
    assert r.status.readiness is not None
    assert r.status.readiness.waiting_since is None


def test_destination_rule_subset_labels_select_the_pods() -> None:
    rules = [destination_rule()]
    rules[0]["spec"]["subsets"][1]["labels"] = {"version": "v2", "track": "canary"}
    mesh = PodMesh(workloads(canary=2))
    mesh.rules = rules
    r, _ = tick(rollout(), mesh, T0)
    assert mesh.canary() == 0, "no v2 pod carries track=canary"
    assert r.status.readiness is not None
    assert r.status.readiness.canary_ready == 0
