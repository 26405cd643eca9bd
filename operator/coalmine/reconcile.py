"""One tick of one Rollout: read, decide (pure), write the status, then move the traffic.

The order is the point. The decided status is written first, guarded by the resourceVersion
the decision was made on, so two operators can never both advance a step and a decided rollback
is on record before traffic moves. The VirtualService follows the recorded weight on every tick,
so a write lost to a crash, a conflict or a GitOps revert is redone on the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from coalmine import analysis, plan, validation, virtualservice
from coalmine.adapters.kube import Conflict, KubeApi
from coalmine.adapters.prometheus import PrometheusClient
from coalmine.models import TERMINAL_PHASES, Phase, Rollout, RolloutStatus, Verdict, format_duration
from coalmine.validation import Problem, Target

log = logging.getLogger("coalmine.reconcile")

VS_WRITE_ATTEMPTS = 5
RETRY_TRAFFIC = timedelta(seconds=1)


@dataclass(frozen=True)
class Settings:
    prometheus_url: str
    scrape_interval: timedelta = timedelta(seconds=15)
    resync: timedelta = timedelta(seconds=60)  # terminal rollouts re-assert their weight this often


@dataclass(frozen=True)
class Ports:
    kube: KubeApi
    prometheus: PrometheusClient
    settings: Settings
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any] | None  # the Rollout as written, when the tick wrote its status
    wake_at: datetime | None
    transition: str | None = None  # the event reasons of the tick, for metrics and logs


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


def _logger(body: dict[str, Any]) -> logging.LoggerAdapter[logging.Logger]:
    meta = body.get("metadata", {})
    return logging.LoggerAdapter(log, {"rollout": f"{meta.get('namespace')}/{meta.get('name')}"})


async def tick(body: dict[str, Any], ports: Ports) -> Outcome:
    kube, settings = ports.kube, ports.settings
    logger = _logger(body)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    now = ports.clock()

    try:
        rollout = Rollout.from_body(body)
    except ValidationError as exc:
        status = RolloutStatus.model_validate(body.get("status") or {}) if _status_ok(body) else RolloutStatus()
        problem = Problem(f"Rollout {namespace}/{name}: {_spec_error(exc)}")
        decision = plan.reject(status, meta.get("generation", 1), problem, now)
        return await _commit(body, status, decision, None, None, ports, logger)

    vs = await kube.get_virtual_service(namespace, rollout.spec.virtual_service.name)
    rules = await kube.list_destination_rules(namespace)
    started = rollout.status.observed_generation == rollout.generation and rollout.status.phase in (
        Phase.PROGRESSING,
        *TERMINAL_PHASES,
    )
    recorded = rollout.status.stable if started else None
    resolution = validation.resolve(rollout.spec, namespace, vs, rules, recorded_stable=recorded)
    target = resolution if isinstance(resolution, Target) else None

    if plan.needs_start(rollout):
        decision = plan.start(rollout, resolution, now)
    elif plan.check_due(rollout, now):
        check = await _check(rollout, resolution, now, ports)
        decision = plan.progress(rollout, check, ports.clock(), quiet_start=4 * settings.scrape_interval)
    else:
        decision = plan.decide_without_check(rollout, now)
        if decision.wake_at is None and rollout.status.phase in TERMINAL_PHASES:
            decision = plan.Decision(decision.status, decision.weight, decision.events, now + settings.resync)
    return await _commit(body, rollout.status, decision, vs, target, ports, logger)


def _status_ok(body: dict[str, Any]) -> bool:
    try:
        RolloutStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return False
    return True


async def _check(rollout: Rollout, resolution: Target | Problem, now: datetime, ports: Ports) -> analysis.CheckResult:
    spec = rollout.spec.analysis
    length = analysis.window(
        plan.step_elapsed(rollout, now), interval=spec.interval, scrape_interval=ports.settings.scrape_interval
    )
    if isinstance(resolution, Problem):
        # The objects changed under a running rollout: no judgement possible, hold (maxNoData applies).
        return analysis.CheckResult(
            verdict=Verdict.NO_DATA,
            window=format_duration(length),
            requests=None,
            metrics=(),
            reason=resolution.message,
        )
    asked = analysis.queries(spec, resolution, length)
    address = spec.prometheus.address or ports.settings.prometheus_url
    answers = await ports.prometheus.ask(address, asked)
    return analysis.evaluate(spec, asked, answers, length)


async def _commit(
    body: dict[str, Any],
    old_status: RolloutStatus,
    decision: plan.Decision,
    vs: dict[str, Any] | None,
    target: Target | None,
    ports: Ports,
    logger: logging.LoggerAdapter[logging.Logger],
) -> Outcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    written: dict[str, Any] | None = None
    if decision.status != old_status:
        patch = merge_patch(old_status.to_wire(), decision.status.to_wire())
        try:
            written = await ports.kube.patch_rollout_status(namespace, name, meta["resourceVersion"], patch)
        except Conflict as exc:
            # Another writer (or our own previous tick) got there first: decide again on fresh data.
            logger.info("status not written, will re-read: %s", exc)
            return Outcome(body=None, wake_at=ports.clock() + timedelta(milliseconds=200))
    wake_at = decision.wake_at
    weight = decision.weight
    if (
        weight is not None
        and target is not None
        and vs is not None
        and not await _move_traffic(vs, target, weight, ports, logger)
    ):
        wake_at = ports.clock() + RETRY_TRAFFIC  # the status says where traffic must be: keep trying
    # Events last: a rollback waits for nothing but the status and VirtualService writes.
    if written is not None:
        for event in decision.events:
            logger.log(
                logging.WARNING if event.type == "Warning" else logging.INFO, "%s: %s", event.reason, event.message
            )
            try:
                await ports.kube.post_event(written, type_=event.type, reason=event.reason, message=event.message)
            except Exception as exc:  # an event is a report; losing one must not undo the transition
                logger.warning("could not post event %s: %s", event.reason, exc)
    reasons = ",".join(e.reason for e in decision.events) or None
    return Outcome(body=written, wake_at=wake_at, transition=reasons)


async def _move_traffic(
    vs: dict[str, Any], target: Target, weight: int, ports: Ports, logger: logging.LoggerAdapter[logging.Logger]
) -> bool:
    """Put the owned routes at `weight`; on a concurrent edit re-read and try again.

    Returns whether the routes are at `weight` now (written, or already there).
    """
    for _ in range(VS_WRITE_ATTEMPTS):
        try:
            ops = virtualservice.weight_patch(vs, target, weight)
        except virtualservice.RouteGone as exc:
            logger.warning("%s", exc)
            return False
        if not ops:
            return True
        try:
            await ports.kube.patch_virtual_service(target.namespace, target.virtual_service, ops)
        except Conflict as exc:
            logger.info("%s; re-reading", exc)
            fresh = await ports.kube.read_virtual_service(target.namespace, target.virtual_service)
            if fresh is None:
                return False
            vs = fresh
            continue
        logger.info(
            "VirtualService %s/%s: canary %s at %d%% on %s",
            target.namespace,
            target.virtual_service,
            target.canary.subset,
            weight,
            ", ".join(str(r) for r in target.routes),
        )
        return True
    logger.warning("VirtualService %s/%s kept changing; will retry", target.namespace, target.virtual_service)
    return False
