"""Steering by hand through the pure core: requests as the annotation carries them, when each applies
(core/steering.py), and what `plan.decide` does with them, driven like test_plan.py with a fake clock,
fake checks and a VirtualService that follows the writes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from builders import T0, rollout, spec
from test_plan import Mesh, S, check, run, started, tick

from coalmine.core import plan, steering
from coalmine.core.models import REQUEST_ANNOTATION, Phase, Request, Rollout, RolloutStatus, Verdict

_ids = iter(range(1_000_000))


def ask(r: Rollout, verb: str, *, by: str = "alice", reason: str = "", full: bool = False, **extra: Any) -> Rollout:
    """The Rollout with a fresh request on it, as the CLI writes one."""
    request = Request(
        id=f"req-{next(_ids)}", verb=verb, by=by, reason=reason, full=full, generation=r.generation, **extra
    )
    return r.model_copy(update={"request": request})


def reasons(events: list[plan.Event]) -> list[str]:
    return [e.reason.value for e in events]


def gated_spec(**overrides: Any) -> dict[str, Any]:
    return spec(
        steps=[{"weight": 10, "hold": "30s", "approval": "manual"}, {"weight": 50}, {"weight": 100}], **overrides
    )


# --- the annotation ---------------------------------------------------------------------------------


def test_a_request_survives_the_annotation_round_trip() -> None:
    request = Request(id="6f1c", verb="promote", full=True, by="alice", reason="hotfix", at=T0, generation=3)
    text = request.to_annotation()
    assert json.loads(text) == {
        "id": "6f1c",
        "verb": "promote",
        "full": True,
        "by": "alice",
        "reason": "hotfix",
        "at": "2026-11-30T12:00:00.000Z",
        "generation": 3,
    }
    assert Request.from_annotation(text) == request
    body = {"metadata": {"name": "order", "namespace": "shop", "annotations": {REQUEST_ANNOTATION: text}}}
    assert Rollout.from_body({**body, "spec": spec()}).request == request


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param("pause please", "cannot be read", id="not-json"),
        pytest.param('["pause"]', "is not a JSON object", id="not-an-object"),
        pytest.param('{"id":"a","verb":"pause","id":"b"}', "a key appears twice: 'id'", id="duplicate-key"),
        pytest.param('{"id":"a","verb":"pause","when":"now"}', "unknown field 'when'", id="unknown-field"),
        pytest.param('{"verb":"pause"}', "id must be a string", id="no-id"),
        pytest.param('{"id":"a","verb":"pause","full":"yes"}', "full: Input should be a valid boolean", id="bad-type"),
        pytest.param('{"id":"a","verb":"pause","reason":"' + "x" * 1025 + '"}', "longer than 1024", id="long-reason"),
    ],
)
def test_an_annotation_that_is_not_a_request_is_refused_once_with_why(raw: str, problem: str) -> None:
    request = Request.from_annotation(raw)
    assert problem in request.problem
    assert request.id, "it has an id all the same (a digest of the text), so it is acknowledged once"
    assert Request.from_annotation(raw).id == request.id
    mesh = Mesh()
    r = started(mesh=mesh).model_copy(update={"request": request})
    r, events = tick(r, mesh, T0 + S)
    assert r.status.last_request is not None
    assert (r.status.last_request.result, r.status.last_request.message) == ("Refused", request.problem)
    assert reasons(events) == ["RequestRefused"]
    assert r.status.paused is None
    again, events = tick(r, mesh, T0 + 2 * S)
    assert events == []
    assert again.status == r.status, "handled once, then ignored"


# --- refusals: the CLI asks the same rule before writing --------------------------------------------


def _succeeded(mesh: Mesh) -> Rollout:
    r = started(mesh=mesh)
    status = r.status.model_copy(update={"phase": Phase.SUCCEEDED, "step_index": 3, "canary_weight": 100})
    return r.model_copy(update={"status": status})


@pytest.mark.parametrize(
    ("state", "verb", "why"),
    [
        pytest.param("succeeded", "promote", "already succeeded", id="promote-succeeded"),
        pytest.param("progressing", "retry", "retry starts a rolled-back rollout again", id="retry-progressing"),
        pytest.param("progressing", "resume", "not paused", id="resume-not-paused"),
        pytest.param("progressing", "restart", "unknown verb 'restart'", id="unknown-verb"),
        pytest.param("succeeded", "abort", "to go back, release the previous version", id="abort-succeeded"),
        pytest.param("succeeded", "pause", "only a Progressing rollout can be paused", id="pause-succeeded"),
        pytest.param("progressing", "promote", "no check has run at step 1/4 yet", id="promote-before-a-check"),
    ],
)
def test_a_request_that_cannot_apply_is_refused_in_the_status_and_changes_nothing(
    state: str, verb: str, why: str
) -> None:
    mesh = Mesh()
    r = started(mesh=mesh) if state == "progressing" else _succeeded(mesh)
    asked = ask(r, verb)
    assert asked.request is not None
    assert why in (steering.refusal(asked, asked.request) or ""), "the CLI refuses at once with this"
    decision = plan.decide(asked, mesh.resolve(asked), None, T0 + S)
    unrequested = plan.decide(r, mesh.resolve(r), None, T0 + S)
    assert decision.status.last_request is not None
    assert decision.status.last_request.result == "Refused"
    assert why in decision.status.last_request.message
    assert decision.status.model_copy(update={"last_request": None}) == unrequested.status
    assert decision.weight == unrequested.weight
    assert [e.reason for e in decision.events] == [*[e.reason for e in unrequested.events], "RequestRefused"]


def test_a_request_for_an_older_generation_is_refused() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    asked = ask(r, "promote")
    newer = asked.model_copy(update={"ref": asked.ref.model_copy(update={"generation": 2})})
    r, events = tick(newer, mesh, T0 + 11 * S)
    assert r.status.observed_generation == 2
    assert reasons(events) == ["RolloutStarted"], "a generation not seen yet starts first ..."
    r, events = tick(r, mesh, T0 + 12 * S)
    assert reasons(events) == ["RequestRefused"], "... then the request is looked at"
    assert r.status.last_request is not None
    assert "made for generation 1" in r.status.last_request.message
    assert mesh.canary() == 10


def test_a_request_to_a_rollout_that_has_not_started_is_refused() -> None:
    mesh = Mesh()
    mesh.vs = None
    r, _ = tick(rollout(), mesh, T0)
    assert r.status.phase is Phase.PENDING
    r, events = tick(ask(r, "pause"), mesh, T0 + S)
    assert r.status.phase is Phase.PENDING
    assert r.status.last_request is not None
    assert "only a Progressing rollout can be paused; this one is Pending" in r.status.last_request.message
    assert reasons(events) == ["RequestRefused"]


def test_the_last_request_outlives_a_new_generation_so_its_annotation_is_not_handled_again() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "pause"), mesh, T0 + 11 * S)
    handled = r.status.last_request
    assert handled is not None
    newer = r.model_copy(update={"ref": r.ref.model_copy(update={"generation": 2})})
    r, events = tick(newer, mesh, T0 + 12 * S)
    assert r.status.last_request == handled
    assert r.status.paused is None, "a new generation starts afresh"
    r, events = tick(r, mesh, T0 + 13 * S)
    assert "RequestRefused" not in reasons(events)


# --- pause and resume ---------------------------------------------------------------------------------


def test_pause_holds_the_weight_and_resume_continues_the_hold_where_it_stopped() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])  # step 1 holds 30s from T0
    r, events = tick(ask(r, "pause", reason="checking dashboards"), mesh, T0 + 10 * S)
    assert reasons(events) == ["Paused"]
    assert r.status.paused is not None
    assert (r.status.paused.since, r.status.paused.by) == (T0 + 10 * S, "alice")
    assert "20s of the hold left" in (r.status.message or "")
    assert {c.type: c.reason for c in r.status.conditions}["Reconciling"] == "Paused"
    assert r.status.history[-1].request is not None
    assert r.status.history[-1].request.verb == "pause"
    for second in range(20, 60, 10):  # long past the hold: passing checks keep running, nothing moves
        assert plan.wants_check(r, mesh.resolve(r), T0 + second * S), "checks keep running while paused"
        r, _ = tick(r, mesh, T0 + second * S, check(Verdict.PASS))
        assert (r.status.step_index, mesh.canary()) == (0, 10)
    r, events = tick(ask(r, "resume"), mesh, T0 + 55 * S)
    assert reasons(events) == ["Resumed"]
    assert (r.status.paused, r.status.step_paused_for) == (None, 45 * S)
    # 10 s ran before the pause: 20 s are left, from 55 s on. Not 30 s from 55 s, not at once.
    assert steering.hold_end(r.spec, r.status, T0 + 55 * S) == T0 + 75 * S
    assert "hold ends 2026-11-30T12:01:15.000Z" in (r.status.message or "")
    r = run(r, mesh, [60, 70])
    assert r.status.step_index == 0
    r = run(r, mesh, [75])
    assert (r.status.step_index, mesh.canary()) == (1, 30)
    assert r.status.step_paused_for is None, "the next step holds its own hold"


def test_a_failing_canary_is_rolled_back_while_paused() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "pause"), mesh, T0 + 11 * S)
    r = run(r, mesh, [20], Verdict.FAIL)
    r, events = tick(r, mesh, T0 + 30 * S, check(Verdict.FAIL, 60.0))
    assert r.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "FailureLimit"
    assert r.status.paused is None
    assert reasons(events) == ["RolledBack"]


def test_no_data_still_rolls_back_while_paused() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "pause"), mesh, T0 + 11 * S)
    r = run(r, mesh, list(range(20, 80, 10)), Verdict.NO_DATA)
    assert r.status.phase is Phase.ROLLED_BACK
    assert r.status.rollback is not None
    assert r.status.rollback.reason == "NoData"


def test_a_check_that_rolls_back_wins_over_a_request_in_the_same_tick() -> None:
    mesh = Mesh()
    r = run(run(started(mesh=mesh), mesh, [10]), mesh, [20], Verdict.FAIL)
    assert r.status.analysis is not None
    assert r.status.analysis.consecutive_failures == 1
    r, events = tick(ask(r, "pause"), mesh, T0 + 30 * S, check(Verdict.FAIL, 50.0))
    assert reasons(events) == ["RolledBack"]
    assert r.status.phase is Phase.ROLLED_BACK
    assert r.status.last_request is None, "looked at next tick"
    r, _ = tick(r, mesh, T0 + 31 * S)
    assert r.status.last_request is not None
    assert "only a Progressing rollout can be paused; this one is RolledBack" in r.status.last_request.message


# --- promote ---------------------------------------------------------------------------------------


def test_promote_ends_the_hold_now_once_the_last_check_passed() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r, events = tick(ask(r, "promote", reason="looks good"), mesh, T0 + 12 * S)
    assert reasons(events) == ["Promoted", "StepAdvanced"]
    assert (r.status.step_index, r.status.step_started_at, mesh.canary()) == (1, T0 + 12 * S, 30)
    assert r.status.canary_weight == 30
    entry = r.status.history[-1]
    assert (entry.step_index, entry.weight) == (1, 30)
    assert entry.request is not None
    assert (entry.request.verb, entry.request.by, entry.request.reason) == ("promote", "alice", "looks good")
    assert r.status.last_request is not None
    assert r.status.last_request.result == "Applied"
    assert "step 1/4 (10%) -> step 2/4 (30%)" in r.status.last_request.message


@pytest.mark.parametrize(
    ("verdict", "why"),
    [
        pytest.param(
            Verdict.FAIL, "the last check failed (success-rate 72.5% < 99%; 1 of failureLimit 2)", id="failed"
        ),
        pytest.param(Verdict.NO_DATA, "the last check had no data (success-rate: no canary requests)", id="no-data"),
    ],
)
def test_promote_is_refused_while_the_last_check_did_not_pass(verdict: Verdict, why: str) -> None:
    mesh = Mesh()
    r = run(run(started(mesh=mesh), mesh, [10]), mesh, [20], verdict)
    asked = ask(r, "promote")
    assert asked.request is not None
    assert why in (steering.refusal(asked, asked.request) or "")
    r, events = tick(asked, mesh, T0 + 21 * S)
    assert reasons(events) == ["RequestRefused"]
    assert (r.status.step_index, mesh.canary()) == (0, 10)


def test_promote_needs_a_pass_whatever_else_a_check_can_say() -> None:
    """Except Inconclusive: every bound held and the judge cannot tell yet, which is a person's call."""
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    assert r.status.analysis is not None
    for verdict in Verdict:
        if verdict in (Verdict.PASS, Verdict.INCONCLUSIVE):
            continue
        analysis = r.status.analysis.model_copy(update={"verdict": verdict})
        asked = ask(r.model_copy(update={"status": r.status.model_copy(update={"analysis": analysis})}), "promote")
        assert asked.request is not None
        assert "promote needs a passing check" in (steering.refusal(asked, asked.request) or ""), verdict


