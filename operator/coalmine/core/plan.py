"""The rollout state machine: pure functions of (rollout, resolution, observations, now) -> Decision.

Every rule of the machine lives here, behind two entry points the shell (reconcile.py) calls:

    decide(rollout, resolution, check, now, policy)   what to record, and which weight the routes need
    record_traffic(rollout, wanted, outcome, now)     what the traffic write did, recorded truthfully

The shell reads, calls `decide`, writes the returned status first (guarded by resourceVersion: a
write-ahead log, so a decided rollback is on record before traffic moves and two operators never
advance the same step), moves the VirtualService, then calls `record_traffic` and writes what it
returns. `status.canaryWeight` is only ever set from a VirtualService the operator read or wrote, so
it is never a weight the routes do not have.

Transitions (one per tick):

    (new generation) --routes all on the canary--------> Succeeded at once, nothing moved
    (new generation) --routes on the stable------------> Progressing step 1
    (new generation) --routes split at a step's weight-> Progressing at that step, nothing moved
    (new generation) --any other split------------------> Pending UnexpectedTraffic (or step 1 with Reset)
    (new generation) --object missing, route claimed---> Pending (re-checked; never writes)
    (new generation) --spec does not fit---------------> Invalid (re-checked; nothing written)
    Progressing --check failed failureLimit times in a row--> RollingBack
    Progressing --no data for maxNoData-------------------> RollingBack
    Progressing --owned objects changed (subset gone...)--> RollingBack
    Progressing --hold elapsed at the step's weight, last check passed--> next step, or Succeeded
                (a step with approval: manual waits for promote instead; a paused rollout does not move on)
    RollingBack --canary at 0 on the routes---------------> RolledBack
    Succeeded / RolledBack: hold the weight until the next generation

Requests a person makes (core/steering.py says when each can apply; a refused one is recorded and
changes nothing else), each in the tick that first sees it, after the check and any rollback it calls for:

    Progressing --promote (last check passed)-------------> next step now, or Succeeded (--full: at once)
    Progressing --abort-----------------------------------> RollingBack (reason Aborted, who and why)
    Progressing --pause / resume--------------------------> Progressing, paused / not (the hold continues)
    RolledBack  --retry-----------------------------------> Progressing from the first step, same generation

No clock, no I/O: `now` comes in as an argument.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from coalmine.core import hooks, steering, validation, virtualservice
from coalmine.core.analysis import CheckResult, StepContext
from coalmine.core.models import (
    STARTED_PHASES,
    TERMINAL_PHASES,
    AnalysisStatus,
    Approval,
    Capacity,
    Condition,
    Destination,
    HandledRequest,
    HistoryEntry,
    MetricResult,
    MirrorStatus,
    Pause,
    Phase,
    ReadinessStatus,
    Request,
    RollbackInfo,
    Rollout,
    RolloutSpec,
    RolloutStatus,
    UnexpectedTraffic,
    Verdict,
    format_duration,
    format_time,
)
from coalmine.core.validation import Backend, Problem, Ready, Resolution, RouteTraffic, Traffic, share_of

RECHECK = timedelta(seconds=10)  # how often Pending and Invalid rollouts look again
REFRESH_CHECKS = 3  # a run of passing checks is written to status at least every this many checks
STUCK_RETRY_MIN, STUCK_RETRY_MAX = timedelta(seconds=1), timedelta(seconds=30)
MAX_HISTORY = 100  # status.history keeps this many entries, the newest (requests can add any number)


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(enum.StrEnum):
    """Event reasons, and the reasons of the conditions that go with them."""

    ROLLOUT_STARTED = "RolloutStarted"
    STEP_STARTED = "StepStarted"
    STEP_ADVANCED = "StepAdvanced"
    ANALYSING = "Analysing"
    CHECK_FAILED = "CheckFailed"
    NO_DATA = "NoData"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    INVALID = "Invalid"
    WAITING_FOR_OBJECTS = "WaitingForObjects"
    ROUTE_CLAIMED = "RouteClaimed"
    UNEXPECTED_TRAFFIC = "UnexpectedTraffic"
    TRAFFIC_NOT_MOVED = "TrafficNotMoved"
    TRAFFIC_MOVED = "TrafficMoved"
    WAITING_FOR_PROMOTION = "WaitingForPromotion"
    WAITING_FOR_CANARY = "WaitingForCanary"  # a shift waits for the canary's ready pods (spec.readiness)
    PREFLIGHT_FAILED = "PreflightFailed"  # the mesh lacks what the checks need (ambient: waypoint, enrolment)
    WAITING_FOR_WEBHOOK = hooks.WAITING  # a pre-rollout, pre-step or gating during-step webhook holds it
    WEBHOOK_FAILED = "WebhookFailed"  # a pre-rollout webhook gave no 2xx within its timeout, or was refused
    # a person's requests (core/steering.py)
    PROMOTED = "Promoted"
    ABORTED = "Aborted"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    RETRIED = "Retried"
    REQUEST_REFUSED = "RequestRefused"


class RollbackReason(enum.StrEnum):
    FAILURE_LIMIT = "FailureLimit"
    FAIL_FAST = "FailFast"
    NO_DATA = "NoData"
    OBJECTS_CHANGED = "ObjectsChanged"
    WAITING_FOR_CANARY = "WaitingForCanary"
    ABORTED = "Aborted"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str


@dataclass(frozen=True)
class Policy:
    """Operator settings that shape decisions."""

    quiet_start: timedelta = timedelta(0)  # no NoData warning this early in a step (new series need scrapes)
    resync: timedelta = timedelta(seconds=60)  # finished rollouts re-assert their weight this often


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus  # the status to hold; the shell writes it when it differs
    weight: int | None = None  # canary weight the owned routes must have; None: leave the VS alone
    traffic: Traffic | None = None  # where to write it; None with a weight: it cannot be written ...
    blocked: str = ""  # ... and this says why
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None  # next tick; None: only when something changes


@dataclass(frozen=True)
class TrafficOutcome:
    """What the shell found or did on the owned routes after `decide`."""

    at_weight: bool  # the routes have the wanted weight (written now, or already there)
    observed: int | None  # the recorded canary's share of the routes as last read; None: routes not found
    error: str = ""  # why the wanted weight is not there
    attempted: bool = False  # a write was sent and the API server refused it (so the next one backs off)
    wrote: bool = False  # a write was sent and taken


# --- queries about the current status --------------------------------------------------------------


def needs_start(rollout: Rollout) -> bool:
    """A generation the operator has not started yet, or one waiting to start."""
    status = rollout.status
    return status.observed_generation != rollout.generation or status.phase in (None, Phase.PENDING, Phase.INVALID)


def desired_weight(rollout: Rollout) -> int | None:
    """The canary weight the recorded status asks of the routes (None before a start)."""
    status = rollout.status
    if needs_start(rollout):
        return None
    if status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        return 0
    if status.phase is Phase.SUCCEEDED:
        return 100
    index = status.step_index or 0
    if waiting_for_canary(status) is not None:
        return _weight_before(rollout.spec, index)
    return rollout.spec.steps[index].weight


def desired_match(rollout: Rollout) -> tuple[dict[str, Any], ...] | None:
    """The match the operator's A/B route must have (None: the route must not exist): only while an A/B
    step is in progress, not while it waits for the canary's pods, never after a rollback or success."""
    status = rollout.status
    if needs_start(rollout) or status.phase is not Phase.PROGRESSING or waiting_for_canary(status) is not None:
        return None
    return rollout.spec.steps[status.step_index or 0].match


def desired_mirror(rollout: Rollout) -> int | None:
    """The percent the operator's mirror on the owned route must have (None: it must not be there): only
    while a mirror step is in progress, not while it waits for the canary's pods, never after a rollback
    or success."""
    status = rollout.status
    if needs_start(rollout) or status.phase is not Phase.PROGRESSING or waiting_for_canary(status) is not None:
        return None
    return rollout.spec.steps[status.step_index or 0].mirror


def virtual_service_patch(
    rollout: Rollout, vs: Mapping[str, Any], traffic: Traffic, weight: int
) -> list[dict[str, Any]]:
    """The one guarded JSON patch that gives the VirtualService what the recorded status asks: the weight,
    the A/B route (present or not) and the operator's mirror (on, or the route's own put back)."""
    return virtualservice.weight_patch(
        vs,
        traffic,
        weight,
        match_name=validation.match_route_name(rollout.name),
        match=desired_match(rollout),
        mirror=rollout.status.mirror,
        mirror_on=desired_mirror(rollout) is not None,
    )


