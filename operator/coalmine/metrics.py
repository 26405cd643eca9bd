"""The operator's own metrics on /metrics (prometheus_client), read from each Rollout's status.

Per Rollout: phase, canary weight, step, and the last check's values and verdicts; counters of
rollbacks and promotions by reason; histograms of step and rollout durations; reconcile errors.
Values come from the status the operator wrote, so they say what the status says.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from coalmine.models import Phase

PHASE = Gauge("coalmine_rollout_phase", "1 for the phase each Rollout is in", ["namespace", "name", "phase"])
WEIGHT = Gauge("coalmine_rollout_canary_weight", "Canary weight the Rollout holds its routes at", ["namespace", "name"])
STEP = Gauge("coalmine_rollout_step", "Current step (1-based) of each Rollout", ["namespace", "name"])
CHECK_VALUE = Gauge("coalmine_analysis_value", "Last value of each analysis metric", ["namespace", "name", "metric"])
CHECK_PASSING = Gauge(
    "coalmine_analysis_passing", "1 pass, 0 fail, -1 no data, per analysis metric", ["namespace", "name", "metric"]
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
LEADER = Gauge("coalmine_leader", "1 while this replica holds the leader Lease (or runs without election)")
TICK_SECONDS = Histogram(
    "coalmine_tick_duration_seconds", "Time per tick", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
)

_VERDICT_VALUE = {"Pass": 1.0, "Fail": 0.0, "NoData": -1.0}
_last_check: dict[str, str] = {}


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def record(key: str, body: dict[str, Any], transition: str | None) -> None:
    namespace, name = key.split("/", 1)
    status = body.get("status") or {}
    phase = status.get("phase")
    for candidate in Phase:
        PHASE.labels(namespace, name, candidate.value).set(1.0 if candidate.value == phase else 0.0)
    if status.get("canaryWeight") is not None:
        WEIGHT.labels(namespace, name).set(status["canaryWeight"])
    if status.get("stepIndex") is not None:
        STEP.labels(namespace, name).set(status["stepIndex"] + 1)
    check = status.get("analysis") or {}
    if check.get("checkedAt") and _last_check.get(key) != check["checkedAt"]:
        _last_check[key] = check["checkedAt"]
        CHECKS.labels(namespace, name, check.get("verdict", "NoData")).inc()
        for metric in check.get("metrics") or []:
            if metric.get("value") is not None:
                CHECK_VALUE.labels(namespace, name, metric["name"]).set(metric["value"])
            CHECK_PASSING.labels(namespace, name, metric["name"]).set(_VERDICT_VALUE.get(metric.get("verdict"), -1.0))
    for reason in (transition or "").split(","):
        if not reason:
            continue
        TRANSITIONS.labels(reason).inc()
        if reason == "RolledBack":
            ROLLBACKS.labels(namespace, (status.get("rollback") or {}).get("reason", "Unknown")).inc()
        if reason == "Succeeded":
            PROMOTIONS.labels(namespace).inc()
        if reason in ("StepAdvanced", "Succeeded", "RolledBack"):
            history = status.get("history") or []
            if len(history) >= 2 and reason == "StepAdvanced":
                started, ended = _time(history[-2].get("startedAt")), _time(history[-1].get("startedAt"))
                if started and ended:
                    STEP_SECONDS.observe((ended - started).total_seconds())
            started, finished = _time(status.get("startedAt")), _time(status.get("finishedAt"))
            if reason != "StepAdvanced" and started and finished:
                ROLLOUT_SECONDS.labels(phase or "").observe((finished - started).total_seconds())


def forget(key: str) -> None:
    """Drop a deleted Rollout's series."""
    namespace, name = key.split("/", 1)
    _last_check.pop(key, None)
    removals: list[tuple[Gauge, tuple[str, ...]]] = [(PHASE, (namespace, name, p.value)) for p in Phase]
    removals += [(WEIGHT, (namespace, name)), (STEP, (namespace, name))]
    for gauge, labels in removals:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
