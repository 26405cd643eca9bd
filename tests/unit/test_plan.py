"""plan: every transition of the rollout state machine, driven with a fake clock and fake checks."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import T0, destination_rule, rollout, spec, virtual_service

from coalmine import plan
from coalmine.analysis import CheckResult
from coalmine.models import MetricResult, Phase, Rollout, Verdict
from coalmine.validation import Problem, Target, resolve

S = timedelta(seconds=1)


def _target(r: Rollout) -> Target:
    target = resolve(r.spec, "shop", virtual_service(), [destination_rule()])
    assert isinstance(target, Target)
    return target


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


def apply(r: Rollout, decision: plan.Decision) -> Rollout:
    """What the shell does: write the decided status (the API server bumps resourceVersion)."""
    return r.model_copy(update={"status": decision.status})


def started(spec_body: dict[str, Any] | None = None, at: datetime = T0) -> Rollout:
    r = rollout(spec_body)
    decision = plan.start(r, _target(r), at)
    return apply(r, decision)


def test_start_goes_to_step_one_and_asks_for_its_weight() -> None:
    r = rollout()
    decision = plan.start(r, _target(r), T0)
    s = decision.status
    assert (s.phase, s.step_index, s.canary_weight, s.step_started_at, s.observed_generation) == (
        Phase.PROGRESSING,
        0,
        10,
        T0,
        1,
    )
    assert s.step_label == "1/4"
    assert s.stable is not None
    assert (s.stable.host, s.stable.subset) == ("order", "v1"), "the stable this generation started with"
    assert decision.weight == 10
    assert [e.reason for e in decision.events] == ["RolloutStarted"]
    assert decision.wake_at == T0 + 10 * S
    conditions = {c.type: c.status for c in s.conditions}
    assert conditions == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}


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
    decision = plan.start(rollout(), problem, T0)
    assert decision.weight is None
    assert decision.status.phase is phase
    assert problem.message in (decision.status.message or "")
    assert [e.reason for e in decision.events] == [reason]
    assert decision.wake_at == T0 + plan.RECHECK
    # Looking again and finding the same problem changes nothing and says nothing.
    again = plan.start(apply(rollout(), decision), problem, T0 + 10 * S)
    assert again.status == decision.status
    assert again.events == ()


def test_invalid_becomes_progressing_when_fixed() -> None:
    r = apply(rollout(), plan.start(rollout(), Problem("no subset"), T0))
    assert plan.needs_start(r)
    decision = plan.start(r, _target(r), T0 + 10 * S)
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.weight == 10


def test_healthy_canary_steps_through_every_weight_in_order_holding_each() -> None:
    r = started()
    now = T0
    weights_seen = [(r.status.canary_weight, now)]
    for _ in range(200):
        if r.status.phase is Phase.SUCCEEDED:
            break
        now = now + S
        result = check(Verdict.PASS) if plan.check_due(r, now) else None
        decision = plan.progress(r, result, now)
        if decision.weight != r.status.canary_weight:
            weights_seen.append((decision.weight, now))
        r = apply(r, decision)
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
    r = started()
    assert not plan.check_due(r, T0 + 9 * S)
    assert plan.check_due(r, T0 + 10 * S)
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    assert not plan.check_due(r, T0 + 19 * S)
    assert plan.check_due(r, T0 + 20 * S)


def test_failure_limit_consecutive_failures_roll_back_mid_step_at_once() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    first = plan.progress(r, check(Verdict.FAIL, 72.5), T0 + 20 * S)
    assert first.status.phase is Phase.PROGRESSING
    assert first.weight == 10
    assert [e.reason for e in first.events] == ["CheckFailed"]
    assert first.status.analysis is not None
    assert first.status.analysis.consecutive_failures == 1
    r = apply(r, first)
    second = plan.progress(r, check(Verdict.FAIL, 60.0), T0 + 25 * S)
    assert second.weight == 0
    s = second.status
    assert s.phase is Phase.ROLLED_BACK
    assert s.canary_weight == 0
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
    assert [e.reason for e in second.events] == ["RolledBack"]
    assert {c.type: c.status for c in s.conditions} == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}


def test_a_pass_resets_the_failure_count() -> None:
    r = started()
    for second, verdict in [(10, Verdict.FAIL), (20, Verdict.PASS), (30, Verdict.FAIL)]:
        r = apply(r, plan.progress(r, check(verdict), T0 + second * S))
    assert r.status.phase is Phase.PROGRESSING
    assert r.status.analysis is not None
    assert r.status.analysis.consecutive_failures == 1


def test_no_data_holds_the_step_then_rolls_back_after_max_no_data() -> None:
    r = started()  # hold 30s, maxNoData 1m
    now = T0
    while now < T0 + 59 * S:
        now += S
        decision = plan.progress(r, check(Verdict.NO_DATA) if plan.check_due(r, now) else None, now)
        assert decision.status.phase is Phase.PROGRESSING, f"still holding at {now - T0}"
        assert decision.weight == 10, "no data never advances a step"
        r = apply(r, decision)
    decision = plan.progress(r, None, T0 + 60 * S)
    assert decision.status.phase is Phase.ROLLED_BACK
    assert decision.weight == 0
    assert decision.status.rollback is not None
    assert decision.status.rollback.reason == "NoData"
    assert "no data for 1m (maxNoData 1m)" in (decision.status.message or "")


def test_no_data_wakes_the_operator_at_the_deadline() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.NO_DATA), T0 + 10 * S))
    r = apply(r, plan.progress(r, check(Verdict.NO_DATA), T0 + 20 * S))
    r = apply(r, plan.progress(r, check(Verdict.NO_DATA), T0 + 30 * S))
    decision = plan.progress(r, check(Verdict.NO_DATA), T0 + 55 * S)
    assert decision.wake_at == T0 + 60 * S


def test_data_returning_clears_no_data() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.NO_DATA), T0 + 10 * S))
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 20 * S))
    assert r.status.analysis is not None
    assert r.status.analysis.no_data_since is None
    decision = plan.progress(r, check(Verdict.PASS), T0 + 30 * S)
    assert decision.status.step_index == 1, "hold elapsed and the last check passed"


def test_hold_elapsed_without_a_passing_check_waits() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    r = apply(r, plan.progress(r, check(Verdict.FAIL), T0 + 20 * S))
    decision = plan.progress(r, check(Verdict.NO_DATA), T0 + 30 * S)
    assert decision.status.step_index == 0
    assert "hold done, waiting for a passing check" in (decision.status.message or "")


def test_clock_edge_one_millisecond_before_the_hold_ends() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 20 * S))
    just_before = T0 + 30 * S - timedelta(milliseconds=1)
    assert plan.progress(r, None, just_before).status.step_index == 0
    assert plan.progress(r, None, T0 + 30 * S).status.step_index == 1


def test_a_check_from_the_previous_step_does_not_pass_the_next() -> None:
    r = started()
    for second in (10, 20, 30):
        r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + second * S))
    assert r.status.step_index == 1
    # Step 2 holds 30s too; its hold end with no check of its own does not advance.
    assert plan.progress(r, None, T0 + 60 * S).status.step_index == 1


def test_restart_resumes_from_status_with_the_same_deadlines() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
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
    r = started()
    for second in (10, 20, 30):
        r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + second * S))
    assert r.status.canary_weight == 30
    newer = r.model_copy(update={"generation": 2})
    assert plan.needs_start(newer)
    decision = plan.start(newer, _target(newer), T0 + 40 * S)
    assert (decision.status.step_index, decision.weight, decision.status.observed_generation) == (0, 10, 2)
    assert decision.status.analysis is None
    assert len(decision.status.history) == 1


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.ROLLED_BACK])
def test_terminal_phases_hold_their_weight(phase: Phase) -> None:
    r = started()
    r = r.model_copy(update={"status": r.status.model_copy(update={"phase": phase, "canary_weight": 0})})
    decision = plan.decide_without_check(r, T0 + 100 * S)
    assert decision.status == r.status
    assert decision.weight == 0
    assert decision.wake_at is None
    assert not plan.needs_start(r)


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    r = started()
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    reconciling = next(c for c in r.status.conditions if c.type == "Reconciling")
    assert reconciling.last_transition_time == T0


def test_checks_fall_on_a_shared_grid_whatever_the_step_start() -> None:
    """Rollouts started at different moments check at the same moments: one Prometheus query serves all."""
    firsts = []
    for offset_ms in (0, 1300, 4700, 9990):
        r = started(at=T0 + timedelta(milliseconds=offset_ms))
        first = plan.next_check_at(r)
        assert first.timestamp() % 10 == 0, first
        assert timedelta(seconds=5) <= first - r.status.step_started_at <= timedelta(seconds=15)
        firsts.append(first)
        checked = apply(r, plan.progress(r, check(Verdict.PASS), first + timedelta(milliseconds=40)))
        assert plan.next_check_at(checked) == first + 10 * S, "a late tick does not shift the grid"
    assert len(set(firsts[:3])) == 1


@pytest.mark.parametrize(
    ("seconds", "period", "expected"),
    [(0, 10, 0), (0.001, 10, 10), (9.999, 10, 10), (10, 10, 10), (10.5, 1, 11), (3, 0.5, 3)],
)
def test_align_up(seconds: float, period: float, expected: float) -> None:
    moment = T0 + timedelta(seconds=seconds)
    assert plan.align_up(moment, timedelta(seconds=period)) == T0 + timedelta(seconds=expected)


def test_no_data_at_the_start_of_a_step_is_quiet_then_reported_once() -> None:
    r = started()
    quiet = timedelta(seconds=15)
    first = plan.progress(r, check(Verdict.NO_DATA), T0 + 10 * S, quiet_start=quiet)
    assert first.events == (), "new series need a few scrapes: no warning yet"
    assert first.status.analysis is not None
    assert first.status.analysis.verdict is Verdict.NO_DATA
    r = apply(r, first)
    second = plan.progress(r, check(Verdict.NO_DATA), T0 + 20 * S, quiet_start=quiet)
    assert [e.reason for e in second.events] == ["NoData"]
    r = apply(r, second)
    third = plan.progress(r, check(Verdict.NO_DATA), T0 + 30 * S, quiet_start=quiet)
    assert third.events == ()


def test_a_run_of_passes_is_written_every_few_checks_failures_at_once() -> None:
    r = started()
    written = []
    for second in (10, 20, 30 - 0.5):
        decision = plan.progress(r, check(Verdict.PASS), T0 + second * S)
        written.append(decision.status != r.status)
        r = apply(r, decision)
    assert written == [True, False, False], "the first pass is recorded, routine passes are not"
    assert plan.check_due(r, T0 + 30 * S)
    decision = plan.progress(r, check(Verdict.FAIL, 80.0), T0 + 30 * S)
    assert decision.status != r.status, "a failure is recorded at once"
    r = started(spec(steps=[{"weight": 10, "hold": "2m"}, {"weight": 100}]))
    r = apply(r, plan.progress(r, check(Verdict.PASS), T0 + 10 * S))
    later = plan.progress(r, check(Verdict.PASS), T0 + 40 * S)
    assert later.status.step_index == 0
    assert later.status.analysis is not None
    assert later.status.analysis.checked_at == T0 + 40 * S, f"refreshed after {plan.REFRESH_CHECKS} checks"