def _gate_weight(spec: RolloutSpec, index: int) -> int:
    """The weight a step's readiness is judged for: an A/B step sends users too, judged as 1 %; a mirror
    step sends the canary its percent of the route's requests (copies, but its pods serve them)."""
    step = spec.steps[index]
    return step.weight or step.mirror or 1


def mirror_record(rollout: Rollout, status: RolloutStatus, resolution: Resolution) -> MirrorStatus | None:
    """status.mirror for the decided `status`, from the owned route as read, before any write (write-ahead).

    While a mirror step wants the operator's mirror: what the route has of its own is recorded to be put
    back (kept while the route has the operator's mirror; recorded again if someone changed it since);
    a route that already has exactly the mirror the operator would write, with nothing on record (the
    Rollout was re-created mid-mirror), is taken as the operator's own. Otherwise the record stays while
    the route may still have the operator's mirror, and goes once it does not."""
    record = rollout.status.mirror
    if not resolution.routes or resolution.traffic is None:
        return record  # the route is not seen: keep what is known
    route = resolution.routes[0]
    current = route.mirroring
    ours = record is not None and (current == record.fields or current == record.previous)
    percent = desired_mirror(rollout.model_copy(update={"status": status}))
    if percent is None:
        return record if ours else None
    raw = route.raw
    previous: dict[str, object] | None = None
    if record is None:  # what the operator would write, alone or in a list: a Rollout re-created mid-mirror
        alone = virtualservice.mirror_during(raw, resolution.traffic, percent, {})
        listed = virtualservice.mirror_during(raw, resolution.traffic, percent, {"mirrors": [{}]})
        saved = virtualservice.without_ours(current, [alone, listed])
    elif ours:
        saved, previous = record.saved, current
    else:
        saved = virtualservice.without_ours(current, [record.fields, record.previous])
    fields = virtualservice.mirror_during(raw, resolution.traffic, percent, saved)
    if previous == fields:
        previous = None
    return MirrorStatus(
        route=route.name, percent=percent, saved=saved, fields=fields, previous=previous, active=current == fields
    )


def waiting_for_canary(status: RolloutStatus) -> datetime | None:
    """Since when the current step's shift waits for the canary's ready pods (None: it does not)."""
    return status.readiness.waiting_since if status.readiness is not None else None


def _weight_before(spec: RolloutSpec, index: int) -> int:
    """The weight the routes keep while step `index` waits for the canary: the step before's, or 0."""
    return spec.steps[index - 1].weight if index > 0 else 0


def _steps_text(spec: RolloutSpec) -> str:
    """`A/B, 10, 30, 100`: the steps as messages name them (an A/B step by its kind, not its weight 0)."""
    return ", ".join("A/B" if s.match is not None else str(s.weight) for s in spec.steps)


def _step_name(spec: RolloutSpec, index: int) -> str:
    """What a step gives the canary, as messages say it: `30%`, or `the A/B step`."""
    return "the A/B step" if spec.steps[index].match is not None else f"{spec.steps[index].weight}%"


def _step_label(spec: RolloutSpec, index: int) -> str:
    return f"{index + 1}/{len(spec.steps)}"


def align_up(moment: datetime, period: timedelta) -> datetime:
    """The first multiple of `period` since the epoch at or after `moment`."""
    step = period.total_seconds()
    seconds = moment.timestamp()
    aligned = math.ceil(round(seconds / step, 6)) * step
    return datetime.fromtimestamp(aligned, moment.tzinfo)


def check_offset(uid: str, every: timedelta) -> timedelta:
    """Where in each checkEvery a Rollout's checks fall: whole seconds from the epoch's grid, fixed by
    its uid. A fleet's checks spread over the period instead of all landing on one instant (the
    operator, the API server and Prometheus then see a steady trickle, not a burst N wide), and the
    Rollouts that share an offset still check together, so their queries batch. No uid (a Rollout
    not yet created, a replay of a file): no offset."""
    slots = int(every.total_seconds())
    if not uid or slots < 2:
        return timedelta(0)
    return timedelta(seconds=zlib.crc32(uid.encode()) % slots)


def _next_check(
    step_started_at: datetime, last_check: datetime | None, every: timedelta, offset: timedelta
) -> datetime:
    base = last_check if last_check is not None and last_check >= step_started_at else step_started_at
    # A tick runs a little after its grid point: count from that point, not from the tick.
    return align_up(base - every / 2 - offset, every) + every + offset


def next_check(rollout: Rollout, since: datetime, last_check: datetime | None = None) -> datetime:
    """The Rollout's first grid point a check is due at, counting from `since` (a step's start) or
    from the last check of that step: checks fall every checkEvery, at the Rollout's own offset."""
    every = rollout.spec.analysis.check_every
    return _next_check(since, last_check, every, check_offset(rollout.ref.uid, every))


def next_check_at(rollout: Rollout) -> datetime:
    """When the Rollout's next check is due (see `next_check`)."""
    status = rollout.status
    assert status.step_started_at is not None
    return next_check(rollout, status.step_started_at, status.analysis.last_check if status.analysis else None)


def wants_check(rollout: Rollout, resolution: Resolution, now: datetime) -> bool:
    """Whether the shell should ask Prometheus before deciding: a due check of a judgeable canary."""
    return (
        not needs_start(rollout)
        and rollout.status.phase is Phase.PROGRESSING
        and resolution.target is not None
        and not (waiting_for_canary(rollout.status) and desired_weight(rollout) == 0)  # nothing to judge yet
        and now >= next_check_at(rollout)
    )


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
    status: RolloutStatus,
    generation: int,
    now: datetime,
    phase: Phase,
    reason: str,
    message: str,
    *,
    stalled: bool | None = None,
) -> RolloutStatus:
    """Set phase and message, and the kstatus conditions (Ready, Reconciling, Stalled) that go with them.

    `stalled` overrides the phase's default: a Pending rollout that needs a person is Stalled."""
    ready = phase is Phase.SUCCEEDED
    if stalled is None:
        stalled = phase in (Phase.ROLLED_BACK, Phase.INVALID)
    reconciling = phase in (Phase.PENDING, Phase.PROGRESSING, Phase.ROLLING_BACK) and not stalled
    conditions = _conditions(
        status.conditions,
        generation,
        now,
        [
            ("Ready", ready, reason, message),
            ("Reconciling", reconciling, reason if reconciling else "Finished", message if reconciling else ""),
            ("Stalled", stalled, reason if stalled else "NotStalled", message if stalled else ""),
        ],
    )
    return status.model_copy(
        update={"phase": phase, "message": message, "observed_generation": generation, "conditions": conditions}
    )


def _stall(status: RolloutStatus, generation: int, now: datetime, message: str) -> RolloutStatus:
    """Stalled=True (TrafficNotMoved) beside the phase's own Ready and Reconciling."""
    kept = tuple(c for c in status.conditions if c.type != "Stalled")
    stalled = _conditions(status.conditions, generation, now, [("Stalled", True, Reason.TRAFFIC_NOT_MOVED, message)])
    return status.model_copy(update={"message": message, "conditions": kept + stalled})


def traffic_stalled(status: RolloutStatus) -> Condition | None:
    return next(
        (
            c
            for c in status.conditions
            if c.type == "Stalled" and c.reason == Reason.TRAFFIC_NOT_MOVED and c.status == "True"
        ),
        None,
    )


# --- readiness (spec.readiness) ------------------------------------------------------------------------


def _needed(spec: RolloutSpec, ready: Ready | None, weight: int) -> int | None:
    """Ready canary pods `weight` needs; None: the canary's pods cannot be counted (no gate)."""
    if ready is None or ready.canary is None or weight <= 0:
        return None
    need = spec.readiness.min_ready
    if spec.readiness.capacity is Capacity.PROPORTIONAL and ready.stable is not None:
        need = max(need, math.ceil(round(ready.stable * weight / 100, 6)))
    return need


def _short(spec: RolloutSpec, ready: Ready | None, weight: int) -> str:
    """Why the canary cannot take `weight` yet ("" when it can, or when its pods cannot be counted)."""
    need = _needed(spec, ready, weight)
    if need is None or ready is None or ready.canary is None or ready.canary >= need:
        return ""
    rule = f"readiness.minReady {spec.readiness.min_ready}"
    if spec.readiness.capacity is Capacity.PROPORTIONAL and ready.stable is not None:
        rule += f", capacity proportional to the stable's {ready.stable} ready"
    return f"the canary has {ready.canary} ready pods in Service {ready.service}, and {weight}% needs {need} ({rule})"


