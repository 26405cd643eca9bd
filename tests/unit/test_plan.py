"""plan: every transition of the rollout state machine, driven through `decide` and `record_traffic`
(the two calls the shell makes) with a fake clock, fake checks and a VirtualService that follows the
writes as the API server would."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import T0, destination_rule, rollout, spec, virtual_service

from coalmine.core import plan, steering, validation
from coalmine.core.analysis import CheckResult
from coalmine.core.models import AnalysisStatus, MetricResult, Phase, Rollout, Verdict
from coalmine.core.validation import Claim, Cluster, Problem, Resolution
from coalmine.core.virtualservice import RouteGone, applied, weight_patch

S = timedelta(seconds=1)


def check(verdict: Verdict, value: float | None = 99.9) -> CheckResult:
    metric = MetricResult(
        name="success-rate",
        value=value,
        threshold=">= 99",
        verdict=verdict,
        reason="" if verdict is Verdict.PASS else ("72.5% < 99%" if verdict is Verdict.FAIL else "no canary requests"),
        query="sum(rate(...))",
    )
    return CheckResult(
        verdict=verdict,
        window="10s",
        requests=100.0 if verdict is not Verdict.NO_DATA else None,
        metrics=(metric,),
        reason="no canary requests in the last 10s" if verdict is Verdict.NO_DATA else "",
    )


class Mesh:
    """The VirtualService and DestinationRule as the API server holds them: writes land, reads see them."""

    def __init__(self, vs: dict[str, Any] | None = None, rules: list[dict[str, Any]] | None = None) -> None:
        self.vs: dict[str, Any] | None = vs if vs is not None else virtual_service()
        self.rules = rules if rules is not None else [destination_rule()]
        self.claims: tuple[Claim, ...] = ()
        self.refuse = ""  # set: every write is refused with this message
        self.attempts = 0  # writes sent (refused ones included)

    def resolve(self, r: Rollout) -> Resolution:
        return validation.resolve(r, Cluster(self.vs, self.rules, self.claims))

    def write(self, traffic: validation.Traffic, weight: int) -> plan.TrafficOutcome:
        assert self.vs is not None
        try:
            ops = weight_patch(self.vs, traffic, weight)
        except RouteGone as exc:
            return plan.TrafficOutcome(at_weight=False, observed=None, error=str(exc))
        if ops:
            self.attempts += 1
        if ops and self.refuse:
            return plan.TrafficOutcome(at_weight=False, observed=self.canary(), error=self.refuse, attempted=True)
        self.vs = applied(self.vs, ops)
        return plan.TrafficOutcome(at_weight=True, observed=weight)

    def canary(self, subset: str = "v2") -> int | None:
        routes = validation.observe_routes(self.vs, ("primary",))
        return validation.share_of(routes, validation.Backend("order", subset), "shop")


def tick(r: Rollout, mesh: Mesh, now: datetime, result: CheckResult | None = None) -> tuple[Rollout, list[plan.Event]]:
    """What reconcile.tick does, without I/O: decide, write the status, move traffic, record what it did."""
    resolution = mesh.resolve(r)
    decision = plan.decide(r, resolution, result, now, plan.Policy())
    r = r.model_copy(update={"status": decision.status})
    if decision.weight is None:
        canary = r.status.canary
        observed = validation.share_of(resolution.routes, canary, "shop") if canary is not None else None
        outcome = plan.TrafficOutcome(at_weight=False, observed=observed)
    elif decision.traffic is None:
        outcome = plan.TrafficOutcome(at_weight=False, observed=r.status.canary_weight, error=decision.blocked)
    else:
        outcome = mesh.write(decision.traffic, decision.weight)
    follow = plan.record_traffic(r, decision.weight, outcome, now)
    return r.model_copy(update={"status": follow.status}), [*decision.events, *follow.events]


def started(spec_body: dict[str, Any] | None = None, at: datetime = T0, mesh: Mesh | None = None) -> Rollout:
    r, _ = tick(rollout(spec_body), mesh or Mesh(), at)
    return r


def run(r: Rollout, mesh: Mesh, seconds: list[float], verdict: Verdict = Verdict.PASS) -> Rollout:
    for second in seconds:
        r, _ = tick(r, mesh, T0 + second * S, check(verdict))
    return r


def test_start_goes_to_step_one_and_the_routes_follow() -> None:
    mesh = Mesh()
    r = rollout()
    decision = plan.decide(r, mesh.resolve(r), None, T0)
    s = decision.status
    assert (s.phase, s.step_index, s.step_started_at, s.observed_generation) == (Phase.PROGRESSING, 0, T0, 1)
    assert s.canary_weight == 0, "written ahead of the VirtualService: the routes still give the canary 0"
    assert decision.weight == 10
    assert s.stable is not None
    assert (s.stable.host, s.stable.subset) == ("order", "v1"), "the stable this generation started with"
    assert s.canary is not None
    assert s.canary.subset == "v2"
    assert [e.reason for e in decision.events] == ["RolloutStarted"]
    assert decision.wake_at == T0 + 10 * S
    assert {c.type: c.status for c in s.conditions} == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    r, _ = tick(r, mesh, T0)
    assert r.status.canary_weight == mesh.canary() == 10, "recorded once the routes have it"


@pytest.mark.parametrize(
    ("problem", "phase", "reason"),
    [
        pytest.param(
            Problem("VirtualService shop/order not found", waiting=True),
            Phase.PENDING,
            "WaitingForObjects",
            id="pending",
        ),
        pytest.param(Problem("spec.canary.subset: no subset 'v3'"), Phase.INVALID, "Invalid", id="invalid"),
    ],
)
def test_problems_write_nothing_to_the_vs(problem: Problem, phase: Phase, reason: str) -> None:
    decision = plan.decide(rollout(), Resolution(problem=problem), None, T0)
    assert decision.weight is None
    assert decision.status.phase is phase
    assert problem.message in (decision.status.message or "")
    assert [e.reason for e in decision.events] == [reason]
    assert decision.wake_at == T0 + plan.RECHECK
    # Looking again and finding the same problem changes nothing and says nothing.
    r = rollout().model_copy(update={"status": decision.status})
    again = plan.decide(r, Resolution(problem=problem), None, T0 + 10 * S)
    assert again.status == decision.status
    assert again.events == ()


def test_invalid_becomes_progressing_when_fixed() -> None:
    mesh = Mesh(rules=[destination_rule(subsets=("v1",))])
    r, _ = tick(rollout(), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert mesh.canary() == 0
    mesh.rules = [destination_rule()]
    r, _ = tick(r, mesh, T0 + 10 * S)
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == r.status.canary_weight == 10


def test_healthy_canary_steps_through_every_weight_in_order_holding_each() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    now = T0
    weights_seen = [(mesh.canary(), now)]
    for _ in range(200):
        if r.status.phase is Phase.SUCCEEDED:
            break
        now = now + S
        result = check(Verdict.PASS) if plan.wants_check(r, mesh.resolve(r), now) else None
        r, _ = tick(r, mesh, now, result)
        assert r.status.canary_weight == mesh.canary(), "the status says what the routes have"
        if mesh.canary() != weights_seen[-1][0]:
            weights_seen.append((mesh.canary(), now))
    assert r.status.phase is Phase.SUCCEEDED
    assert r.status.canary_weight == 100
    assert [w for w, _ in weights_seen] == [10, 30, 50, 100]
    holds = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(weights_seen)]
    assert holds == [30 * S, 30 * S, 30 * S], "each weight held exactly its hold (30s) with passing checks"
    assert [h.weight for h in r.status.history] == [10, 30, 50, 100]
    assert {c.type: c.status for c in r.status.conditions} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }


def test_checks_are_due_every_check_every() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    assert not plan.wants_check(r, mesh.resolve(r), T0 + 9 * S)
    assert plan.wants_check(r, mesh.resolve(r), T0 + 10 * S)
    r = run(r, mesh, [10])
    assert not plan.wants_check(r, mesh.resolve(r), T0 + 19 * S)
    assert plan.wants_check(r, mesh.resolve(r), T0 + 20 * S)


def test_failure_limit_consecutive_failures_roll_back_mid_step_at_once() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r, events = tick(r, mesh, T0 + 20 * S, check(Verdict.FAIL, 72.5))
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == 10
    assert [e.reason for e in events] == ["CheckFailed"]
    assert r.status.analysis is not None
    assert r.status.analysis.consecutive_failures == 1

    decision = plan.decide(r, mesh.resolve(r), check(Verdict.FAIL, 60.0), T0 + 25 * S)
    assert decision.weight == 0
    assert decision.status.phase is Phase.ROLLING_BACK, "decided and recorded before traffic moves"
    assert decision.status.canary_weight == 10, "the routes still give the canary 10 until the write"
    r, events = tick(r, mesh, T0 + 25 * S, check(Verdict.FAIL, 60.0))
    s = r.status
    assert s.phase is Phase.ROLLED_BACK
    assert s.canary_weight == mesh.canary() == 0
    assert s.rollback is not None
    assert (s.rollback.reason, s.rollback.metric, s.rollback.value, s.rollback.threshold) == (
        "FailureLimit",
        "success-rate",
        60.0,
        ">= 99",
    )
    assert s.rollback.query == "sum(rate(...))"
    assert "success-rate 72.5% < 99%" in (s.message or "")
    assert "2 failed checks in a row" in (s.message or "")
    assert [e.reason for e in events] == ["RolledBack"]
    assert {c.type: c.status for c in s.conditions} == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}


def test_a_pass_resets_the_failure_count() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    for second, verdict in [(10, Verdict.FAIL), (20, Verdict.PASS), (30, Verdict.FAIL)]:
        r, _ = tick(r, mesh, T0 + second * S, check(verdict))
    assert r.status.phase is Phase.PROGRESSING
    assert r.status.analysis is not None
    assert r.status.analysis.consecutive_failures == 1


def test_no_data_holds_the_step_then_rolls_back_after_max_no_data() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)  # hold 30s, maxNoData 1m
    now = T0
    while now < T0 + 59 * S:
        now += S
        r, _ = tick(r, mesh, now, check(Verdict.NO_DATA) if plan.wants_check(r, mesh.resolve(r), now) else None)
        assert r.status.phase is Phase.PROGRESSING, f"still holding at {now - T0}"
        assert mesh.canary() == 10, "no data never advances a step"
    r, _ = tick(r, mesh, T0 + 60 * S)
    assert r.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "NoData"
    assert "no data for 1m (maxNoData 1m)" in (r.status.message or "")


def test_no_data_wakes_the_operator_at_the_deadline() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30], Verdict.NO_DATA)
    decision = plan.decide(r, mesh.resolve(r), check(Verdict.NO_DATA), T0 + 55 * S)
    assert decision.wake_at == T0 + 60 * S


def test_data_returning_clears_no_data() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10], Verdict.NO_DATA)
    r = run(r, mesh, [20])
    assert r.status.analysis is not None
    assert r.status.analysis.no_data_since is None
    r = run(r, mesh, [30])
    assert r.status.step_index == 1, "hold elapsed and the last check passed"


def test_hold_elapsed_without_a_passing_check_waits() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r = run(r, mesh, [20], Verdict.FAIL)
    r = run(r, mesh, [30], Verdict.NO_DATA)
    assert r.status.step_index == 0
    assert "hold done, waiting for a passing check" in (r.status.message or "")


def test_clock_edge_one_millisecond_before_the_hold_ends() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20])
    just_before = T0 + 30 * S - timedelta(milliseconds=1)
    assert plan.decide(r, mesh.resolve(r), None, just_before).status.step_index == 0
    assert plan.decide(r, mesh.resolve(r), None, T0 + 30 * S).status.step_index == 1


def test_a_check_from_the_previous_step_does_not_pass_the_next() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    assert r.status.step_index == 1
    # Step 2 holds 30s too; its hold end with no check of its own does not advance.
    assert plan.decide(r, mesh.resolve(r), None, T0 + 60 * S).status.step_index == 1


def test_restart_resumes_from_status_with_the_same_deadlines() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    # A new operator process sees only the object: same decisions at the same times.
    reborn = Rollout.from_body(
        {
            "metadata": {"name": "order", "namespace": "shop", "generation": 1, "resourceVersion": "9"},
            "spec": spec(),
            "status": r.status.to_wire(),
        }
    )
    assert reborn.status == r.status
    assert plan.next_check_at(reborn) == T0 + 20 * S
    assert not plan.needs_start(reborn)


def test_new_generation_restarts_from_the_first_step() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    assert mesh.canary() == r.status.canary_weight == 30
    newer = r.model_copy(update={"ref": r.ref.model_copy(update={"generation": 2})})
    assert plan.needs_start(newer)
    r, _ = tick(newer, mesh, T0 + 40 * S)
    assert (r.status.step_index, r.status.observed_generation) == (0, 2)
    assert mesh.canary() == r.status.canary_weight == 10, "the operator's own earlier split is replaced"
    assert r.status.analysis is None
    assert len(r.status.history) == 1


@pytest.mark.parametrize(("phase", "weight"), [(Phase.SUCCEEDED, 100), (Phase.ROLLED_BACK, 0)])
def test_finished_rollouts_put_their_weight_back_when_the_routes_drift(phase: Phase, weight: int) -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    r = r.model_copy(update={"status": r.status.model_copy(update={"phase": phase, "canary_weight": weight})})
    mesh.vs = virtual_service(stable_weight=70, canary_weight=30)  # someone (Git, a person) moved the routes
    decision = plan.decide(r, mesh.resolve(r), None, T0 + 100 * S)
    assert decision.status == r.status
    assert decision.weight == weight
    assert decision.wake_at == T0 + 100 * S + plan.Policy().resync
    r, _ = tick(r, mesh, T0 + 100 * S)
    assert mesh.canary() == r.status.canary_weight == weight
    assert not plan.needs_start(r)


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    reconciling = next(c for c in r.status.conditions if c.type == "Reconciling")
    assert reconciling.last_transition_time == T0


@pytest.mark.parametrize("uid", ["", "0b7d3a5e-27c1-4f0e-9a51-6f1c2e4d8b90"])
def test_checks_fall_on_the_rollouts_own_grid_whatever_the_step_start(uid: str) -> None:
    """A Rollout checks every checkEvery at its own offset, whenever its step started; Rollouts with one
    offset check at the same moments, so one Prometheus query serves them all."""
    offset = plan.check_offset(uid, 10 * S)
    firsts = []
    for started_ms in (0, 1300, 4700, 9990):
        mesh = Mesh()
        r = started(at=T0 + timedelta(milliseconds=started_ms), mesh=mesh)
        r = r.model_copy(update={"ref": r.ref.model_copy(update={"uid": uid})})
        first = plan.next_check_at(r)
        assert (first - offset).timestamp() % 10 == 0, first
        assert r.status.step_started_at is not None
        assert timedelta(seconds=5) <= first - r.status.step_started_at <= timedelta(seconds=15)
        firsts.append(first)
        checked, _ = tick(r, mesh, first + timedelta(milliseconds=40), check(Verdict.PASS))
        assert plan.next_check_at(checked) == first + 10 * S, "a late tick does not shift the grid"
    assert len(set(firsts[:3])) == 1


def test_a_fleets_checks_spread_over_the_period_in_whole_seconds() -> None:
    """1,000 Rollouts at checkEvery 10s: every second of the period gets about a tenth of their checks
    (not all 1,000 at one instant); the offset is a whole number of seconds, fixed by the uid."""
    uids = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(1000)]
    offsets = Counter(plan.check_offset(uid, 10 * S) for uid in uids)
    assert set(offsets) == {timedelta(seconds=k) for k in range(10)}
    assert all(60 <= n <= 140 for n in offsets.values()), offsets
    assert [plan.check_offset(uid, 10 * S) for uid in uids[:20]] == [plan.check_offset(u, 10 * S) for u in uids[:20]]
    assert {plan.check_offset(uid, 30 * S) for uid in uids} == {timedelta(seconds=k) for k in range(30)}


@pytest.mark.parametrize(("uid", "every"), [("", 10), ("some-uid", 1), ("some-uid", 1.5), ("some-uid", 0.5)])
def test_no_offset_without_a_uid_or_below_two_seconds(uid: str, every: float) -> None:
    assert plan.check_offset(uid, timedelta(seconds=every)) == timedelta(0)


@pytest.mark.parametrize(
    ("seconds", "period", "expected"),
    [(0, 10, 0), (0.001, 10, 10), (9.999, 10, 10), (10, 10, 10), (10.5, 1, 11), (3, 0.5, 3)],
)
def test_align_up(seconds: float, period: float, expected: float) -> None:
    moment = T0 + timedelta(seconds=seconds)
    assert plan.align_up(moment, timedelta(seconds=period)) == T0 + timedelta(seconds=expected)


def test_no_data_at_the_start_of_a_step_is_quiet_then_reported_once() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    quiet = plan.Policy(quiet_start=timedelta(seconds=15))
    first = plan.decide(r, mesh.resolve(r), check(Verdict.NO_DATA), T0 + 10 * S, quiet)
    assert first.events == (), "new series need a few scrapes: no warning yet"
    assert first.status.analysis is not None
    assert first.status.analysis.verdict is Verdict.NO_DATA
    r = r.model_copy(update={"status": first.status})
    second = plan.decide(r, mesh.resolve(r), check(Verdict.NO_DATA), T0 + 20 * S, quiet)
    assert [e.reason for e in second.events] == ["NoData"]
    r = r.model_copy(update={"status": second.status})
    third = plan.decide(r, mesh.resolve(r), check(Verdict.NO_DATA), T0 + 30 * S, quiet)
    assert third.events == ()


def test_a_run_of_passes_is_written_every_few_checks_failures_at_once() -> None:
    mesh = Mesh()
    r = started(mesh=mesh)
    written = []
    for second in (10, 20, 30 - 0.5):
        before = r.status
        r, _ = tick(r, mesh, T0 + second * S, check(Verdict.PASS))
        written.append(r.status != before)
    assert written == [True, False, False], "the first pass is recorded, routine passes are not"
    decision = plan.decide(r, mesh.resolve(r), check(Verdict.FAIL, 80.0), T0 + 30 * S)
    assert decision.status != r.status, "a failure is recorded at once"
    mesh = Mesh()
    r = run(started(spec(steps=[{"weight": 10, "hold": "2m"}, {"weight": 100}]), mesh=mesh), mesh, [10])
    later, _ = tick(r, mesh, T0 + 40 * S, check(Verdict.PASS))
    assert later.status.step_index == 0
    assert later.status.analysis is not None
    assert later.status.analysis.checked_at == T0 + 40 * S, f"refreshed after {plan.REFRESH_CHECKS} checks"


# --- issue 8: the status stays true of the routes, and no traffic moves that nobody asked to move --------


def test_a_vanished_canary_subset_rolls_back_at_once() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    assert mesh.canary() == 30
    mesh.rules = [destination_rule(subsets=("v1",))]  # someone deleted the canary's subset: 503s now
    r, events = tick(r, mesh, T0 + 31 * S)  # no check due: the objects alone decide
    assert r.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == r.status.canary_weight == 0
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "ObjectsChanged"
    assert "defines no subset 'v2'" in (r.status.message or "")
    assert [e.reason for e in events] == ["RolledBack"]


@pytest.mark.parametrize("change", ["route-renamed", "vs-deleted", "stable-subset-gone"])
def test_a_rollback_that_cannot_be_written_says_so_and_keeps_the_true_weight(change: str) -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    if change == "route-renamed":
        assert mesh.vs is not None
        mesh.vs["spec"]["http"][1]["name"] = "main"
    elif change == "vs-deleted":
        mesh.vs = None
    else:
        mesh.rules = [destination_rule(subsets=("v2",))]
    r, events = tick(r, mesh, T0 + 31 * S)
    s = r.status
    assert s.phase is Phase.ROLLING_BACK
    assert s.canary_weight == 30, "never a weight the routes do not have: they still give the canary 30"
    stalled = plan.traffic_stalled(s)
    assert stalled is not None
    assert "traffic not moved" in (s.message or "")
    assert "wants 0% and has 30%" in (s.message or "")
    assert [e.reason for e in events] == ["TrafficNotMoved"]
    # Looking again finds the same: no second event; the retry backs off.
    decision = plan.decide(r, mesh.resolve(r), None, T0 + 35 * S)
    assert decision.weight == 0
    r2, events = tick(r, mesh, T0 + 35 * S)
    assert events == []
    # The objects come back: the rollback completes.
    mesh.vs = virtual_service(stable_weight=70, canary_weight=30)
    mesh.rules = [destination_rule()]
    r3, events = tick(r2, mesh, T0 + 40 * S)
    assert r3.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == r3.status.canary_weight == 0
    assert plan.traffic_stalled(r3.status) is None
    assert [e.reason for e in events] == ["RolledBack"]


def test_stuck_writes_back_off_but_keep_trying() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20])
    mesh.refuse = "admission webhook denied the request: weight 30 is not allowed here"
    r, events = tick(r, mesh, T0 + 30 * S, check(Verdict.PASS))
    assert r.status.step_index == 1, "the step is recorded"
    assert mesh.canary() == r.status.canary_weight == 10, "but the routes did not move, and the status says so"
    assert "weight 30 is not allowed here" in (r.status.message or "")
    assert [e.reason for e in events] == ["StepAdvanced", "TrafficNotMoved"]
    assert r.status.traffic_retry_at == T0 + 31 * S
    assert plan.decide(r, mesh.resolve(r), None, T0 + 30.5 * S).weight is None, "not before retry_at"
    assert plan.decide(r, mesh.resolve(r), None, T0 + 31 * S).weight == 30
    # Ticking every second for 40 s (checks included) sends a handful of writes, backing off to 30 s.
    attempts = mesh.attempts
    for second in range(31, 71):
        result = check(Verdict.PASS) if plan.wants_check(r, mesh.resolve(r), T0 + second * S) else None
        r, _ = tick(r, mesh, T0 + second * S, result)
    assert 3 <= mesh.attempts - attempts <= 6, f"{mesh.attempts - attempts} writes in 40 s"
    # The step cannot advance on checks made at 10 %: its hold counts from when the traffic arrives.
    assert r.status.step_index == 1
    assert r.status.traffic_retry_at is not None
    mesh.refuse = ""
    retry_at = r.status.traffic_retry_at
    r, events = tick(r, mesh, retry_at)
    assert mesh.canary() == r.status.canary_weight == 30
    assert r.status.step_started_at == retry_at
    assert r.status.traffic_retry_at is None
    assert plan.traffic_stalled(r.status) is None
    assert [e.reason for e in events] == ["TrafficMoved"]


@pytest.mark.parametrize("stable_in_spec", [True, False])
def test_a_rollout_created_where_the_canary_has_everything_moves_nothing(stable_in_spec: bool) -> None:
    body = spec()
    if not stable_in_spec:
        body.pop("stable")
    mesh = Mesh(virtual_service(stable_weight=0, canary_weight=100))
    if not stable_in_spec:
        assert mesh.vs is not None
        mesh.vs["spec"]["http"][1]["route"] = [{"destination": {"host": "order", "subset": "v2"}}]
    before = mesh.vs
    r, events = tick(rollout(body), mesh, T0)
    assert r.status.phase is Phase.SUCCEEDED
    assert r.status.canary_weight == 100
    assert mesh.vs == before, "nothing moved"
    assert "already had all the traffic" in (r.status.message or "")
    assert [e.reason for e in events] == ["Succeeded"]


def test_a_rollout_created_mid_split_resumes_at_that_step() -> None:
    mesh = Mesh(virtual_service(stable_weight=70, canary_weight=30))
    before = mesh.vs
    r, _ = tick(rollout(), mesh, T0)
    assert (r.status.phase, r.status.step_index, r.status.canary_weight) == (Phase.PROGRESSING, 1, 30)
    assert mesh.vs == before, "nothing moved"
    assert [h.weight for h in r.status.history] == [30]


@pytest.mark.parametrize(
    ("routes", "found"),
    [
        ([("v3", 100)], "order/v3 100%"),  # another version serves the route
        ([("v1", 75), ("v2", 25)], "order/v1 75%, order/v2 25%"),  # a split between steps
    ],
)
def test_unexpected_traffic_waits_unless_told_to_reset(routes: list[tuple[str, int]], found: str) -> None:
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "order", "subset": s}, "weight": w} for s, w in routes]
    mesh = Mesh(vs, [destination_rule(subsets=("v1", "v2", "v3"))])
    r, events = tick(rollout(), mesh, T0)
    assert r.status.phase is Phase.PENDING
    assert found in (r.status.message or "")
    assert "nothing moved" in (r.status.message or "")
    assert mesh.vs == vs
    assert [e.reason for e in events] == ["UnexpectedTraffic"]
    assert {c.type: c.status for c in r.status.conditions}["Stalled"] == "True"
    reset = rollout(spec(onUnexpectedTraffic="Reset"))
    r, _ = tick(reset, mesh, T0)
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == 10


def test_a_route_another_rollout_owns_is_never_written() -> None:
    mesh = Mesh(virtual_service(stable_weight=70, canary_weight=30))
    mesh.claims = (Claim(name="order-a", virtual_service="order", routes=("primary",), created_at=None, started=True),)
    before = mesh.vs
    r, events = tick(rollout(), mesh, T0)
    assert r.status.phase is Phase.PENDING
    assert "owned by Rollout shop/order-a" in (r.status.message or "")
    assert [e.reason for e in events] == ["RouteClaimed"]
    assert mesh.vs == before


def test_the_older_of_two_unstarted_claimants_owns_the_route() -> None:
    older = T0 - timedelta(hours=1)
    mesh = Mesh()
    mesh.claims = (Claim("order-old", "order", ("primary",), older.replace(tzinfo=None), False),)
    r, _ = tick(rollout(), mesh, T0)  # builders' Rollout is created at T0: younger
    assert r.status.phase is Phase.PENDING
    mesh.claims = (Claim("order-new", "order", ("primary",), (T0 + S).replace(tzinfo=None), False),)
    r, _ = tick(rollout(), mesh, T0)
    assert r.status.phase is Phase.PROGRESSING


def test_an_invalid_new_generation_keeps_the_true_traffic_record() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    body = spec(canary={"host": "order", "subset": "v9"})
    newer = Rollout.from_body(
        {
            "metadata": {"name": "order", "namespace": "shop", "generation": 2, "resourceVersion": "9"},
            "spec": body,
            "status": r.status.to_wire(),
        }
    )
    r, _ = tick(newer, mesh, T0 + 40 * S)
    assert r.status.phase is Phase.INVALID
    assert r.status.canary is not None
    assert (r.status.canary.subset, r.status.canary_weight) == ("v2", 30), "v2 still has 30 %, and the status says so"
    assert mesh.canary() == 30


@pytest.mark.parametrize("ending", ["rolled-back", "succeeded"])
def test_the_tick_that_finishes_a_rollout_schedules_its_resync(ending: str) -> None:
    """Finished rollouts re-assert their weight every resync, starting from the tick that finished them."""
    mesh = Mesh()
    r = run(started(spec(steps=[{"weight": 10, "hold": "10s"}, {"weight": 100, "hold": "10s"}]), mesh=mesh), mesh, [10])
    now = T0 + 20 * S
    result = check(Verdict.FAIL, 1.0) if ending == "rolled-back" else check(Verdict.PASS)
    if ending == "rolled-back":
        r = run(r, mesh, [15], Verdict.FAIL)
    else:
        r = run(r, mesh, [15, 16])
        assert r.status.step_index == 1
        now = T0 + 30 * S
    decision = plan.decide(r, mesh.resolve(r), result, now)
    assert decision.traffic is not None
    assert decision.weight is not None
    r = r.model_copy(update={"status": decision.status})
    follow = plan.record_traffic(r, decision.weight, mesh.write(decision.traffic, decision.weight), now)
    assert follow.status.phase is (Phase.ROLLED_BACK if ending == "rolled-back" else Phase.SUCCEEDED)
    assert follow.wake_at == now + plan.Policy().resync


# --- issue 14: what the judges' outcomes do to the step -------------------------------------------------


def test_overwhelming_errors_roll_back_on_the_first_check() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    failing = check(Verdict.FAIL, 60.0)
    fast = failing.failed[0].model_copy(update={"reason": "60% < 99%: 40 errors in 100 requests ...", "score": 1e-30})
    r, events = tick(r, mesh, T0 + 20 * S, replace(failing, fail_fast=fast))
    assert r.status.phase is Phase.ROLLED_BACK, "failureLimit is 2, but one check was proof enough"
    assert r.status.rollback is not None
    assert (r.status.rollback.reason, r.status.rollback.value) == ("FailFast", 60.0)
    assert mesh.canary() == 0
    assert [e.reason for e in events] == ["RolledBack"]


def test_inconclusive_holds_the_step_and_counts_as_neither() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10], Verdict.FAIL)
    inconclusive = replace(check(Verdict.PASS), verdict=Verdict.INCONCLUSIVE, reason="inconclusive: 3 and 3 samples")
    for second in (20, 30, 40, 50, 60, 70, 80):
        r, _ = tick(r, mesh, T0 + second * S, inconclusive)
    assert r.status.phase is Phase.PROGRESSING
    assert r.status.step_index == 0, "the hold is over, but nobody could tell: no step forward"
    assert r.status.analysis is not None
    assert r.status.analysis.consecutive_failures == 1, "not a failure, and not a pass that clears one"
    assert r.status.analysis.no_data_since is None, "there is data: maxNoData does not run"
    assert "inconclusive: 3 and 3 samples" in (r.status.message or "")
    r = run(r, mesh, [90])
    assert r.status.step_index == 1


def test_traffic_mismatches_are_counted_within_a_step() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r, _ = tick(r, mesh, T0 + 20 * S, replace(check(Verdict.PASS), traffic_mismatches=2))
    assert plan.step_context(r, T0 + 25 * S, S).mismatches == 2
    r = run(r, mesh, [30])  # the hold ends: next step
    assert r.status.step_index == 1
    assert plan.step_context(r, T0 + 35 * S, S).mismatches == 0, "a new step, a new weight: counted afresh"


def test_a_skipped_metric_reads_skipped_in_messages_not_no_data() -> None:
    check = AnalysisStatus(
        checked_at=T0,
        window="4s",
        verdict=Verdict.PASS,
        metrics=(
            MetricResult(name="success-rate", value=100, threshold=">= 95", verdict=Verdict.PASS),
            MetricResult(name="traffic", verdict=Verdict.SKIPPED, reason="skipped: route beta also sends to v2"),
        ),
    )
    assert plan._summary(check) == "success-rate 100 (>= 95), traffic skipped"


def test_a_slow_traffic_write_starts_the_steps_hold_when_it_lands() -> None:
    """The chaos bench (seed 10) saw a VirtualService write land 4.3 s after the status that began the step:
    the hold counted from that write-ahead status, so the canary had 30 % for 7.7 s of its 12-s hold, and a
    failure that began as 30 % was seen was advanced to 50 % before a check could see it. The hold, and the
    checks' windows, count from when the step's traffic arrived."""
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20])
    decision = plan.decide(r, mesh.resolve(r), check(Verdict.PASS), T0 + 30 * S, plan.Policy())
    assert decision.weight == 30
    assert decision.status.step_started_at == T0 + 30 * S, "the write-ahead status begins the step"
    r = r.model_copy(update={"status": decision.status})
    assert decision.traffic is not None
    landed = T0 + 34.3 * S
    r = r.model_copy(update={"status": plan.record_traffic(r, 30, mesh.write(decision.traffic, 30), landed).status})
    assert r.status.canary_weight == 30
    assert r.status.step_started_at == landed
    hold = r.spec.hold(1)
    assert steering.hold_end(r.spec, r.status, landed) == landed + hold
    # A later tick at the same weight does not move it again.
    r2 = r.model_copy(update={"status": plan.record_traffic(r, 30, plan.TrafficOutcome(True, 30), landed + S).status})
    assert r2.status.step_started_at == landed
