"""One tick of one Rollout: read, decide (pure), write the status, move the traffic, record what it did.

The order is the point. The decided status is written first, guarded by the resourceVersion the
decision was made on, so two operators can never both advance a step and a decided rollback is on
record before traffic moves. The VirtualService follows the recorded decision on every tick, so a
write lost to a crash, a conflict or a GitOps revert is redone on the next one. Then the status is
brought in line with the routes as written or read (canaryWeight, RolledBack, TrafficNotMoved): it
never claims a weight the routes do not have.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from coalmine.adapters.kube import Conflict, Gone, KubeApi, Refused, Unavailable
from coalmine.adapters.prometheus import PrometheusClient
from coalmine.adapters.webhooks import Dispatcher
from coalmine.core import analysis, hooks, notify, plan, preflight, routers, steering, validation
from coalmine.core.models import (
    HTTP_ROUTE,
    TERMINAL_PHASES,
    VIRTUAL_SERVICE,
    Capacity,
    Phase,
    Ref,
    Rollout,
    RolloutStatus,
    Subscription,
    format_duration,
)
from coalmine.core.routes import RouteGone
from coalmine.core.validation import Claim, Cluster, Problem, Resolution, Target, Traffic

log = logging.getLogger("coalmine.reconcile")

VS_WRITE_ATTEMPTS = 5
RETRY_CONFLICT = timedelta(milliseconds=200)
ACCEPT_WAIT = timedelta(seconds=2)  # how long a tick waits for a route's controller to take its write
ACCEPT_POLL = timedelta(milliseconds=100)
ACCEPT_BOUND = timedelta(seconds=30)  # after this, the message asks whether a controller runs at all


@dataclass(frozen=True)
class Settings:
    """The operator settings a tick needs (runtime.OperatorConfig holds their defaults)."""

    prometheus_url: str
    scrape_interval: timedelta
    resync: timedelta  # terminal rollouts re-assert their weight this often

    @property
    def policy(self) -> plan.Policy:
        return plan.Policy(quiet_start=analysis.MIN_SCRAPES * self.scrape_interval, resync=self.resync)


@dataclass(frozen=True)
class Ports:
    kube: KubeApi
    prometheus: PrometheusClient
    settings: Settings
    clock: Callable[[], datetime]
    # Where a tick's time goes (phase, seconds): prometheus, status, traffic, events; and check_lag
    # (a check's moment after its grid point). runtime.py feeds these to /metrics.
    observe: Callable[[str, float], None] = field(default=lambda phase, seconds: None)
    dispatcher: Dispatcher | None = None  # webhooks and notifications, off the tick

    @property
    def default_notify(self) -> tuple[Subscription, ...]:
        return self.dispatcher.config.default if self.dispatcher is not None else ()


@contextmanager
def _timed(ports: Ports, phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        ports.observe(phase, time.perf_counter() - started)


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any] | None  # the Rollout as last written, when the tick wrote its status
    wake_at: datetime | None
    status: RolloutStatus | None = None  # the status after the tick (None: not decided, someone wrote first)
    events: tuple[plan.Event, ...] = ()  # what the tick posted, for metrics
    gone: bool = False  # the Rollout no longer exists: stop ticking it, even if the watch never says so
    checked_at: datetime | None = None  # when the tick asked Prometheus, written to the status or not
    # A finished Rollout that found nothing to do: no write, no attempt, no event, nothing owed to a
    # webhook or a channel. Until something it reads changes, its next tick would decide the same.
    settled: bool = False


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (lists are replaced whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def _spec_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    path = "spec"
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{path}: {first['msg']}"


def _logger(ref: Ref) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(log, {"rollout": f"{ref.namespace}/{ref.name}"})


def _status_or_empty(body: dict[str, Any]) -> RolloutStatus:
    try:
        return RolloutStatus.from_body(body.get("status"))
    except ValidationError:
        return RolloutStatus()


async def tick(
    body: dict[str, Any], ports: Ports, claims: Sequence[Claim] = (), checked: datetime | None = None
) -> Outcome:
    """Read the Rollout's objects, decide, write status then traffic, and record what the traffic write did.

    `claims` are the other Rollouts of the namespace (from the watch), for route ownership. `checked` is
    when this operator last checked the Rollout (an earlier Outcome.checked_at): a routine pass is not
    written, and without it a tick between grid points (a hold's end, a watch event) would check again
    off the grid. A Rollout found deleted when its status is written is `gone`: the caller stops ticking it."""
    try:
        return await _tick(body, ports, claims, checked)
    except Gone as exc:
        _logger(Ref.from_body(body)).info("not ticked again: %s", exc)
        return Outcome(body=None, wake_at=None, gone=True)


def _with_unrecorded_check(rollout: Rollout, checked: datetime | None) -> Rollout:
    analysis = rollout.status.analysis
    if analysis is None or checked is None or checked <= analysis.checked_at:
        return rollout
    hinted = analysis.model_copy(update={"unrecorded_check": checked})
    return rollout.model_copy(update={"status": rollout.status.model_copy(update={"analysis": hinted})})


async def _tick(body: dict[str, Any], ports: Ports, claims: Sequence[Claim], checked: datetime | None) -> Outcome:
    ref = Ref.from_body(body)
    logger = _logger(ref)
    now = ports.clock()
    try:
        rollout = Rollout.from_body(body)
    except ValidationError as exc:
        problem = Problem(f"Rollout {ref.namespace}/{ref.name}: {_spec_error(exc)}")
        status = _status_or_empty(body)
        decision = plan.reject(status, ref.generation, problem, now)
        decision = _queue(None, ref, decision, ports, now)
        written = await _write_status(ref, status, decision.status, ports, logger)
        if written is None:
            return Outcome(body=None, wake_at=ports.clock() + RETRY_CONFLICT)
        await _post_events(Ref.from_body(written or body), decision.events, ports, logger)
        if ports.dispatcher is not None:
            ports.dispatcher.deliver(f"{ref.namespace}/{ref.name}", ref.uid, notify.pending(decision.status))
        return Outcome(body=written or None, wake_at=decision.wake_at, status=decision.status, events=decision.events)

    # The answers of webhooks and the outcomes of deliveries since the last write, recorded in the status.
    results, outcomes = ports.dispatcher.observed(ref.uid) if ports.dispatcher is not None else ([], [])
    rollout = _with_unrecorded_check(rollout, checked)  # before `original`: it is never written
    original = rollout.status
    if results or outcomes:
        folded = notify.fold(hooks.fold(rollout, results), outcomes)
        rollout = rollout.model_copy(update={"status": folded})
    route = rollout.spec.route
    vs = await ports.kube.get_route(routers.router(route.kind).plural, ref.namespace, route.name)
    rules = (
        await ports.kube.list_destination_rules(ref.namespace, validation.rule_hosts(rollout, vs))
        if route.kind == VIRTUAL_SERVICE
        else []
    )
    workloads = await ports.kube.get_workloads(ref.namespace) if _gated(rollout) else None
    resolution = validation.resolve(rollout, Cluster(vs, rules, claims, workloads))
    if plan.needs_start(rollout) and resolution.problem is None and resolution.traffic is not None:
        resolution = await _preflight(rollout, resolution.traffic, vs, resolution, ports)
    check = None
    if plan.wants_check(rollout, resolution, now):
        assert resolution.target is not None
        due = plan.next_check_at(rollout)
        with _timed(ports, "prometheus"):
            check = await _check(rollout, resolution.target, now, ports)
        now = ports.clock()
        ports.observe("check_lag", max(0.0, (now - due).total_seconds()))
    decision = plan.decide(rollout, resolution, check, now, ports.settings.policy)
    outcome = await _commit(rollout, original, body, decision, vs, resolution, ports, logger)
    if ports.dispatcher is not None and outcome.status is not None:
        _dispatch(rollout, outcome.status, now if check is not None else None, ports.dispatcher, ports.clock())
        ports.dispatcher.settled(ref.uid, results, outcomes)
    quiet = outcome.settled and check is None and not results and not outcomes
    outcome = replace(outcome, settled=quiet and _finished(rollout, outcome.status, ports.clock()))
    if check is not None and outcome.status is not None:  # decided on: a lost write is checked again
        return replace(outcome, checked_at=now)
    return outcome


def _finished(before: Rollout, status: RolloutStatus | None, now: datetime) -> bool:
    """Succeeded or RolledBack, and nothing in it waits for time to pass: no refused route write to try
    again, no notification pending, no webhook call due."""
    if status is None or status.phase not in TERMINAL_PHASES:
        return False
    if status.traffic_retry_at is not None or plan.traffic_stalled(status) is not None:
        return False
    after = before.model_copy(update={"status": status})
    return not notify.pending(status) and not hooks.due(after, now)


def _dispatch(
    before: Rollout, status: RolloutStatus, checked_at: datetime | None, dispatcher: Dispatcher, now: datetime
) -> None:
    """Start the webhook calls and deliveries the written status asks for (in the background)."""
    after = before.model_copy(update={"status": status})
    key = f"{before.namespace}/{before.name}"
    calls = hooks.due(after, now)
    if checked_at is not None and status.phase is Phase.PROGRESSING:  # not for the check that rolled back
        calls += hooks.during(before, checked_at)
    dispatcher.call(key, before.ref.uid, calls)
    dispatcher.deliver(key, before.ref.uid, notify.pending(status))


def _queue(rollout: Rollout | None, ref: Ref, decision: plan.Decision, ports: Ports, now: datetime) -> plan.Decision:
    """The decision with its notifications queued in the status it writes (write-ahead)."""
    if not decision.events:
        return decision
    subscribed = notify.subscriptions(rollout, ports.default_notify)
    if not subscribed:
        return decision
    status = notify.queue(
        rollout,
        decision.status,
        ref.generation,
        decision.events,
        subscribed,
        now,
        namespace=ref.namespace,
        name=ref.name,
    )
    return replace(decision, status=status)


def _gated(rollout: Rollout) -> bool:
    """Whether the tick needs the namespace's workloads: a rollout that may still shift traffic, with
    readiness on. A finished one needs none, so its namespace's pods are never listed for it, unless a
    request is pending: `retry` starts it again, and that start is gated like any other."""
    r = rollout.spec.readiness
    on = r.min_ready > 0 or r.capacity is Capacity.PROPORTIONAL
    may_shift = plan.needs_start(rollout) or rollout.status.phase is Phase.PROGRESSING
    return on and (may_shift or steering.pending(rollout) is not None)


async def _preflight(
    rollout: Rollout, traffic: Traffic, route: dict[str, Any] | None, resolution: Resolution, ports: Ports
) -> Resolution:
    """When a generation starts: what the mesh lacks for the checks to have data (core/preflight.py)."""
    ns = rollout.namespace
    names = sorted({validation.short_host(b.host) for b in (traffic.stable, traffic.canary)})
    try:
        namespace_labels = await ports.kube.get_labels("Namespace", "", ns)
        services = {name: await ports.kube.get_labels("Service", ns, name) for name in names}
    except Refused as exc:  # RBAC without namespaces/services get: start without the preflight, say why
        _logger(rollout.ref).warning("preflight skipped, the API server refused a read: %s", exc)
        return resolution
    problems = preflight.check(traffic.kind, ns, namespace_labels, services, route)
    if not problems:
        return resolution
    return replace(resolution, problem=Problem(preflight.summary(problems), waiting=True, preflight=True))


async def _check(rollout: Rollout, target: Target, now: datetime, ports: Ports) -> analysis.CheckResult:
    spec, scrape = rollout.spec.analysis, ports.settings.scrape_interval
    step = plan.step_context(rollout, now, scrape)
    length = analysis.window(step.elapsed, interval=spec.interval, scrape_interval=scrape)
    asked = analysis.queries(spec, target, length, step)
    address = spec.prometheus.address or ports.settings.prometheus_url
    answers = await ports.prometheus.ask(address, asked, at=now)
    return analysis.evaluate(spec, asked, answers, length, target, step)


async def _write_status(
    ref: Ref,
    old: RolloutStatus,
    new: RolloutStatus,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> dict[str, Any] | None:
    """Merge-patch the status from `old` to `new`, guarded by `ref`'s resourceVersion. Returns the object
    as written ({} when nothing changed), None when someone else wrote first."""
    if new == old:
        return {}
    patch = merge_patch(old.to_wire(), new.to_wire())
    try:
        with _timed(ports, "status"):
            return await ports.kube.patch_rollout_status(ref.namespace, ref.name, ref.resource_version, patch)
    except Gone:
        raise
    except Conflict as exc:
        # Another writer (or our own previous tick) got there first: decide again on fresh data.
        logger.info("status not written, will re-read: %s", exc)
        return None


async def _commit(
    rollout: Rollout,
    original: RolloutStatus,
    body: dict[str, Any],
    decision: plan.Decision,
    vs: dict[str, Any] | None,
    resolution: Resolution,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> Outcome:
    """`original` is the status as read (the patch's base); `rollout` carries it with webhook answers folded in."""
    decision = _queue(rollout, rollout.ref, decision, ports, ports.clock())
    written = await _write_status(rollout.ref, original, decision.status, ports, logger)
    if written is None:
        return Outcome(body=None, wake_at=ports.clock() + RETRY_CONFLICT)
    latest = written or body
    current = rollout.model_copy(update={"status": decision.status, "ref": Ref.from_body(latest)})

    with _timed(ports, "traffic"):
        outcome = await _traffic(current, decision, vs, resolution, ports, logger)
    follow = plan.record_traffic(current, decision.weight, outcome, ports.clock(), ports.settings.policy)
    follow = _queue(current, current.ref, follow, ports, ports.clock())
    again = await _write_status(current.ref, current.status, follow.status, ports, logger)
    if again is None:
        return Outcome(body=written or None, wake_at=ports.clock() + RETRY_CONFLICT)
    latest = again or latest
    # Events last: a rollback waits for nothing but the status and VirtualService writes.
    events = (*decision.events, *follow.events)
    with _timed(ports, "events"):
        await _post_events(Ref.from_body(latest), events, ports, logger)
    wakes = [w for w in (decision.wake_at, follow.wake_at) if w is not None]
    # Nothing written, attempted or posted; _tick narrows `settled` to finished Rollouts that owe nothing.
    untouched = not written and not again and not events and not outcome.wrote and not outcome.attempted
    return Outcome(
        body=(again or written) or None,
        wake_at=min(wakes) if wakes else None,
        status=follow.status,
        events=events,
        settled=untouched and not outcome.error,
    )


async def _post_events(
    ref: Ref, events: Sequence[plan.Event], ports: Ports, logger: logging.LoggerAdapter[logging.Logger]
) -> None:
    for event in events:
        level = logging.WARNING if event.type is plan.EventType.WARNING else logging.INFO
        logger.log(level, "%s: %s", event.reason.value, event.message)
        try:
            await ports.kube.post_event(
                ref, type_=event.type.value, reason=event.reason.value, message=event.message, now=ports.clock()
            )
        except Exception as exc:  # an event is a report; losing one must not undo the transition
            logger.warning("could not post event %s: %s", event.reason.value, exc)


async def _traffic(
    rollout: Rollout,
    decision: plan.Decision,
    vs: dict[str, Any] | None,
    resolution: Resolution,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> plan.TrafficOutcome:
    """Put the owned routes at the decided weight when there is one, and say what they have now."""
    canary = rollout.status.canary
    observed = validation.share_of(resolution.routes, canary, rollout.namespace) if canary is not None else None
    if decision.weight is None:
        return plan.TrafficOutcome(at_weight=False, observed=observed)
    if decision.traffic is None:
        return plan.TrafficOutcome(at_weight=False, observed=observed, error=decision.blocked)
    if vs is None:
        return plan.TrafficOutcome(at_weight=False, observed=observed, error=f"the {decision.traffic.kind} is gone")
    return await _move_traffic(rollout, vs, decision.traffic, decision.weight, ports, logger)


async def _move_traffic(
    rollout: Rollout,
    vs: dict[str, Any],
    traffic: Traffic,
    weight: int,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> plan.TrafficOutcome:
    """Put the owned routes at `weight`; on a concurrent edit re-read and try again."""
    where = traffic.where
    router = routers.router(traffic.kind)

    def seen(current: dict[str, Any] | None) -> int | None:
        canary = rollout.status.canary
        if canary is None:
            return None
        found = validation.observe_routes(current, traffic.routes, traffic.kind)
        return validation.share_of(found, canary, traffic.namespace)

    for _ in range(VS_WRITE_ATTEMPTS):
        try:
            if traffic.kind == VIRTUAL_SERVICE:
                ops = plan.virtual_service_patch(rollout, vs, traffic, weight)
            else:
                ops = router.weight_patch(vs, traffic, weight)
        except RouteGone as exc:
            return plan.TrafficOutcome(at_weight=False, observed=seen(vs), error=str(exc))
        if not ops:
            return await _taken(rollout, vs, traffic, weight, ports, wrote=False)
        try:
            written = await ports.kube.patch_route(router.plural, traffic.namespace, traffic.virtual_service, ops)
        except Conflict as exc:
            logger.info("%s; re-reading", exc)
            fresh = await ports.kube.read_route(router.plural, traffic.namespace, traffic.virtual_service)
            if fresh is None:
                return plan.TrafficOutcome(at_weight=False, observed=None, error=f"{where} not found")
            vs = fresh
            continue
        except (Refused, Unavailable) as exc:
            what = "refused the write" if isinstance(exc, Refused) else "could not take the write now"
            logger.warning("%s: the API server %s: %s", where, what, exc)
            return plan.TrafficOutcome(
                at_weight=False, observed=seen(vs), error=f"the API server {what} to {where}: {exc}", attempted=True
            )
        mirror = plan.desired_mirror(rollout)
        logger.info(
            "%s: canary %s at %d%% on %s%s",
            where,
            traffic.canary.label,
            weight,
            ", ".join(str(r) for r in traffic.routes),
            f", mirror {mirror}%" if mirror is not None else "",
        )
        return await _taken(rollout, written, traffic, weight, ports, wrote=True)
    return plan.TrafficOutcome(
        at_weight=False,
        observed=seen(vs),
        error=f"{where} kept changing: {VS_WRITE_ATTEMPTS} writes in a row were refused as concurrent edits",
        attempted=True,
    )


async def _taken(
    rollout: Rollout, route: dict[str, Any], traffic: Traffic, weight: int, ports: Ports, *, wrote: bool
) -> plan.TrafficOutcome:
    """The routes have `weight`; while a step progresses, it counts only once the route's controller has
    taken this generation (an HTTPRoute's Accepted and ResolvedRefs). After a write the tick waits up to
    ACCEPT_WAIT for it; beyond that the step holds (Stalled, TrafficNotMoved) with the controller's word,
    and its hold counts from when the route is taken."""
    router = routers.router(traffic.kind)
    if traffic.kind != HTTP_ROUTE or rollout.status.phase is not Phase.PROGRESSING:
        return plan.TrafficOutcome(at_weight=True, observed=weight, wrote=wrote)
    why = router.not_ready(route)
    polls = round(ACCEPT_WAIT / ACCEPT_POLL) if wrote else 0
    for _ in range(polls):
        if why is None:
            break
        await asyncio.sleep(ACCEPT_POLL.total_seconds())
        fresh = await ports.kube.read_route(router.plural, traffic.namespace, traffic.virtual_service)
        if fresh is None:
            break
        why = router.not_ready(fresh)
    if why is None:
        return plan.TrafficOutcome(at_weight=True, observed=weight, wrote=wrote)
    stalled = plan.traffic_stalled(rollout.status)
    since = stalled.last_transition_time if stalled is not None else None
    if since is not None and ports.clock() - since >= ACCEPT_BOUND:
        why += (
            f"; not taken in {format_duration(ACCEPT_BOUND)}: is a Gateway API controller running for its "
            "parentRefs? The step does not advance until it is"
        )
    return plan.TrafficOutcome(
        at_weight=False, observed=weight, error=f"waiting for the route controller: {why}", wrote=wrote
    )