def _readiness_status(spec: RolloutSpec, status: RolloutStatus, ready: Ready) -> ReadinessStatus:
    """The ready pods as seen now, for the status (the waiting clock is kept). An A/B step needs what its
    gate judged it by (as 1 %)."""
    index = status.step_index or 0
    weight = _gate_weight(spec, index)
    need = _needed(spec, ready, weight)
    if ready.canary is None:
        message = f"not checked ({ready.why}): shifts do not wait for ready pods"
    else:
        stable = "?" if ready.stable is None else str(ready.stable)
        step = _step_name(spec, index)
        message = f"canary {ready.canary} ready, stable {stable} ready in Service {ready.service}; {step} needs {need}"
    return ReadinessStatus(
        canary_ready=ready.canary,
        stable_ready=ready.stable,
        needed=need,
        waiting_since=waiting_for_canary(status),
        message=message,
    )


def _waiting_message(spec: RolloutSpec, index: int, short: str, since: datetime) -> str:
    before = _weight_before(spec, index)
    deadline = since + spec.readiness.timeout
    return (
        f"step {_step_label(spec, index)}: canary stays at {before}% until it has ready pods for "
        f"{_step_name(spec, index)}: {short}; rolls back at {format_time(deadline)} "
        f"(readiness.timeout {format_duration(spec.readiness.timeout)}) unless they come"
    )


def _enter_waiting(
    rollout: Rollout, status: RolloutStatus, index: int, short: str, now: datetime
) -> tuple[RolloutStatus, datetime]:
    """Step `index` begins, but its shift waits for the canary: the routes keep the weight before."""
    spec = rollout.spec
    readiness = (status.readiness or ReadinessStatus()).model_copy(update={"waiting_since": now})
    new = status.model_copy(update={"readiness": readiness})
    message = _waiting_message(spec, index, short, now)
    new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, Reason.WAITING_FOR_CANARY, message)
    wake = min(now + spec.readiness.timeout, now + RECHECK)
    return new, wake


def _with_canary_ready(check: CheckResult, status: RolloutStatus, ready: Ready | None) -> CheckResult:
    """A canary with traffic and no ready pod fails the check, whatever Prometheus says (its users get 503)."""
    if ready is None or ready.canary is None or not (status.canary_weight or status.match_route or status.mirror):
        return check
    ok = ready.canary > 0
    row = MetricResult(
        name="canary-ready",
        value=float(ready.canary),
        threshold=">= 1 ready pod",
        verdict=Verdict.PASS if ok else Verdict.FAIL,
        reason="" if ok else f"no ready pod in Service {ready.service} while the canary has {_at(status)}",
    )
    if ok:
        return replace(check, metrics=(*check.metrics, row))
    return replace(check, verdict=Verdict.FAIL, reason="", metrics=(*check.metrics, row))


# --- transitions -----------------------------------------------------------------------------------


def _destination(backend: Backend) -> Destination:
    return Destination(host=backend.host, subset=backend.subset, port=backend.port)


def reject(
    status: RolloutStatus, generation: int, problem: Problem, now: datetime, *, reason: Reason | None = None
) -> Decision:
    """Pending (something to wait for) or Invalid (the spec must change): no VS write either way.

    Pending that needs a person (the route is another Rollout's, the routes carry an unexpected split)
    is also Stalled. A new generation keeps the traffic record (stable, canary, canaryWeight) of the
    last one: the routes still have that split, and the status stays true of them."""
    if reason is None:
        reason = (
            Reason.ROUTE_CLAIMED
            if problem.claimed_by
            else Reason.PREFLIGHT_FAILED
            if problem.preflight
            else Reason.WAITING_FOR_OBJECTS
            if problem.waiting
            else Reason.INVALID
        )
    phase = Phase.INVALID if reason is Reason.INVALID else Phase.PENDING
    message = ("invalid: " if phase is Phase.INVALID else "waiting: ") + problem.message
    base = status
    if status.observed_generation != generation:
        base = RolloutStatus(
            conditions=status.conditions,
            stable=status.stable,
            canary=status.canary,
            canary_weight=status.canary_weight,
            last_request=status.last_request,
            webhooks=status.webhooks,
            notifications=status.notifications,
        )
    stalled_reasons = (Reason.ROUTE_CLAIMED, Reason.UNEXPECTED_TRAFFIC, Reason.PREFLIGHT_FAILED, Reason.WEBHOOK_FAILED)
    stalled = True if reason in stalled_reasons else None
    new = _with_phase(base, generation, now, phase, reason, message, stalled=stalled)
    events: tuple[Event, ...] = ()
    if new.message != status.message or new.phase != status.phase:
        kind = (
            EventType.NORMAL
            if reason in (Reason.WAITING_FOR_OBJECTS, Reason.WAITING_FOR_WEBHOOK)
            else EventType.WARNING
        )
        events = (Event(kind, reason, message),)
    return Decision(status=new, events=events, wake_at=now + RECHECK)


def _starting_step(rollout: Rollout, traffic: Traffic, routes: Sequence[RouteTraffic]) -> int | str:
    """The step a new generation starts at without moving traffic nobody asked to move, or what was
    found instead (a message). Routes on the stable alone start at step 1; routes the operator itself
    split in an earlier generation start at step 1 too (the new release replaces that one); routes
    split between exactly stable and canary at a step's weight resume at that step."""
    ns = traffic.namespace
    if all(r.share(traffic.stable, ns) == 100 for r in routes):
        return 0
    status = rollout.status
    if status.canary is not None:
        own: list[Backend | Destination] = [traffic.stable, traffic.canary]
        own += [d for d in (status.stable, status.canary) if d is not None]
        if all(any(s.is_for(d, ns) for d in own) for r in routes for s in r.serving()):
            return 0
    canary_shares = {r.share(traffic.canary, ns) for r in routes}
    split = all(r.share(traffic.stable, ns) + r.share(traffic.canary, ns) == 100 for r in routes)
    weights = [step.weight for step in rollout.spec.steps]
    if split and len(canary_shares) == 1 and (share := canary_shares.pop()) in weights:
        return weights.index(share)
    found = "; ".join(f"route {r.label}: " + ", ".join(str(s) for s in r.serving()) for r in routes)
    return (
        f"the owned routes are not served by the stable {traffic.stable} alone ({found}); nothing moved. "
        "Put the routes on the stable, or set spec.onUnexpectedTraffic: Reset to start from the first step anyway"
    )