def test_promote_takes_the_check_of_its_own_tick() -> None:
    """A request and a due check in one tick: the request is judged on the fresh check."""
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r, events = tick(ask(r, "promote"), mesh, T0 + 20 * S, check(Verdict.FAIL, 80.0))
    assert reasons(events) == ["CheckFailed", "RequestRefused"]
    assert mesh.canary() == 10


def test_promote_is_refused_while_paused() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "pause"), mesh, T0 + 11 * S)
    r, _ = tick(ask(r, "promote"), mesh, T0 + 12 * S)
    assert r.status.last_request is not None
    assert "paused (by alice): resume it first (coalmine resume order -n shop)" in r.status.last_request.message
    assert mesh.canary() == 10


def test_promote_full_goes_to_100_at_once_skipping_the_remaining_analysis() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    r, events = tick(ask(r, "promote", full=True), mesh, T0 + 12 * S)
    assert reasons(events) == ["Promoted", "Succeeded"]
    assert (r.status.phase, r.status.step_index, r.status.canary_weight, mesh.canary()) == (
        Phase.SUCCEEDED,
        3,
        100,
        100,
    )
    assert "skipping the remaining steps and their analysis" in (r.status.message or "")
    entry = r.status.history[-1]
    assert (entry.step_index, entry.weight) == (3, 100)
    assert entry.request is not None
    assert entry.request.full


