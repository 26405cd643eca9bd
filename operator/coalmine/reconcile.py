"""One tick of one Rollout: read, decide (pure), write the status, move the traffic, record what it did.

The order is the point. The decided status is written first, guarded by the resourceVersion the
decision was made on, so two operators can never both advance a step and a decided rollback is on
record before traffic moves. The VirtualService follows the recorded decision on every tick, so a
write lost to a crash, a conflict or a GitOps revert is redone on the next one. Then the status is
brought in line with the routes as written or read (canaryWeight, RolledBack, TrafficNotMoved): it
never claims a weight the routes do not have.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from coalmine.adapters.kube import Conflict, Gone, KubeApi, Refused, Unavailable
from coalmine.adapters.prometheus import PrometheusClient
from coalmine.core import analysis, plan, validation, virtualservice
from coalmine.core.models import Ref, Rollout, RolloutStatus
from coalmine.core.validation import Claim, Cluster, Problem, Resolution, Target, Traffic

log = logging.getLogger("coalmine.reconcile")

VS_WRITE_ATTEMPTS = 5
RETRY_CONFLICT = timedelta(milliseconds=200)


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


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any] | None  # the Rollout as last written, when the tick wrote its status
    wake_at: datetime | None
    status: RolloutStatus | None = None  # the status after the tick (None: not decided, someone wrote first)
    events: tuple[plan.Event, ...] = ()  # what the tick posted, for metrics
    gone: bool = False  # the Rollout no longer exists: stop ticking it, even if the watch never says so


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


async def tick(body: dict[str, Any], ports: Ports, claims: Sequence[Claim] = ()) -> Outcome:
    """Read the Rollout's objects, decide, write status then traffic, and record what the traffic write did.

    `claims` are the other Rollouts of the namespace (from the watch), for route ownership. A Rollout
    found deleted when its status is written is `gone`: the caller stops ticking it."""
    try:
        return await _tick(body, ports, claims)
    except Gone as exc:
        _logger(Ref.from_body(body)).info("not ticked again: %s", exc)
        return Outcome(body=None, wake_at=None, gone=True)


async def _tick(body: dict[str, Any], ports: Ports, claims: Sequence[Claim]) -> Outcome:
    ref = Ref.from_body(body)
    logger = _logger(ref)
    now = ports.clock()
    try:
        rollout = Rollout.from_body(body)
    except ValidationError as exc:
        problem = Problem(f"Rollout {ref.namespace}/{ref.name}: {_spec_error(exc)}")
        status = _status_or_empty(body)
        decision = plan.reject(status, ref.generation, problem, now)
        written = await _write_status(ref, status, decision.status, ports, logger)
        if written is None:
            return Outcome(body=None, wake_at=ports.clock() + RETRY_CONFLICT)
        await _post_events(Ref.from_body(written or body), decision.events, ports, logger)
        return Outcome(body=written or None, wake_at=decision.wake_at, status=decision.status, events=decision.events)

    vs = await ports.kube.get_virtual_service(ref.namespace, rollout.spec.virtual_service.name)
    rules = await ports.kube.list_destination_rules(ref.namespace)
    resolution = validation.resolve(rollout, Cluster(vs, rules, claims))
    check = None
    if plan.wants_check(rollout, resolution, now):
        assert resolution.target is not None
        check = await _check(rollout, resolution.target, now, ports)
        now = ports.clock()
    decision = plan.decide(rollout, resolution, check, now, ports.settings.policy)
    return await _commit(rollout, body, decision, vs, resolution, ports, logger)


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
        return await ports.kube.patch_rollout_status(ref.namespace, ref.name, ref.resource_version, patch)
    except Gone:
        raise
    except Conflict as exc:
        # Another writer (or our own previous tick) got there first: decide again on fresh data.
        logger.info("status not written, will re-read: %s", exc)
        return None


async def _commit(
    rollout: Rollout,
    body: dict[str, Any],
    decision: plan.Decision,
    vs: dict[str, Any] | None,
    resolution: Resolution,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> Outcome:
    written = await _write_status(rollout.ref, rollout.status, decision.status, ports, logger)
    if written is None:
        return Outcome(body=None, wake_at=ports.clock() + RETRY_CONFLICT)
    latest = written or body
    current = rollout.model_copy(update={"status": decision.status, "ref": Ref.from_body(latest)})

    outcome = await _traffic(current, decision, vs, resolution, ports, logger)
    follow = plan.record_traffic(current, decision.weight, outcome, ports.clock(), ports.settings.policy)
    again = await _write_status(current.ref, current.status, follow.status, ports, logger)
    if again is None:
        return Outcome(body=written or None, wake_at=ports.clock() + RETRY_CONFLICT)
    latest = again or latest
    # Events last: a rollback waits for nothing but the status and VirtualService writes.
    events = (*decision.events, *follow.events)
    await _post_events(Ref.from_body(latest), events, ports, logger)
    wakes = [w for w in (decision.wake_at, follow.wake_at) if w is not None]
    return Outcome(
        body=(again or written) or None, wake_at=min(wakes) if wakes else None, status=follow.status, events=events
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
        return plan.TrafficOutcome(at_weight=False, observed=observed, error="the VirtualService is gone")
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
    where = f"VirtualService {traffic.namespace}/{traffic.virtual_service}"

    def seen(current: dict[str, Any] | None) -> int | None:
        canary = rollout.status.canary
        if canary is None:
            return None
        return validation.share_of(validation.observe_routes(current, traffic.routes), canary, traffic.namespace)

    for _ in range(VS_WRITE_ATTEMPTS):
        try:
            ops = virtualservice.weight_patch(vs, traffic, weight)
        except virtualservice.RouteGone as exc:
            return plan.TrafficOutcome(at_weight=False, observed=seen(vs), error=str(exc))
        if not ops:
            return plan.TrafficOutcome(at_weight=True, observed=weight)
        try:
            await ports.kube.patch_virtual_service(traffic.namespace, traffic.virtual_service, ops)
        except Conflict as exc:
            logger.info("%s; re-reading", exc)
            fresh = await ports.kube.read_virtual_service(traffic.namespace, traffic.virtual_service)
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
        logger.info(
            "%s: canary %s at %d%% on %s",
            where,
            traffic.canary.subset,
            weight,
            ", ".join(str(r) for r in traffic.routes),
        )
        return plan.TrafficOutcome(at_weight=True, observed=weight)
    return plan.TrafficOutcome(
        at_weight=False,
        observed=seen(vs),
        error=f"{where} kept changing: {VS_WRITE_ATTEMPTS} writes in a row were refused as concurrent edits",
        attempted=True,
    )
