"""The operator's own metrics on /metrics (prometheus_client), read from each Rollout's status.

Per Rollout: phase, canary weight, step, and the last check's values and verdicts; counters of
rollbacks and promotions by reason; histograms of step and rollout durations; reconcile errors.
Values come from the status the operator wrote, so they say what the status says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from coalmine.core.models import Phase, RolloutStatus, Verdict
from coalmine.core.plan import Event, Reason, traffic_stalled

PHASE = Gauge("coalmine_rollout_phase", "1 for the phase each Rollout is in", ["namespace", "name", "phase"])
WEIGHT = Gauge("coalmine_rollout_canary_weight", "Canary weight the Rollout holds its routes at", ["namespace", "name"])
STEP = Gauge("coalmine_rollout_step", "Current step (1-based) of each Rollout", ["namespace", "name"])
CHECK_VALUE = Gauge("coalmine_analysis_value", "Last value of each analysis metric", ["namespace", "name", "metric"])
CHECK_PASSING = Gauge(
    "coalmine_analysis_passing",
    "1 pass, 0 fail, -1 no data, 0.5 inconclusive, per analysis metric",
    ["namespace", "name", "metric"],
)
CHECKS = Counter("coalmine_analysis_checks_total", "Analysis checks by verdict", ["namespace", "name", "verdict"])
ROLLBACKS = Counter("coalmine_rollbacks_total", "Rollbacks by reason", ["namespace", "reason"])
PROMOTIONS = Counter("coalmine_promotions_total", "Rollouts that reached Succeeded", ["namespace"])
TRANSITIONS = Counter("coalmine_transitions_total", "Transitions by event reason", ["reason"])
STEP_SECONDS = Histogram(
    "coalmine_step_duration_seconds",
    "How long steps ran before the next",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
ROLLOUT_SECONDS = Histogram(
    "coalmine_rollout_duration_seconds",
    "Start to Succeeded or RolledBack",
    ["phase"],
    buckets=(30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
RECONCILE_ERRORS = Counter("coalmine_reconcile_errors_total", "Ticks that ended in an unexpected error")
SETTLED_TICKS = Counter(
    "coalmine_settled_ticks_total",
    "Resync ticks of finished Rollouts not run: nothing they read changed since a tick that found nothing to do",
)
LEADER = Gauge("coalmine_leader", "1 while this replica holds the leader Lease (or runs without election)")
TICK_SECONDS = Histogram(
    "coalmine_tick_duration_seconds", "Time per tick", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
)
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TICK_PHASE_SECONDS = Histogram(
    "coalmine_tick_phase_seconds",
    "Where ticks spend their time: late (due -> started by the scheduler), queued (waiting for a tick slot), "
    "prometheus (the check's queries), status (each status PATCH), traffic (VirtualService reads and writes), "
    "events (posting Events)",
    ["phase"],
    buckets=_LATENCY_BUCKETS,
)
CHECK_LAG_SECONDS = Histogram(
    "coalmine_check_lag_seconds",
    "When each check ran, after its grid point (every checkEvery, at the Rollout's own offset)",
    buckets=_LATENCY_BUCKETS,
)
LOOP_LAG_SECONDS = Histogram(
    "coalmine_event_loop_lag_seconds",
    "How late a 100 ms sleep on the operator's event loop wakes (a busy loop delays every tick)",
    buckets=_LATENCY_BUCKETS,
)

TRAFFIC_STUCK = Gauge(
    "coalmine_rollout_traffic_stuck",
    "1 while the operator cannot put a Rollout's routes at the weight its status asks (TrafficNotMoved)",
    ["namespace", "name"],
)
TRAFFIC_NOT_MOVED = Counter(
    "coalmine_traffic_not_moved_total",
    "Times a wanted weight could not be written to the routes (each distinct reason counts once)",
    ["namespace"],
)

WEBHOOK_CALLS = Counter(
    "coalmine_webhook_calls_total",
    "Webhook calls by type and result (Pass: 2xx; Fail: other status, no answer, timeout; Refused: allowlist)",
    ["type", "result"],
)
NOTIFICATIONS_DELIVERED = Counter(
    "coalmine_notifications_delivered_total", "Notifications a channel accepted (2xx)", ["channel"]
)
NOTIFICATION_FAILURES = Counter(
    "coalmine_notification_failures_total",
    "Failed notification delivery attempts (each retry counts; an unknown channel counts once)",
    ["channel"],
)


def delivery(what: str, label: str, result: str) -> None:
    """The webhook Dispatcher's report of each call and delivery attempt."""
    if what == "webhook":
        WEBHOOK_CALLS.labels(label, result).inc()
    elif result == "Delivered":
        NOTIFICATIONS_DELIVERED.labels(label).inc()
    else:
        NOTIFICATION_FAILURES.labels(label).inc()