def test_promote_at_the_last_step_succeeds() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert (r.status.step_index, mesh.canary()) == (3, 100)
    r, events = tick(ask(r, "promote"), mesh, T0 + 101 * S)
    assert reasons(events) == ["Promoted", "Succeeded"]
    assert r.status.phase is Phase.SUCCEEDED


# --- abort and retry --------------------------------------------------------------------------------


def test_abort_puts_the_canary_at_0_now_and_says_who_and_why() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    assert mesh.canary() == 30
    asked = ask(r, "abort", by="bob", reason="error budget burning")
    decision = plan.decide(asked, mesh.resolve(asked), None, T0 + 31 * S)
    assert (decision.status.phase, decision.weight) == (Phase.ROLLING_BACK, 0), "on record before traffic moves"
    r, events = tick(asked, mesh, T0 + 31 * S)
    assert reasons(events) == ["Aborted", "RolledBack"]
    assert (r.status.phase, r.status.canary_weight, mesh.canary()) == (Phase.ROLLED_BACK, 0, 0)
    assert r.status.rollback is not None
    assert (r.status.rollback.reason, r.status.rollback.by) == ("Aborted", "bob")
    assert r.status.message == "rolled back at step 2/4 (30%): aborted by bob: error budget burning"
    assert r.status.history[-1].weight == 0
    # It stays there: nothing moves on by itself.
    r, events = tick(r, mesh, T0 + 200 * S)
    assert (r.status.phase, mesh.canary(), events) == (Phase.ROLLED_BACK, 0, [])