def start(rollout: Rollout, resolution: Resolution, now: datetime) -> Decision:
    """A new generation (or a waiting one looking again): validate, look at the routes, then begin."""
    spec, status, gen = rollout.spec, rollout.status, rollout.generation
    routes, canary = resolution.routes, resolution.canary
    if not routes or canary is None:
        assert resolution.problem is not None
        return reject(status, gen, resolution.problem, now)
    if all(r.share(canary, rollout.namespace) == 100 for r in routes):
        return _already_promoted(rollout, resolution, canary, now)
    if resolution.problem is not None or resolution.traffic is None:
        assert resolution.problem is not None
        return reject(status, gen, resolution.problem, now)
    traffic = resolution.traffic
    index = _starting_step(rollout, traffic, routes)
    if isinstance(index, str):
        if spec.on_unexpected_traffic is UnexpectedTraffic.WAIT:
            return reject(status, gen, Problem(index, waiting=True), now, reason=Reason.UNEXPECTED_TRAFFIC)
        index = 0
    if index == 0:  # the start moves traffic: the pre-rollout webhooks must have said yes
        gate = hooks.start_gate(rollout, now)
        if gate is not None:
            reason = Reason.WEBHOOK_FAILED if gate.failed else Reason.WAITING_FOR_WEBHOOK
            waiting = reject(status, gen, Problem(gate.message, waiting=True), now, reason=reason)
            return replace(waiting, wake_at=None if gate.failed else now + spec.analysis.check_every)

    weight = spec.steps[index].weight
    observed = share_of(routes, traffic.canary, rollout.namespace)
    shifts = (observed or 0) < weight or spec.steps[index].match is not None or spec.steps[index].mirror is not None
    short = _short(spec, resolution.ready, _gate_weight(spec, index)) if shifts else ""
    new = RolloutStatus(
        stable=_destination(traffic.stable),
        canary=_destination(traffic.canary),
        step_index=index,
        step_label=_step_label(spec, index),
        canary_weight=observed,
        step_started_at=now,
        started_at=now,
        history=(HistoryEntry(step_index=index, weight=weight, started_at=now),),
        last_request=status.last_request,
        conditions=status.conditions,
    )
    message = _step_message(spec, index)
    if index:
        message += f" (the canary already had {weight}% of the routes: resumed at this step, nothing moved)"
    new = _with_phase(new, gen, now, Phase.PROGRESSING, Reason.STEP_STARTED, message)
    if short:
        new, wake = _enter_waiting(rollout, new, index, short, now)
        assert new.message is not None
        return Decision(
            status=new,
            weight=_weight_before(spec, index),
            traffic=traffic,
            events=(
                Event(
                    EventType.NORMAL,
                    Reason.ROLLOUT_STARTED,
                    f"generation {gen}: {traffic.stable.subset} -> {traffic.canary.subset}, "
                    f"steps {_steps_text(spec)}; waiting for the canary's ready pods",
                ),
                Event(EventType.NORMAL, Reason.WAITING_FOR_CANARY, new.message),
            ),
            wake_at=wake,
        )
    event = Event(
        EventType.NORMAL,
        Reason.ROLLOUT_STARTED,
        f"generation {gen}: {traffic.stable.label} -> {traffic.canary.label}, "
        f"steps {_steps_text(spec)}; canary at {weight}%"
        + (f" (resumed at step {_step_label(spec, index)})" if index else ""),
    )
    return Decision(
        status=new,
        weight=weight,
        traffic=traffic,
        events=(event,),
        wake_at=next_check(rollout, now),
    )


def _already_promoted(rollout: Rollout, resolution: Resolution, canary: Backend, now: datetime) -> Decision:
    spec = rollout.spec
    last = len(spec.steps) - 1
    names = ", ".join(r.label for r in resolution.routes)
    message = (
        f"succeeded: the canary {canary} already had all the traffic of route {names} when generation "
        f"{rollout.generation} started; nothing moved"
    )
    traffic = resolution.traffic
    new = RolloutStatus(
        stable=_destination(traffic.stable) if traffic is not None else None,
        canary=_destination(canary),
        step_index=last,
        step_label=_step_label(spec, last),
        canary_weight=100,
        step_started_at=now,
        started_at=now,
        finished_at=now,
        history=(HistoryEntry(step_index=last, weight=100, started_at=now),),
        last_request=rollout.status.last_request,
        conditions=rollout.status.conditions,
    )
    new = _with_phase(new, rollout.generation, now, Phase.SUCCEEDED, Reason.SUCCEEDED, message)
    return Decision(status=new, events=(Event(EventType.NORMAL, Reason.SUCCEEDED, message),))


def describe_match(match: Sequence[dict[str, Any]]) -> str:
    """`user-group: exact beta` for a match list, as a person reads it."""
    blocks = []
    for block in match:
        parts = []
        for key, value in block.items():
            if key in ("headers", "queryParams", "withoutHeaders") and isinstance(value, dict):
                kind = {"headers": "header", "queryParams": "query", "withoutHeaders": "without header"}[key]
                for name, cond in value.items():
                    how = ", ".join(f"{k} {v}" for k, v in (cond or {}).items())
                    parts.append(f"{kind} {name} {how}")
            elif key != "name":
                parts.append(f"{key} {value}")
        blocks.append(" and ".join(parts))
    return " or ".join(blocks)


def _step_message(spec: RolloutSpec, index: int) -> str:
    then = ", then waiting for promote" if spec.steps[index].approval is Approval.MANUAL else ""
    match, mirror = spec.steps[index].match, spec.steps[index].mirror
    if mirror is not None:
        return (
            f"step {_step_label(spec, index)}: mirror {mirror}% to the canary, 0% users, "
            f"holding {format_duration(spec.hold(index))}{then}"
        )
    if match is not None:
        return (
            f"step {_step_label(spec, index)}: A/B, users with {describe_match(match)} go to the canary, "
            f"holding {format_duration(spec.hold(index))}{then}"
        )
    return (
        f"step {_step_label(spec, index)}: canary at {spec.steps[index].weight}%, "
        f"holding {format_duration(spec.hold(index))}{then}"
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
    elif check.verdict is Verdict.INCONCLUSIVE:
        no_data_since = None  # there is data; a judge cannot tell yet: neither a pass nor a failure
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
        traffic_mismatches=check.traffic_mismatches,
        requests=check.requests,
        metrics=check.metrics,
    )


def step_context(rollout: Rollout, now: datetime, scrape_interval: timedelta) -> StepContext:
    """What the analysis of a check needs to know of the step: how long it has run, the weight the routes
    have, and how many far-off traffic checks in a row came before (counted within the step)."""
    status = rollout.status
    assert status.step_started_at is not None
    previous = status.analysis
    in_step = previous is not None and previous.checked_at > status.step_started_at
    step = rollout.spec.steps[status.step_index or 0]
    return StepContext(
        elapsed=now - status.step_started_at,
        scrape_interval=scrape_interval,
        # an A/B step's canary share is its users', not a weight
        weight=None if step.match is not None else status.canary_weight,
        previous_weight=_weight_before(rollout.spec, status.step_index or 0),
        mismatches=previous.traffic_mismatches if previous is not None and in_step else 0,
        mirror=step.mirror if status.mirror is not None and status.mirror.active else None,
    )


def _summary(check: AnalysisStatus) -> str:
    parts = []
    for m in check.metrics:
        if m.verdict is Verdict.SKIPPED:
            parts.append(f"{m.name} skipped")
            continue
        value = "no data" if m.value is None else f"{m.value:.4g}"
        parts.append(f"{m.name} {value} ({m.threshold})")
    return ", ".join(parts)


def _writable(resolution: Resolution, weight: int) -> tuple[Traffic | None, str]:
    """Where `weight` can be written, or why it cannot: the routes and the stable must be known, and
    every side that would get traffic must have its subset (or Istio answers 503 for it)."""
    traffic = resolution.traffic
    problem = resolution.problem.message if resolution.problem is not None else ""
    if traffic is None:
        return None, problem or "the owned routes cannot be found"
    receiving = ([("stable", traffic.stable)] if weight < 100 else []) + (
        [("canary", traffic.canary)] if weight > 0 else []
    )
    for role, backend in receiving:
        if role not in resolution.servable:
            return None, f"not sending traffic to the {role} {backend}: {problem or 'its subset is not defined'}"
    return traffic, ""


def _rollback(
    rollout: Rollout,
    resolution: Resolution,
    analysis: AnalysisStatus | None,
    now: datetime,
    reason: RollbackReason,
    culprit: MetricResult | None,
    why: str,
    *,
    by: str = "",
) -> Decision:
    """Record the rollback first (RollingBack); `record_traffic` makes it RolledBack once the canary has 0.
    A pause ends with it: there is nothing left to hold."""
    spec, status = rollout.spec, rollout.status
    index = status.step_index or 0
    # The weight the routes have as read in this tick: a record lost between a traffic write and its
    # recording (a crash, a cut connection) must not put a stale weight into the rollback's status.
    observed = share_of(resolution.routes, status.canary, rollout.namespace) if status.canary is not None else None
    weight = status.canary_weight if observed is None else observed
    where = f"step {_step_label(spec, index)} ({weight}%): {why}"
    if culprit is not None and culprit.query:
        where += f"; query: {culprit.query}"
    info = RollbackInfo(
        reason=reason,
        by=by,
        metric=culprit.name if culprit else "",
        value=culprit.value if culprit else None,
        threshold=culprit.threshold if culprit else "",
        query=culprit.query if culprit else "",
        at=now,
        message=where,
    )
    new = status.model_copy(
        update={
            "rollback": info,
            "analysis": analysis,
            "traffic_retry_at": None,
            "canary_weight": weight,
            "paused": None,
            "step_paused_for": None,
            "readiness": status.readiness.model_copy(update={"waiting_since": None}) if status.readiness else None,
        }
    )
    new = _with_phase(new, rollout.generation, now, Phase.ROLLING_BACK, Reason.ROLLING_BACK, f"rolling back at {where}")
    traffic, blocked = _writable(resolution, 0)
    return Decision(status=new, weight=0, traffic=traffic, blocked=blocked)