_VERDICT_VALUE = {Verdict.PASS: 1.0, Verdict.FAIL: 0.0, Verdict.NO_DATA: -1.0, Verdict.INCONCLUSIVE: 0.5}
_last_check: dict[tuple[str, str], datetime] = {}


def record(namespace: str, name: str, status: RolloutStatus, events: Sequence[Event]) -> None:
    """Gauges from the status the tick left, counters from the events it posted."""
    for candidate in Phase:
        PHASE.labels(namespace, name, candidate.value).set(1.0 if candidate is status.phase else 0.0)
    if status.canary_weight is not None:
        WEIGHT.labels(namespace, name).set(status.canary_weight)
    if status.step_index is not None:
        STEP.labels(namespace, name).set(status.step_index + 1)
    TRAFFIC_STUCK.labels(namespace, name).set(1.0 if traffic_stalled(status) is not None else 0.0)
    check = status.analysis
    if check is not None and _last_check.get((namespace, name)) != check.checked_at:
        _last_check[namespace, name] = check.checked_at
        CHECKS.labels(namespace, name, check.verdict.value).inc()
        for metric in check.metrics:
            if metric.value is not None:
                CHECK_VALUE.labels(namespace, name, metric.name).set(metric.value)
            if metric.verdict in _VERDICT_VALUE:  # a skipped row has no verdict to export
                CHECK_PASSING.labels(namespace, name, metric.name).set(_VERDICT_VALUE[metric.verdict])
    for event in events:
        _count(namespace, status, event.reason)


def _count(namespace: str, status: RolloutStatus, reason: Reason) -> None:
    TRANSITIONS.labels(reason.value).inc()
    if reason is Reason.ROLLED_BACK:
        ROLLBACKS.labels(namespace, status.rollback.reason if status.rollback else "Unknown").inc()
    elif reason is Reason.SUCCEEDED:
        PROMOTIONS.labels(namespace).inc()
    elif reason is Reason.TRAFFIC_NOT_MOVED:
        TRAFFIC_NOT_MOVED.labels(namespace).inc()
    steps = [h for h in status.history if h.starts_step]  # not the pauses and resumes in between
    if reason is Reason.STEP_ADVANCED and len(steps) >= 2:
        STEP_SECONDS.observe((steps[-1].started_at - steps[-2].started_at).total_seconds())
    if reason in (Reason.SUCCEEDED, Reason.ROLLED_BACK) and status.started_at and status.finished_at:
        phase = status.phase.value if status.phase else ""
        ROLLOUT_SECONDS.labels(phase).observe((status.finished_at - status.started_at).total_seconds())


def forget(namespace: str, name: str) -> None:
    """Drop a deleted Rollout's series."""
    _last_check.pop((namespace, name), None)
    removals: list[tuple[Gauge, tuple[str, ...]]] = [(PHASE, (namespace, name, p.value)) for p in Phase]
    removals += [(WEIGHT, (namespace, name)), (STEP, (namespace, name)), (TRAFFIC_STUCK, (namespace, name))]
    for gauge, labels in removals:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)


def observe(phase: str, seconds: float) -> None:
    """A tick's or the scheduler's timing (reconcile.Ports.observe, Scheduler(observe=...))."""
    if phase == "check_lag":
        CHECK_LAG_SECONDS.observe(seconds)
    else:
        TICK_PHASE_SECONDS.labels(phase).observe(seconds)