def test_retry_starts_the_same_generation_again_from_the_first_step() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20, 30])
    r, _ = tick(ask(r, "abort"), mesh, T0 + 31 * S)
    before = r.status.history
    r, events = tick(ask(r, "retry", by="carol"), mesh, T0 + 40 * S)
    assert reasons(events) == ["Retried", "RolloutStarted"]
    assert (r.status.phase, r.status.step_index, r.status.observed_generation) == (Phase.PROGRESSING, 0, 1)
    assert (mesh.canary(), r.status.canary_weight) == (10, 10)
    assert r.status.rollback is None
    assert r.status.history[: len(before)] == before, "the history of the generation is kept"
    assert r.status.history[-1].request is not None
    assert r.status.history[-1].request.verb == "retry"
    now = T0 + 40 * S
    while r.status.phase is Phase.PROGRESSING and now < T0 + 400 * S:
        now += S
        r, _ = tick(r, mesh, now, check(Verdict.PASS) if plan.wants_check(r, mesh.resolve(r), now) else None)
    assert (r.status.phase, r.status.observed_generation, mesh.canary()) == (Phase.SUCCEEDED, 1, 100)


def test_retry_keeps_the_stable_the_generation_started_with() -> None:
    """With spec.stable omitted the stable is what served when the generation started, on record."""
    mesh = Mesh()
    body = spec()
    del body["stable"]
    r = run(started(body, mesh=mesh), mesh, [10])
    r, _ = tick(ask(r, "abort"), mesh, T0 + 11 * S)
    r, _ = tick(ask(r, "retry"), mesh, T0 + 12 * S)
    assert r.status.stable is not None
    assert r.status.stable.subset == "v1"
    assert mesh.canary() == 10