def _record_check(
    rollout: Rollout, check: CheckResult, now: datetime, quiet_start: timedelta
) -> tuple[AnalysisStatus, list[Event]]:
    """The check's numbers, and the CheckFailed / NoData warnings it deserves."""
    spec, status = rollout.spec, rollout.status
    analysis = _analysis_status(rollout, check, now)
    events: list[Event] = []
    assert status.step_started_at is not None
    if analysis.verdict is Verdict.FAIL and analysis.consecutive_failures < spec.analysis.failure_limit:
        events.append(
            Event(
                EventType.WARNING,
                Reason.CHECK_FAILED,
                "; ".join(f"{m.name} {m.reason}" for m in check.failed)
                + f" ({analysis.consecutive_failures} of failureLimit {spec.analysis.failure_limit})",
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
        label = _step_label(spec, status.step_index or 0)
        events.append(Event(EventType.WARNING, Reason.NO_DATA, f"holding step {label}: {check.reason}"))
    return analysis, events


def _rollback_if_due(
    rollout: Rollout, resolution: Resolution, check: CheckResult | None, analysis: AnalysisStatus | None, now: datetime
) -> Decision | None:
    spec, status = rollout.spec, rollout.status
    limit = spec.analysis.failure_limit
    if check is not None and check.fail_fast is not None:
        culprit = check.fail_fast
        why = f"{culprit.name} {culprit.reason} in the last {check.window}"
        return _rollback(rollout, resolution, analysis, now, RollbackReason.FAIL_FAST, culprit, why)
    if (
        check is not None
        and analysis is not None
        and analysis.verdict is Verdict.FAIL
        and analysis.consecutive_failures >= limit
    ):
        culprit = check.failed[0]
        why = (
            f"{culprit.name} {culprit.reason} in the last {check.window} "
            f"({analysis.consecutive_failures} failed checks in a row, failureLimit {limit})"
        )
        return _rollback(rollout, resolution, analysis, now, RollbackReason.FAILURE_LIMIT, culprit, why)
    assert status.step_started_at is not None
    if analysis is not None and analysis.no_data_since is not None and analysis.checked_at > status.step_started_at:
        deadline = analysis.no_data_since + spec.analysis.max_no_data
        if now >= deadline:
            why = (
                f"no data for {format_duration(now - analysis.no_data_since)} "
                f"(maxNoData {format_duration(spec.analysis.max_no_data)})"
            )
            last_reason = next((m.reason for m in analysis.metrics if m.verdict is Verdict.NO_DATA), "")
            if last_reason:
                why += f": {last_reason}"
            return _rollback(rollout, resolution, analysis, now, RollbackReason.NO_DATA, None, why)
    return None


def _advance_if_done(
    rollout: Rollout,
    traffic: Traffic,
    analysis: AnalysisStatus | None,
    events: list[Event],
    now: datetime,
    ready: Ready | None = None,
) -> Decision | None:
    """The hold is over at the step's weight and the last check of the step passed: next step or Succeeded.

    Not while paused, and not at a step with approval: manual (it waits for promote; `_hold` says so)."""
    spec, status = rollout.spec, rollout.status
    if status.paused is not None or not _ready(rollout, analysis, now) or steering.gated(spec, status):
        return None
    if hooks.step_gate(rollout) is not None:
        return None  # `_hold` says which webhook holds the step
    assert analysis is not None
    return _advance(rollout, traffic, analysis, events, now, ready=ready)


def _ready(rollout: Rollout, analysis: AnalysisStatus | None, now: datetime) -> bool:
    """steering.ready, and in force: no TrafficNotMoved stall (an HTTPRoute its controller has not accepted
    yet has the weight but not the traffic), and an A/B step's route in place."""
    step = rollout.spec.steps[rollout.status.step_index or 0]
    ab_in_place = step.match is None or rollout.status.match_route is not None
    mirror = rollout.status.mirror
    mirror_in_place = step.mirror is None or (mirror is not None and mirror.active)
    return (
        steering.ready(rollout.spec, rollout.status, analysis, now)
        and traffic_stalled(rollout.status) is None
        and ab_in_place
        and mirror_in_place
    )


def _undecided(rollout: Rollout, analysis: AnalysisStatus | None, now: datetime) -> bool:
    """At the step's weight, its hold over, and the step's last check Inconclusive: the judge cannot tell
    canary from stable yet, so the step holds, and a person may decide (promote or abort) meanwhile."""
    spec, status = rollout.spec, rollout.status
    assert status.step_started_at is not None
    return (
        analysis is not None
        and analysis.verdict is Verdict.INCONCLUSIVE
        and analysis.checked_at > status.step_started_at
        and status.canary_weight == spec.steps[status.step_index or 0].weight
        and now >= steering.hold_end(spec, status, now)
    )


def _undecided_ends(rollout: Rollout) -> str:
    return (
        "hold done, the judge is inconclusive: waiting for a passing check, or for a person to promote "
        f"({steering.command(rollout, 'promote')}) or abort ({steering.command(rollout, 'abort')})"
    )


def _history(status: RolloutStatus, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    return (*status.history, entry)[-MAX_HISTORY:]


def _advance(
    rollout: Rollout,
    traffic: Traffic,
    analysis: AnalysisStatus,
    events: list[Event],
    now: datetime,
    request: Request | None = None,
    *,
    ready: Ready | None = None,
) -> Decision:
    """To the next step, or Succeeded after the last one (or at once for promote --full).

    A next step whose weight the canary has too few ready pods for (spec.readiness) begins waiting
    for them (WaitingForCanary): the routes keep this step's weight until the pods are there.

    With a request (promote), the step begins now whatever is left of the hold, and the new step's
    history entry names it."""
    spec, status = rollout.spec, rollout.status
    index = status.step_index or 0
    last = len(spec.steps) - 1
    full = request is not None and request.full
    nxt = last if full else index + 1
    promoted = []
    if request is not None:
        to = (
            "Succeeded at 100%"
            if full or index == last
            else f"step {_step_label(spec, nxt)} ({spec.steps[nxt].weight}%)"
        )
        text = f"{_who(request, 'promote')}: step {_step_label(spec, index)} ({status.canary_weight}%) -> {to}"
        if full and index < last:
            text += ", skipping the remaining steps and their analysis"
        promoted.append(Event(EventType.NORMAL, Reason.PROMOTED, text))
    update: dict[str, object] = {"analysis": analysis, "paused": None, "step_paused_for": None}
    if request is not None:
        update["last_request"] = _handled(request, now, steering.APPLIED, promoted[0].message)
    if index == last or full:
        if request is None:
            message = (
                f"succeeded: canary at {status.canary_weight}% after {len(spec.steps)} steps; {_summary(analysis)}"
            )
        else:
            message = f"succeeded: {promoted[0].message}; last check: {_summary(analysis)}"
            entry = HistoryEntry(step_index=last, weight=100, started_at=now, request=request)
            update.update(step_index=last, step_label=_step_label(spec, last), history=_history(status, entry))
        new = status.model_copy(update={**update, "finished_at": now})
        new = _with_phase(new, rollout.generation, now, Phase.SUCCEEDED, Reason.SUCCEEDED, message)
        done = Event(EventType.NORMAL, Reason.SUCCEEDED, message)
        return Decision(status=new, weight=100, traffic=traffic, events=(*events, *promoted, done))
    weight = spec.steps[nxt].weight
    why = f"promoted by {request.by or 'someone'}" if request is not None else f"step {_step_label(spec, index)} passed"
    message = f"{_step_message(spec, nxt)}; {why}: {_summary(analysis)}"
    entry = HistoryEntry(step_index=nxt, weight=weight, started_at=now, request=request)
    update.update(
        step_index=nxt, step_label=_step_label(spec, nxt), step_started_at=now, history=_history(status, entry)
    )
    new = _with_phase(
        status.model_copy(update=update), rollout.generation, now, Phase.PROGRESSING, Reason.STEP_ADVANCED, message
    )
    short = _short(spec, ready, _gate_weight(spec, nxt))
    if short:
        new, wake = _enter_waiting(rollout, new, nxt, short, now)
        assert new.message is not None
        why_event = Event(
            EventType.NORMAL,
            Reason.WAITING_FOR_CANARY,
            f"{why}: {_summary(analysis)}; {new.message}",
        )
        return Decision(
            status=new,
            weight=spec.steps[index].weight,
            traffic=traffic,
            events=(*events, *promoted, why_event),
            wake_at=min(wake, next_check(rollout, now)),
        )
    event = Event(EventType.NORMAL, Reason.STEP_ADVANCED, f"canary {_at(status)} -> {weight}%: {_summary(analysis)}")
    return Decision(
        status=new,
        weight=weight,
        traffic=traffic,
        events=(*events, *promoted, event),
        wake_at=next_check(rollout, now),
    )


def _at(status: RolloutStatus) -> str:
    """Where the canary's traffic is: `10%`, `0% and the A/B route coalmine-order`, `0% users and a 100% mirror`."""
    weight = f"{status.canary_weight}%"
    if status.mirror is not None and status.mirror.active:
        return f"{weight} users and a {status.mirror.percent}% mirror"
    return f"{weight} and the A/B route {status.match_route}" if status.match_route else weight


def _reconciling_reason(status: RolloutStatus) -> str:
    return next((c.reason for c in status.conditions if c.type == "Reconciling"), "")


def _hold(
    rollout: Rollout,
    traffic: Traffic,
    check: CheckResult | None,
    analysis: AnalysisStatus | None,
    events: list[Event],
    now: datetime,
) -> Decision:
    """Stay at the step: hold, pause, or a manual gate whose hold is over (announced once, with the
    command that releases it). The message is rewritten when a check says something new."""
    spec, status = rollout.spec, rollout.status
    index = status.step_index or 0
    assert status.step_started_at is not None
    every = spec.analysis.check_every
    hold_end = steering.hold_end(spec, status, now)
    label = _step_label(spec, index)
    gate = status.paused is None and steering.gated(spec, status) and _ready(rollout, analysis, now)
    held = (
        hooks.step_gate(rollout)
        if status.paused is None and not steering.gated(spec, status) and _ready(rollout, analysis, now)
        else None
    )
    undecided = status.paused is None and _undecided(rollout, analysis, now)
    new = status
    if held is not None and (check is not None or _reconciling_reason(status) != Reason.WAITING_FOR_WEBHOOK):
        assert analysis is not None
        message = (
            f"step {label}: canary at {status.canary_weight}%, hold done; {held}; last check Pass: {_summary(analysis)}"
        )
        new = status.model_copy(update={"analysis": analysis})
        if traffic_stalled(status) is None and message != status.message:
            new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, Reason.WAITING_FOR_WEBHOOK, message)
        if _reconciling_reason(status) != Reason.WAITING_FOR_WEBHOOK:
            events = [*events, Event(EventType.NORMAL, Reason.WAITING_FOR_WEBHOOK, message)]
    elif (gate or undecided) and _reconciling_reason(status) != Reason.WAITING_FOR_PROMOTION:
        assert analysis is not None
        if gate:
            message = (
                f"step {label}: canary at {_at(status)}, hold done; waiting for promote "
                f"({steering.command(rollout, 'promote')}); last check Pass: {_summary(analysis)}"
            )
        else:
            why = "; ".join(m.reason for m in analysis.metrics if m.verdict is Verdict.INCONCLUSIVE)
            message = (
                f"step {label}: canary at {_at(status)}, {_undecided_ends(rollout)}; "
                f"last check Inconclusive: {_summary(analysis)} ({why})"
            )
        new = status.model_copy(update={"analysis": analysis})
        if traffic_stalled(status) is None:
            new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, Reason.WAITING_FOR_PROMOTION, message)
        events = [*events, Event(EventType.NORMAL, Reason.WAITING_FOR_PROMOTION, message)]
    elif check is not None and analysis is not None and not _routine_pass(status, analysis, now, every):
        if status.canary_weight != spec.steps[index].weight:
            ends = f"waiting for the routes to reach {spec.steps[index].weight}%"
        elif status.paused is not None:
            left = max(timedelta(0), hold_end - now)
            ends = (
                f"paused by {status.paused.by or 'someone'} with {format_duration(_whole(left))} of the hold left; "
                f"resume with {steering.command(rollout, 'resume')}"
            )
        elif now < hold_end:
            ends = f"hold ends {format_time(hold_end)}"
        elif gate:
            ends = f"hold done, waiting for promote ({steering.command(rollout, 'promote')})"
        elif undecided:
            ends = _undecided_ends(rollout)
        elif steering.gated(spec, status):
            ends = "hold done, waiting for a passing check, then for promote"
        else:
            ends = "hold done, waiting for a passing check"
        message = (
            f"step {label}: canary at {_at(status)}, {ends}; last check {analysis.verdict.value}: {_summary(analysis)}"
        )
        if analysis.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE):
            message += f" ({check.reason})"
        reason = (
            Reason.PAUSED if status.paused else Reason.WAITING_FOR_PROMOTION if gate or undecided else Reason.ANALYSING
        )
        new = status.model_copy(update={"analysis": analysis})
        if traffic_stalled(status) is None:
            new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, reason, message)
    wake = [next_check(rollout, status.step_started_at, analysis.last_check if analysis else None)]
    if now < hold_end and status.paused is None:
        wake.append(hold_end)
    if analysis is not None and analysis.no_data_since is not None:
        wake.append(max(now, analysis.no_data_since + spec.analysis.max_no_data))
    return Decision(
        status=new, weight=spec.steps[index].weight, traffic=traffic, events=tuple(events), wake_at=min(wake)
    )


