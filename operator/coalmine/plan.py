"""The rollout state machine: pure functions of (rollout, observations, now) -> Decision.

Every transition lives here. The shell (reconcile.py) reads, calls one of these, writes the
returned status (guarded by resourceVersion) and then moves the VirtualService to the returned
weight. Writing the status first makes it a write-ahead log: a decided rollback is recorded
before traffic moves, so an operator killed in between finishes the job on restart.

Transitions (one per tick):

    (new generation)  --valid-->            Progressing step 0
    (new generation)  --object missing-->   Pending       (re-checked; starts when it appears)
    (new generation)  --spec does not fit-> Invalid       (re-checked; nothing written to the VS)
    Progressing --check failed failureLimit times in a row--> RolledBack (weight 0)
    Progressing --no data for maxNoData-->                   RolledBack (weight 0)
    Progressing --hold elapsed, last check passed-->          next step, or Succeeded after the last
    Succeeded / RolledBack: hold the weight until the next generation

No clock, no I/O: `now` comes in as an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from coalmine.analysis import CheckResult
from coalmine.models import (
    AnalysisStatus,
    Condition,
    Destination,
    HistoryEntry,
    MetricResult,
    Phase,
    RollbackInfo,
    Rollout,
    RolloutSpec,
    RolloutStatus,
    Verdict,
    format_duration,
    format_time,
)
from coalmine.validation import Problem, Target

RECHECK = timedelta(seconds=10)  # how often Pending and Invalid rollouts look again
REFRESH_CHECKS = 3  # a run of passing checks is written to status at least every this many checks


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus  # the status to hold; the shell writes it when it differs
    weight: int | None  # canary weight the owned routes must have; None: leave the VS alone
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None  # next tick; None: only when something changes


# --- queries about the current status --------------------------------------------------------------


def needs_start(rollout: Rollout) -> bool:
    """A generation the operator has not started yet, or one waiting to become valid."""
    status = rollout.status
    return status.observed_generation != rollout.generation or status.phase in (
        None,
        Phase.PENDING,
        Phase.INVALID,
    )


def _step_label(spec: RolloutSpec, index: int) -> str:
    return f"{index + 1}/{len(spec.steps)}"


def align_up(moment: datetime, period: timedelta) -> datetime:
    """The first multiple of `period` since the epoch at or after `moment`."""
    step = period.total_seconds()
    seconds = moment.timestamp()
    aligned = math.ceil(round(seconds / step, 6)) * step
    return datetime.fromtimestamp(aligned, moment.tzinfo)


def _next_check(step_started_at: datetime, last_check: datetime | None, every: timedelta) -> datetime:
    base = last_check if last_check is not None and last_check >= step_started_at else step_started_at
    # A tick runs a little after its grid point: count from that point, not from the tick.
    return align_up(base - every / 2, every) + every


def next_check_at(rollout: Rollout) -> datetime:
    """Checks fall on a grid of checkEvery (counted from the epoch), so every Rollout with the same
    checkEvery checks at the same moments and Prometheus gets one query per metric for all of them."""
    status = rollout.status
    assert status.step_started_at is not None
    last = status.analysis.checked_at if status.analysis else None
    return _next_check(status.step_started_at, last, rollout.spec.analysis.check_every)


def check_due(rollout: Rollout, now: datetime) -> bool:
    return rollout.status.phase is Phase.PROGRESSING and now >= next_check_at(rollout)


def step_elapsed(rollout: Rollout, now: datetime) -> timedelta:
    assert rollout.status.step_started_at is not None
    return now - rollout.status.step_started_at


# --- conditions ------------------------------------------------------------------------------------


def _conditions(
    old: tuple[Condition, ...], generation: int, now: datetime, wanted: list[tuple[str, bool, str, str]]
) -> tuple[Condition, ...]:
    previous = {c.type: c for c in old}
    result = []
    for type_, true, reason, message in wanted:
        status = "True" if true else "False"
        before = previous.get(type_)
        since = before.last_transition_time if before is not None and before.status == status else now
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=since,
            )
        )
    return tuple(result)


def _with_phase(
    status: RolloutStatus, generation: int, now: datetime, phase: Phase, reason: str, message: str
) -> RolloutStatus:
    """Set phase and message, and the kstatus conditions (Ready, Reconciling, Stalled) that go with them."""
    ready = phase is Phase.SUCCEEDED
    reconciling = phase in (Phase.PENDING, Phase.PROGRESSING)
    stalled = phase in (Phase.ROLLED_BACK, Phase.INVALID)
    conditions = _conditions(
        status.conditions,
        generation,
        now,
        [
            ("Ready", ready, reason, message),
            (
                "Reconciling",
                reconciling,
                reason if reconciling else "Finished",
                message if reconciling else "",
            ),
            ("Stalled", stalled, reason if stalled else "NotStalled", message if stalled else ""),
        ],
    )
    return status.model_copy(
        update={
            "phase": phase,
            "message": message,
            "observed_generation": generation,
            "conditions": conditions,
        }
    )


# --- transitions -----------------------------------------------------------------------------------


def reject(status: RolloutStatus, generation: int, problem: Problem, now: datetime) -> Decision:
    """Pending (something to wait for) or Invalid (the spec must change): no VS write either way."""
    phase = Phase.PENDING if problem.waiting else Phase.INVALID
    reason = "WaitingForObjects" if problem.waiting else "Invalid"
    message = f"{'waiting: ' if problem.waiting else 'invalid: '}{problem.message}"
    base = RolloutStatus(conditions=status.conditions) if status.observed_generation != generation else status
    new = _with_phase(base, generation, now, phase, reason, message)
    events: tuple[Event, ...] = ()
    if new.message != status.message or new.phase != status.phase:
        events = (Event("Normal" if problem.waiting else "Warning", reason, message),)
    return Decision(status=new, weight=None, events=events, wake_at=now + RECHECK)


def start(rollout: Rollout, resolution: Target | Problem, now: datetime) -> Decision:
    """A new generation (or a waiting one looking again): validate, then begin at step 1."""
    spec, status, gen = rollout.spec, rollout.status, rollout.generation
    if isinstance(resolution, Problem):
        return reject(status, gen, resolution, now)

    weight = spec.steps[0].weight
    hold = spec.hold(0)
    message = f"step {_step_label(spec, 0)}: canary at {weight}%, holding {format_duration(hold)}"
    stable = resolution.stable
    new = RolloutStatus(
        stable=Destination(host=stable.host, subset=stable.subset, port=stable.port),
        step_index=0,
        step_label=_step_label(spec, 0),
        canary_weight=weight,
        step_started_at=now,
        started_at=now,
        history=(HistoryEntry(step_index=0, weight=weight, started_at=now),),
        conditions=status.conditions,
    )
    new = _with_phase(new, gen, now, Phase.PROGRESSING, "StepStarted", message)
    event = Event(
        "Normal",
        "RolloutStarted",
        f"generation {gen}: {resolution.stable.subset} -> {resolution.canary.subset}, "
        f"steps {', '.join(str(s.weight) for s in spec.steps)}; canary at {weight}%",
    )
    return Decision(
        status=new, weight=weight, events=(event,), wake_at=_next_check(now, None, spec.analysis.check_every)
    )


def _analysis_status(rollout: Rollout, check: CheckResult, now: datetime) -> AnalysisStatus:
    status = rollout.status
    previous = status.analysis
    in_step = (
        previous is not None and status.step_started_at is not None and previous.checked_at > status.step_started_at
    )
    failures = previous.consecutive_failures if previous is not None and in_step else 0
    no_data_since = previous.no_data_since if previous is not None and in_step else None
    if check.verdict is Verdict.FAIL:
        failures, no_data_since = failures + 1, None
    elif check.verdict is Verdict.PASS:
        failures, no_data_since = 0, None
    elif no_data_since is None:
        # No data since the last check that had some, or since the step began.
        had_data = previous is not None and in_step and previous.verdict is not Verdict.NO_DATA
        no_data_since = previous.checked_at if had_data and previous is not None else status.step_started_at
    return AnalysisStatus(
        checked_at=now,
        window=check.window,
        verdict=check.verdict,
        consecutive_failures=failures,
        no_data_since=no_data_since,
        requests=check.requests,
        metrics=check.metrics,
    )


def _summary(check: AnalysisStatus) -> str:
    parts = []
    for m in check.metrics:
        value = "no data" if m.value is None else f"{m.value:.4g}"
        parts.append(f"{m.name} {value} ({m.threshold})")
    return ", ".join(parts)


def _rollback(
    rollout: Rollout,
    analysis: AnalysisStatus | None,
    now: datetime,
    reason: str,
    culprit: MetricResult | None,
    why: str,
) -> Decision:
    spec, status = rollout.spec, rollout.status
    index = status.step_index or 0
    at = f"step {_step_label(spec, index)} ({status.canary_weight}%)"
    message = f"rolled back at {at}: {why}"
    if culprit is not None and culprit.query:
        message += f"; query: {culprit.query}"
    info = RollbackInfo(
        reason=reason,
        metric=culprit.name if culprit else "",
        value=culprit.value if culprit else None,
        threshold=culprit.threshold if culprit else "",
        query=culprit.query if culprit else "",
        at=now,
    )
    new = status.model_copy(update={"canary_weight": 0, "rollback": info, "finished_at": now, "analysis": analysis})
    new = _with_phase(new, rollout.generation, now, Phase.ROLLED_BACK, "RolledBack", message)
    return Decision(status=new, weight=0, events=(Event("Warning", "RolledBack", message),), wake_at=None)


def progress(
    rollout: Rollout, check: CheckResult | None, now: datetime, *, quiet_start: timedelta = timedelta(0)
) -> Decision:
    """One tick of a Progressing rollout, with the result of a check when one was due.

    No data in the first `quiet_start` of a step (new series need a few scrapes before `rate`
    sees them) holds the step like any no data, but posts no NoData warning.
    """
    spec, status = rollout.spec, rollout.status
    a = spec.analysis
    index = status.step_index or 0
    assert status.step_started_at is not None
    assert status.canary_weight is not None
    events: list[Event] = []
    analysis = status.analysis
    if check is not None:
        analysis = _analysis_status(rollout, check, now)
        if analysis.verdict is Verdict.FAIL:
            failed = check.failed
            if analysis.consecutive_failures >= a.failure_limit:
                culprit = failed[0]
                why = (
                    f"{culprit.name} {culprit.reason} in the last {check.window} "
                    f"({analysis.consecutive_failures} failed checks in a row, failureLimit {a.failure_limit})"
                )
                return _rollback(rollout, analysis, now, "FailureLimit", culprit, why)
            events.append(
                Event(
                    "Warning",
                    "CheckFailed",
                    "; ".join(f"{m.name} {m.reason}" for m in failed)
                    + f" ({analysis.consecutive_failures} of failureLimit {a.failure_limit})",
                )
            )
        elif (
            analysis.verdict is Verdict.NO_DATA
            and now - status.step_started_at >= quiet_start
            and (
                status.analysis is None
                or status.analysis.verdict is not Verdict.NO_DATA
                or _first_event_due(status, quiet_start)
            )
        ):
            events.append(Event("Warning", "NoData", f"holding step {_step_label(spec, index)}: {check.reason}"))

    if analysis is not None and analysis.no_data_since is not None and analysis.checked_at > status.step_started_at:
        deadline = analysis.no_data_since + a.max_no_data
        if now >= deadline:
            why = f"no data for {format_duration(now - analysis.no_data_since)} (maxNoData {format_duration(a.max_no_data)})"
            last_reason = next((m.reason for m in analysis.metrics if m.verdict is Verdict.NO_DATA), "")
            if last_reason:
                why += f": {last_reason}"
            return _rollback(rollout, analysis, now, "NoData", None, why)

    hold_end = status.step_started_at + spec.hold(index)
    passed_in_step = (
        analysis is not None and analysis.verdict is Verdict.PASS and analysis.checked_at > status.step_started_at
    )
    if now >= hold_end and passed_in_step:
        assert analysis is not None
        if index + 1 == len(spec.steps):
            message = (
                f"succeeded: canary at {status.canary_weight}% after {len(spec.steps)} steps; {_summary(analysis)}"
            )
            new = status.model_copy(update={"analysis": analysis, "finished_at": now})
            new = _with_phase(new, rollout.generation, now, Phase.SUCCEEDED, "Succeeded", message)
            return Decision(
                status=new, weight=new.canary_weight, events=(*events, Event("Normal", "Succeeded", message))
            )
        nxt = index + 1
        weight = spec.steps[nxt].weight
        hold = spec.hold(nxt)
        message = (
            f"step {_step_label(spec, nxt)}: canary at {weight}%, holding {format_duration(hold)}; "
            f"step {_step_label(spec, index)} passed: {_summary(analysis)}"
        )
        new = status.model_copy(
            update={
                "step_index": nxt,
                "step_label": _step_label(spec, nxt),
                "canary_weight": weight,
                "step_started_at": now,
                "analysis": analysis,
                "history": (*status.history, HistoryEntry(step_index=nxt, weight=weight, started_at=now)),
            }
        )
        new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, "StepAdvanced", message)
        event = Event("Normal", "StepAdvanced", f"canary {status.canary_weight}% -> {weight}%: {_summary(analysis)}")
        return Decision(
            status=new, weight=weight, events=(*events, event), wake_at=_next_check(now, None, a.check_every)
        )

    new = status
    if check is not None and analysis is not None and not _routine_pass(status, analysis, now, a.check_every):
        ends = f"hold ends {format_time(hold_end)}" if now < hold_end else "hold done, waiting for a passing check"
        message = (
            f"step {_step_label(spec, index)}: canary at {status.canary_weight}%, {ends}; "
            f"last check {analysis.verdict.value}: {_summary(analysis)}"
        )
        if analysis.verdict is Verdict.NO_DATA:
            message += f" ({check.reason})"
        new = status.model_copy(update={"analysis": analysis, "message": message})
        new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, "Analysing", message)
    wake = [_next_check(status.step_started_at, analysis.checked_at if analysis else None, a.check_every)]
    if now < hold_end:
        wake.append(hold_end)
    if analysis is not None and analysis.no_data_since is not None:
        wake.append(max(now, analysis.no_data_since + a.max_no_data))
    return Decision(status=new, weight=status.canary_weight, events=tuple(events), wake_at=min(wake))


def _routine_pass(status: RolloutStatus, analysis: AnalysisStatus, now: datetime, every: timedelta) -> bool:
    """A pass after a recorded pass in this step, recorded less than REFRESH_CHECKS checks ago.

    Such a check changes no decision (no failure count, no no-data clock), so its numbers need not
    be written at once: at scale that is most checks, and each write is a PATCH. Failures, no data,
    the first pass after either, and every transition are written when they happen.
    """
    assert status.step_started_at is not None
    last = status.analysis
    return (
        analysis.verdict is Verdict.PASS
        and last is not None
        and last.verdict is Verdict.PASS
        and last.checked_at > status.step_started_at
        and now - last.checked_at < REFRESH_CHECKS * every
    )


def _first_event_due(status: RolloutStatus, quiet_start: timedelta) -> bool:
    """The previous check had no data too, but fell in the quiet start: this is the first to report."""
    assert status.step_started_at is not None
    previous = status.analysis
    return previous is not None and previous.checked_at - status.step_started_at < quiet_start


def settle(rollout: Rollout) -> Decision:
    """Succeeded or RolledBack: keep the owned routes where the rollout left them."""
    return Decision(status=rollout.status, weight=rollout.status.canary_weight)


def decide_without_check(rollout: Rollout, now: datetime) -> Decision:
    """The tick for everything but a due check or a start."""
    if rollout.status.phase is Phase.PROGRESSING:
        return progress(rollout, None, now)
    return settle(rollout)