# --- manual gates ------------------------------------------------------------------------------------


def test_a_manual_step_waits_for_promote_after_its_hold_with_checks_running() -> None:
    mesh = Mesh()
    r = started(gated_spec(), mesh=mesh)
    assert "holding 30s, then waiting for promote" in (r.status.message or "")
    r, events = tick(r, mesh, T0 + 30 * S, check(Verdict.PASS))
    assert reasons(events) == ["WaitingForPromotion"]
    assert "waiting for promote (coalmine promote order -n shop)" in (r.status.message or "")
    assert {c.type: c.reason for c in r.status.conditions}["Reconciling"] == "WaitingForPromotion"
    for second in (40, 50, 60, 70):
        r, events = tick(r, mesh, T0 + second * S, check(Verdict.PASS))
        assert (events, r.status.step_index, mesh.canary()) == ([], 0, 10), "announced once; nothing moves"
    r, events = tick(ask(r, "promote"), mesh, T0 + 75 * S)
    assert reasons(events) == ["Promoted", "StepAdvanced"]
    assert mesh.canary() == 50


def test_a_failing_canary_at_a_manual_gate_is_rolled_back() -> None:
    mesh = Mesh()
    r = run(started(gated_spec(), mesh=mesh), mesh, [10, 20, 30, 40])
    r = run(r, mesh, [50, 60], Verdict.FAIL)
    assert (r.status.phase, mesh.canary()) == (Phase.ROLLED_BACK, 0)


# --- exactly once --------------------------------------------------------------------------------------