def _whole(value: timedelta) -> timedelta:
    return timedelta(seconds=math.ceil(value.total_seconds()))


def progress(
    rollout: Rollout,
    resolution: Resolution,
    check: CheckResult | None,
    now: datetime,
    *,
    quiet_start: timedelta = timedelta(0),
    request: Request | None = None,
) -> Decision:
    """One tick of a Progressing rollout whose objects resolve, with the result of a check when one was due,
    and a person's request when one is pending.

    No data in the first `quiet_start` of a step (new series need a few scrapes before `rate`
    sees them) holds the step like any no data, but posts no NoData warning. A check that calls for a
    rollback wins over a request (which is then looked at in the next tick, against the rollback).
    """
    assert resolution.traffic is not None
    ready = resolution.ready
    if check is not None:
        check = _with_canary_ready(check, rollout.status, ready)
    analysis, events = (
        _record_check(rollout, check, now, quiet_start) if check is not None else (rollout.status.analysis, [])
    )
    rollback = _rollback_if_due(rollout, resolution, check, analysis, now)
    if rollback is not None:
        return rollback
    if waiting_for_canary(rollout.status) is not None:
        return _wait_for_canary(rollout, resolution, analysis, events, now, request)
    if request is not None:
        checked = rollout.model_copy(update={"status": rollout.status.model_copy(update={"analysis": analysis})})
        why = steering.refusal(checked, request)
        short = _short(rollout.spec, ready, 100) if request.verb == "promote" and request.full else ""
        if why is None and short:
            why = f"promote --full would give the canary 100% now: {short}"
        if why is None:
            return _steer(checked, resolution, request, analysis, events, now)
        stay = _advance_if_done(rollout, resolution.traffic, analysis, events, now, ready) or _hold(
            rollout, resolution.traffic, check, analysis, events, now
        )
        return _refuse(stay, request, why, now)
    return _advance_if_done(rollout, resolution.traffic, analysis, events, now, ready) or _hold(
        rollout, resolution.traffic, check, analysis, events, now
    )