def test_a_handled_request_is_ignored_after_it_was_recorded() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "promote"), mesh, T0 + 11 * S)
    assert mesh.canary() == 30
    # A restarted operator (or the other replica) reads the object as written: same request, handled.
    reborn = Rollout.from_body(
        {
            "metadata": {
                "name": "order",
                "namespace": "shop",
                "generation": 1,
                "annotations": {REQUEST_ANNOTATION: r.request.to_annotation() if r.request else ""},
            },
            "spec": spec(),
            "status": r.status.to_wire(),
        }
    )
    assert steering.pending(reborn) is None
    r2, events = tick(reborn, mesh, T0 + 12 * S)
    assert "Promoted" not in reasons(events)
    assert (r2.status.step_index, mesh.canary()) == (1, 30)


def test_a_request_in_the_history_is_handled_even_after_a_later_one() -> None:
    mesh = Mesh()
    r, _ = tick(ask(run(started(mesh=mesh), mesh, [10]), "pause"), mesh, T0 + 11 * S)
    first = r.request
    r, _ = tick(ask(r, "resume"), mesh, T0 + 12 * S)
    r = r.model_copy(update={"request": first})  # the old annotation written back (a restore, say)
    assert steering.pending(r) is None


def test_history_keeps_the_newest_entries() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10])
    for i in range(plan.MAX_HISTORY + 5):
        r, _ = tick(ask(r, "pause" if i % 2 == 0 else "resume"), mesh, T0 + 11 * S + i * timedelta(milliseconds=10))
    assert len(r.status.history) == plan.MAX_HISTORY
    assert r.status.history[-1].request is not None


# --- the hold, with pauses ------------------------------------------------------------------------------


def test_hold_end_counts_pauses_but_not_before_the_step_began() -> None:
    r = rollout()
    status = RolloutStatus(step_index=0, step_started_at=T0, step_paused_for=5 * S)
    assert steering.hold_end(r.spec, status, T0 + 100 * S) == T0 + 35 * S
    from coalmine.core.models import Pause

    paused = status.model_copy(update={"paused": Pause(since=T0 - 10 * S)})
    assert steering.paused_for(paused, T0 + 20 * S) == 25 * S, "5 s before, and 20 s since the step began"
    assert steering.hold_end(r.spec, paused, T0 + 20 * S) == T0 + 55 * S


def test_an_inconclusive_judge_after_the_hold_waits_for_a_person_who_may_promote() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20])
    undecided = check(Verdict.INCONCLUSIVE)
    r, events = tick(r, mesh, T0 + 30 * S, undecided)  # the hold (30 s) is over
    assert (r.status.step_index, mesh.canary()) == (0, 10), "inconclusive holds the step: never a pass"
    reconciling = next(c for c in r.status.conditions if c.type == "Reconciling")
    assert reconciling.reason == "WaitingForPromotion"
    assert "the judge is inconclusive: waiting for a passing check, or for a person to promote" in r.status.message
    assert "(coalmine promote order -n shop) or abort (coalmine abort order -n shop)" in r.status.message
    assert reasons(events) == ["WaitingForPromotion"]
    r, events = tick(r, mesh, T0 + 40 * S, undecided)
    assert "WaitingForPromotion" not in reasons(events), "announced once"
    assert next(c for c in r.status.conditions if c.type == "Reconciling").reason == "WaitingForPromotion"
    r, events = tick(ask(r, "promote"), mesh, T0 + 41 * S)
    assert "Promoted" in reasons(events)
    assert (r.status.step_index, mesh.canary()) == (1, 30)


def test_an_inconclusive_judge_that_later_passes_moves_on_by_itself() -> None:
    mesh = Mesh()
    r = run(started(mesh=mesh), mesh, [10, 20])
    r, _ = tick(r, mesh, T0 + 40 * S, check(Verdict.INCONCLUSIVE))
    assert (r.status.step_index, mesh.canary()) == (0, 10)
    r, events = tick(r, mesh, T0 + 50 * S, check(Verdict.PASS))
    assert "StepAdvanced" in reasons(events)
    assert (r.status.step_index, mesh.canary()) == (1, 30)