def _wait_for_canary(
    rollout: Rollout,
    resolution: Resolution,
    analysis: AnalysisStatus | None,
    events: list[Event],
    now: datetime,
    request: Request | None,
) -> Decision:
    """A step whose shift waits for the canary's ready pods: shift once they are there, roll back
    (WaitingForCanary) once readiness.timeout has passed without them. Meanwhile the routes keep the
    weight before, checks of a canary that already has traffic go on, and only abort applies."""
    spec, status = rollout.spec, rollout.status
    traffic = resolution.traffic
    assert traffic is not None
    since = waiting_for_canary(status)
    assert since is not None
    index = status.step_index or 0
    weight, before = spec.steps[index].weight, _weight_before(spec, index)
    if request is not None and request.verb == "abort" and steering.refusal(rollout, request) is None:
        return _steer(rollout, resolution, request, analysis, events, now)
    short = _short(spec, resolution.ready, _gate_weight(spec, index))
    deadline = since + spec.readiness.timeout
    if short and now >= deadline:
        why = (
            f"waited {format_duration(_whole(now - since))} for the canary's ready pods "
            f"(readiness.timeout {format_duration(spec.readiness.timeout)}): {short}"
        )
        decision = _rollback(rollout, resolution, analysis, now, RollbackReason.WAITING_FOR_CANARY, None, why)
    elif not short:
        readiness = (status.readiness or ReadinessStatus()).model_copy(update={"waiting_since": None})
        new = status.model_copy(
            update={"readiness": readiness, "analysis": analysis, "step_started_at": now, "step_paused_for": None}
        )
        message = _step_message(spec, index)
        new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, Reason.STEP_STARTED, message)
        ready = resolution.ready
        count = ready.canary if ready is not None else None
        moved = Event(
            EventType.NORMAL,
            Reason.STEP_STARTED,
            f"the canary has {count} ready pods: canary {before}% -> {weight}% at step {_step_label(spec, index)}",
        )
        decision = Decision(
            status=new,
            weight=weight,
            traffic=traffic,
            events=(*events, moved),
            wake_at=next_check(rollout, now),
        )
    else:
        new = status.model_copy(update={"analysis": analysis})
        message = _waiting_message(spec, index, short, since)
        if traffic_stalled(status) is None and message != status.message:
            new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, Reason.WAITING_FOR_CANARY, message)
        wake = [deadline, now + RECHECK]
        if before:
            assert status.step_started_at is not None
            last = analysis.last_check if analysis is not None else None
            wake.append(next_check(rollout, status.step_started_at, last))
        decision = Decision(status=new, weight=before, traffic=traffic, events=tuple(events), wake_at=min(wake))
    if request is None:
        return decision
    return _refuse(decision, request, f"step {_step_label(spec, index)} waits for the canary's ready pods", now)


# --- requests a person makes (core/steering.py says when each applies) ------------------------------


def _who(request: Request, verb: str) -> str:
    by = request.by or "someone"
    why = f" ({request.reason})" if request.reason else ""
    return f"{request.command or verb} by {by}{why}"


def _handled(request: Request, now: datetime, result: str, message: str) -> HandledRequest:
    return HandledRequest(**request.model_dump(exclude={"problem"}), handled_at=now, result=result, message=message)


def _refuse(decision: Decision, request: Request, why: str, now: datetime) -> Decision:
    """The tick's own decision, with the request recorded as refused (it changes nothing else)."""
    record = _handled(request, now, steering.REFUSED, why)
    what = request.command or "request"
    event = Event(EventType.WARNING, Reason.REQUEST_REFUSED, f"{what} by {request.by or 'someone'} refused: {why}")
    status = decision.status.model_copy(update={"last_request": record})
    return replace(decision, status=status, events=(*decision.events, event))


def _steer(
    rollout: Rollout,
    resolution: Resolution,
    request: Request,
    analysis: AnalysisStatus | None,
    events: list[Event],
    now: datetime,
) -> Decision:
    """Apply a request `steering.refusal` let through, to a Progressing rollout."""
    spec, status = rollout.spec, rollout.status
    traffic = resolution.traffic
    assert traffic is not None
    assert status.step_started_at is not None
    index = status.step_index or 0
    label, weight = _step_label(spec, index), spec.steps[index].weight
    if request.verb == "promote":
        assert analysis is not None
        return _advance(rollout, traffic, analysis, events, now, request, ready=resolution.ready)
    if request.verb == "abort":
        canary = f" {status.canary.label}" if status.canary is not None else ""
        text = f"{_who(request, 'abort')}: canary{canary} {status.canary_weight}% -> 0% at step {label}"
        why = f"aborted by {request.by or 'someone'}" + (f": {request.reason}" if request.reason else "")
        decision = _rollback(rollout, resolution, analysis, now, RollbackReason.ABORTED, None, why, by=request.by)
        entry = HistoryEntry(step_index=index, weight=0, started_at=now, request=request)
        new = decision.status.model_copy(
            update={"history": _history(status, entry), "last_request": _handled(request, now, steering.APPLIED, text)}
        )
        aborted = Event(EventType.WARNING, Reason.ABORTED, text)
        return replace(decision, status=new, events=(*events, aborted))
    entry = HistoryEntry(step_index=index, weight=weight, started_at=now, request=request)
    if request.verb == "pause":
        left = format_duration(_whole(max(timedelta(0), steering.hold_end(spec, status, now) - now)))
        text = (
            f"{_who(request, 'pause')}: step {label} stays at {status.canary_weight}% with {left} of the hold left; "
            f"checks continue and a failing canary is still rolled back; resume with {steering.command(rollout, 'resume')}"
        )
        update: dict[str, object] = {"paused": Pause(since=now, by=request.by, reason=request.reason)}
        reason = Reason.PAUSED
    else:  # resume
        paused = steering.paused_for(status, now)
        end = status.step_started_at + spec.hold(index) + paused
        ends = f"hold ends {format_time(end)}" if now < end else "hold done"
        text = f"{_who(request, 'resume')}: step {label} at {status.canary_weight}% goes on, {ends}"
        update = {"paused": None, "step_paused_for": paused}
        reason = Reason.RESUMED
    update.update(
        analysis=analysis,
        history=_history(status, entry),
        last_request=_handled(request, now, steering.APPLIED, text),
    )
    new = status.model_copy(update=update)
    if traffic_stalled(status) is None:
        new = _with_phase(new, rollout.generation, now, Phase.PROGRESSING, reason, text)
    wake = [next_check(rollout, status.step_started_at, analysis.last_check if analysis else None)]
    if request.verb == "resume":
        wake.append(max(now, steering.hold_end(spec, new, now)))
    return Decision(
        status=new,
        weight=weight,
        traffic=traffic,
        events=(*events, Event(EventType.NORMAL, reason, text)),
        wake_at=min(wake),
    )


def _retry(rollout: Rollout, resolution: Resolution, request: Request, now: datetime) -> Decision:
    """RolledBack, same generation: start again by the start rules (routes on the stable: step 1), with
    the stable this generation started with, keeping the history."""
    status = rollout.status
    fresh = RolloutStatus(
        observed_generation=rollout.generation,
        stable=status.stable,
        canary=status.canary,
        canary_weight=status.canary_weight,
        conditions=status.conditions,
    )
    again = start(rollout.model_copy(update={"status": fresh}), resolution, now)
    new = again.status
    text = f"{_who(request, 'retry')}: generation {rollout.generation} starts again: {new.message}"
    history = status.history
    if new.phase in STARTED_PHASES and new.history:
        history = _history(status, new.history[-1].model_copy(update={"request": request}))
    new = new.model_copy(update={"history": history, "last_request": _handled(request, now, steering.APPLIED, text)})
    return replace(again, status=new, events=(Event(EventType.NORMAL, Reason.RETRIED, text), *again.events))


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
        and last.traffic_mismatches == analysis.traffic_mismatches  # a far-off share counts toward a failure
        and last.checked_at > status.step_started_at
        and now - last.checked_at < REFRESH_CHECKS * every
    )


def _first_event_due(status: RolloutStatus, quiet_start: timedelta) -> bool:
    """The previous check had no data too, but fell in the quiet start: this is the first to report."""
    assert status.step_started_at is not None
    previous = status.analysis
    return previous is not None and previous.checked_at - status.step_started_at < quiet_start


def _settle(rollout: Rollout, resolution: Resolution, wake_at: datetime | None) -> Decision:
    """RollingBack, Succeeded or RolledBack: keep the owned routes where the rollout left them.

    A rollback that cannot be written says why; a finished rollout whose routes cannot take its weight
    (a subset removed after promotion, say) is left alone."""
    status = rollout.status
    weight = desired_weight(rollout)
    assert weight is not None
    traffic, blocked = _writable(resolution, weight)
    if status.phase is Phase.ROLLING_BACK:
        return Decision(status=status, weight=weight, traffic=traffic, blocked=blocked)
    if traffic is None:
        return Decision(status=status, wake_at=wake_at)
    return Decision(status=status, weight=weight, traffic=traffic, wake_at=wake_at)


def decide(
    rollout: Rollout, resolution: Resolution, check: CheckResult | None, now: datetime, policy: Policy = Policy()
) -> Decision:
    """The one decision of a tick."""
    decision = _decide(rollout, resolution, check, now, policy)
    ready = resolution.ready
    if decision.status.phase is Phase.PROGRESSING and ready is not None:
        record = _readiness_status(rollout.spec, decision.status, ready)
        if record != decision.status.readiness:
            decision = replace(decision, status=decision.status.model_copy(update={"readiness": record}))
    kept = {"webhooks": rollout.status.webhooks, "notifications": rollout.status.notifications}
    if any(getattr(decision.status, k) != v for k, v in kept.items()):  # a fresh status (start, retry) keeps them
        decision = replace(decision, status=decision.status.model_copy(update=kept))
    mirror = mirror_record(rollout, decision.status, resolution)  # a fresh status (a new generation) keeps it too
    if mirror != decision.status.mirror:
        decision = replace(decision, status=decision.status.model_copy(update={"mirror": mirror}))
    retry_at = rollout.status.traffic_retry_at
    unchanged = decision.weight is not None and decision.weight == desired_weight(rollout)
    if decision.traffic is not None and retry_at is not None and now < retry_at and unchanged:
        # The API server refused this very write a moment ago: leave the routes alone until retry_at.
        wake = min(w for w in (decision.wake_at, retry_at) if w is not None)
        return replace(decision, weight=None, traffic=None, wake_at=wake)
    return decision


def _decide(
    rollout: Rollout, resolution: Resolution, check: CheckResult | None, now: datetime, policy: Policy
) -> Decision:
    problem = resolution.problem
    request = steering.pending(rollout)
    if problem is not None and problem.claimed_by:
        # another Rollout's route: never write
        return _unstarted(rollout, reject(rollout.status, rollout.generation, problem, now), request, now)
    if needs_start(rollout):
        return _unstarted(rollout, start(rollout, resolution, now), request, now)
    phase = rollout.status.phase
    if phase is Phase.PROGRESSING:
        if problem is not None:  # a pending request is looked at in the next tick, against the rollback
            why = f"the objects it runs on changed: {problem.message}"
            return _rollback(
                rollout, resolution, rollout.status.analysis, now, RollbackReason.OBJECTS_CHANGED, None, why
            )
        return progress(rollout, resolution, check, now, quiet_start=policy.quiet_start, request=request)
    settled = _settle(rollout, resolution, None if phase is Phase.ROLLING_BACK else now + policy.resync)
    if request is None:
        return settled
    refused = steering.refusal(rollout, request)
    if refused is None:  # retry, the one request a finished rollout takes
        return _retry(rollout, resolution, request, now)
    return _refuse(settled, request, refused, now)


def _unstarted(rollout: Rollout, decision: Decision, request: Request | None, now: datetime) -> Decision:
    """A start (or a look again at a rollout waiting to start) with a request pending: a generation the
    operator had not seen yet, or one that starts in this tick, takes it in the next tick; one that stays
    Pending or Invalid refuses it (nothing has started that it could apply to)."""
    seen = rollout.status.observed_generation == rollout.generation
    if request is None or not seen or decision.status.phase in STARTED_PHASES:
        return decision
    why = steering.refusal(rollout.model_copy(update={"status": decision.status}), request)
    return _refuse(decision, request, why or "the rollout has not started", now)


# --- after the traffic write ---------------------------------------------------------------------------


def _retry_in(stalled_since: datetime | None, now: datetime) -> timedelta:
    """A refused write is tried again after as long as it has been stuck (1, 2, 4, 8 ... s), at most
    STUCK_RETRY_MAX apart: quick for a blip, quiet for a policy that will not change soon."""
    waited = now - stalled_since if stalled_since is not None else timedelta(0)
    return min(STUCK_RETRY_MAX, max(STUCK_RETRY_MIN, waited))


def record_traffic(
    rollout: Rollout, wanted: int | None, outcome: TrafficOutcome, now: datetime, policy: Policy = Policy()
) -> Decision:
    """The status after the traffic step, true of the routes: the weight they have, RolledBack once the
    canary is at 0, and Stalled (TrafficNotMoved) with the reason while a wanted weight cannot be put there.
    A finished rollout looks at its routes again every `policy.resync`."""
    decision = _record_traffic(rollout, wanted, outcome, now)
    if decision.wake_at is None and decision.status.phase in TERMINAL_PHASES:
        return replace(decision, wake_at=now + policy.resync)
    return decision


def _record_traffic(rollout: Rollout, wanted: int | None, outcome: TrafficOutcome, now: datetime) -> Decision:
    status, gen = rollout.status, rollout.generation
    stall = traffic_stalled(status)
    if wanted is not None and outcome.at_weight:
        mine = validation.match_route_name(rollout.name) if desired_match(rollout) is not None else None
        update: dict[str, object] = {"canary_weight": wanted, "traffic_retry_at": None, "match_route": mine}
        if desired_mirror(rollout) is None:
            update["mirror"] = None  # the route's own mirror is back (or it never had the operator's)
        elif status.mirror is not None:
            update["mirror"] = status.mirror.model_copy(update={"previous": None, "active": True})
        # The step's hold and its checks' windows count from when its traffic arrived, not from the write-ahead
        # before the routes were written: a write that took seconds (a slow or restarting API server, a retry
        # after a conflict) must not eat the hold, nor have the step judged on the weight before's requests.
        arrived = stall is not None or wanted != status.canary_weight
        if arrived and status.phase is Phase.PROGRESSING:
            update["step_started_at"] = now
            update["step_paused_for"] = None  # ... and so do its pauses (steering.paused_for)
        new = status.model_copy(update=update)
        if status.phase is Phase.ROLLING_BACK:
            assert status.rollback is not None
            message = f"rolled back at {status.rollback.message}"
            new = new.model_copy(update={"finished_at": now})
            new = _with_phase(new, gen, now, Phase.ROLLED_BACK, Reason.ROLLED_BACK, message)
            return Decision(status=new, events=(Event(EventType.WARNING, Reason.ROLLED_BACK, message),))
        if stall is not None:
            phase = status.phase or Phase.PROGRESSING
            message = _settled_message(rollout)
            new = _with_phase(new, gen, now, phase, _phase_reason(phase), message)
            return Decision(status=new, events=(Event(EventType.NORMAL, Reason.TRAFFIC_MOVED, message),))
        return Decision(status=new)
    observed = status.canary_weight
    if status.canary is not None and outcome.observed is not None:
        observed = outcome.observed
    new = status.model_copy(update={"canary_weight": observed})
    if wanted is None or not outcome.error:
        return Decision(status=new)
    message = _stuck_message(rollout, wanted, observed, outcome.error)
    new = _stall(new, gen, now, message)
    events: tuple[Event, ...] = ()
    if stall is None or stall.message != message:
        events = (Event(EventType.WARNING, Reason.TRAFFIC_NOT_MOVED, message),)
    since = traffic_stalled(new)
    retry_at = now + _retry_in(since.last_transition_time if since is not None else None, now)
    # Only a write the API server refused backs off; objects that are missing cost no write, and the
    # watch brings the Rollout back the moment they change.
    new = new.model_copy(update={"traffic_retry_at": retry_at if outcome.attempted else None})
    return Decision(status=new, events=events, wake_at=retry_at)


def _stuck_message(rollout: Rollout, wanted: int, observed: int | None, error: str) -> str:
    status = rollout.status
    if status.phase is Phase.ROLLING_BACK and status.rollback is not None:
        head = f"rolling back at {status.rollback.message}"
    else:
        head = f"step {_step_label(rollout.spec, status.step_index or 0)}"
    has = f"{observed}%" if observed is not None else "an unknown share"
    canary = f" {status.canary.label}" if status.canary is not None else ""
    message = f"{head}; traffic not moved: canary{canary} wants {wanted}% and has {has} as last seen"
    return message if error in head else f"{message}: {error}"


def _phase_reason(phase: Phase) -> Reason:
    return {
        Phase.PROGRESSING: Reason.STEP_STARTED,
        Phase.SUCCEEDED: Reason.SUCCEEDED,
        Phase.ROLLED_BACK: Reason.ROLLED_BACK,
        Phase.ROLLING_BACK: Reason.ROLLING_BACK,
    }.get(phase, Reason.STEP_STARTED)


def _settled_message(rollout: Rollout) -> str:
    status = rollout.status
    if status.phase is Phase.ROLLED_BACK and status.rollback is not None:
        return f"rolled back at {status.rollback.message}"
    if status.phase is Phase.SUCCEEDED:
        return f"succeeded: canary at {status.canary_weight}%"
    return _step_message(rollout.spec, status.step_index or 0)
