"""Webhooks of a Rollout: which calls are due, what their recorded answers allow. Pure.

The shell never waits for a webhook in a tick: it asks `due` which calls the status calls for, runs
them in the background (adapters/webhooks.py: allowlist, timeouts, bounded concurrency), and hands
their answers back to the next tick as `Result`s, which `fold` records in `status.webhooks`. The plan
decides only on what is recorded there, so a restarted operator sees the same answers and a rollback
never waits for a call.

    pre-rollout   before the first shift of a generation; must answer 2xx. Asked again every
                  checkEvery until `timeout` has passed since the first call; then the rollout does
                  not start (Pending, Stalled: WebhookFailed) until the spec changes.
    pre-step      before each later weight increase (step 2 onwards), once the hold is over and the
                  last check passed; a non-2xx holds the step (checks and rollback go on), asked again
                  every checkEvery. A person's promote does not wait for it, as it does not wait for a hold.
    during-step   at every check; recorded; with gating: true its last answer in the step must be 2xx
                  for the step to go on.
    post-rollout  once when a generation is Succeeded, once when it is RolledBack; informational.

Each call is for a `key` (the generation, the step, the check or the outcome): a new key starts over,
so an answer never counts for a step it was not made for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from coalmine.core import steering
from coalmine.core.models import (
    AnalysisStatus,
    Phase,
    Rollout,
    RolloutStatus,
    Webhook,
    WebhookStatus,
    WebhookType,
    format_duration,
    format_time,
)

PASS, FAIL, REFUSED = "Pass", "Fail", "Refused"
WAITING = "WaitingForWebhook"  # the condition reason of a rollout a webhook holds (plan.Reason)
PAYLOAD_VERSION = "coalmine.dev/v1alpha1"


@dataclass(frozen=True)
class Call:
    """A call the status asks for: to `webhook`, for `key`, with the JSON `payload`."""

    webhook: Webhook
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """What a call came back with (the shell's observation)."""

    name: str
    key: str
    result: str  # PASS, FAIL or REFUSED
    started_at: datetime
    at: datetime
    code: int | None = None
    message: str = ""


# --- keys: what a call is for ----------------------------------------------------------------------


def start_key(rollout: Rollout) -> str:
    return f"g{rollout.generation}"


def step_key(rollout: Rollout) -> str:
    status = rollout.status
    started = format_time(status.step_started_at) if status.step_started_at else "-"
    return f"g{rollout.generation}/s{(status.step_index or 0) + 1}/{started}"


def _check_key(rollout: Rollout, checked_at: datetime) -> str:
    return f"{step_key(rollout)}/check/{format_time(checked_at)}"


def _end_key(rollout: Rollout) -> str | None:
    status = rollout.status
    if status.phase not in (Phase.SUCCEEDED, Phase.ROLLED_BACK) or status.finished_at is None:
        return None
    return f"g{rollout.generation}/{status.phase.value}/{format_time(status.finished_at)}"


def _of(rollout: Rollout, kind: WebhookType) -> list[Webhook]:
    return [h for h in rollout.spec.webhooks if h.type is kind]


def _record(status: RolloutStatus, name: str) -> WebhookStatus | None:
    return next((w for w in status.webhooks if w.name == name), None)


def _describe(record: WebhookStatus | None) -> str:
    if record is None:
        return "no answer yet"
    if record.result == REFUSED:
        return f"refused: {record.message}"
    code = f"HTTP {record.code}" if record.code is not None else "no answer"
    return f"{code}{': ' + record.message if record.message else ''}"


# --- what the recorded answers allow ----------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """A rollout held by its webhooks: why, and whether it has given up (pre-rollout past its timeout)."""

    message: str
    failed: bool = False


def start_gate(rollout: Rollout, now: datetime) -> Gate | None:
    """Before the first shift: None when every pre-rollout webhook answered 2xx for this generation."""
    key = start_key(rollout)
    for hook in _of(rollout, WebhookType.PRE_ROLLOUT):
        record = _record(rollout.status, hook.name)
        mine = record if record is not None and record.key == key else None
        if mine is not None and mine.result == PASS:
            continue
        if mine is not None and mine.result == REFUSED:
            return Gate(
                f"pre-rollout webhook {hook.name} ({hook.url}) was not called: {mine.message}; nothing moved. "
                "Change spec.webhooks (a new generation) or the operator's --webhook-allow",
                failed=True,
            )
        if mine is not None and now - mine.since >= hook.timeout:
            return Gate(
                f"pre-rollout webhook {hook.name} ({hook.url}) did not answer 2xx within its timeout "
                f"{format_duration(hook.timeout)}: {_describe(mine)}; the rollout does not start and nothing moved. "
                "Fix the webhook and change the spec (a new generation) to try again",
                failed=True,
            )
        return Gate(
            f"pre-rollout webhook {hook.name} ({hook.url}) must answer 2xx before the first shift; "
            f"last answer: {_describe(mine)}"
        )
    return None


def step_gate(rollout: Rollout) -> str | None:
    """Before leaving the current step: why the webhooks hold it (a pre-step without a 2xx for this step,
    a gating during-step whose last answer in the step was not 2xx), or None."""
    status = rollout.status
    key = step_key(rollout)
    index = status.step_index or 0
    if index + 1 < len(rollout.spec.steps):  # a later step to increase the weight to
        for hook in _of(rollout, WebhookType.PRE_STEP):
            record = _record(status, hook.name)
            if record is None or record.key != key or record.result != PASS:
                mine = record if record is not None and record.key == key else None
                return f"waiting for pre-step webhook {hook.name} ({hook.url}) to answer 2xx; last answer: {_describe(mine)}"
    for hook in _of(rollout, WebhookType.DURING_STEP):
        if not hook.gating:
            continue
        record = _record(status, hook.name)
        mine = record if record is not None and record.key.startswith(key + "/") else None
        if mine is None or mine.result != PASS:
            return (
                f"waiting for gating during-step webhook {hook.name} ({hook.url}) to answer 2xx in this step; "
                f"last answer: {_describe(mine)}"
            )
    return None


# --- which calls are due ---------------------------------------------------------------------------


def due(rollout: Rollout, now: datetime) -> list[Call]:
    """The gate and post-rollout calls the status (as just written) asks for now.

    The shell runs each at most once at a time (by webhook and key), so asking twice is harmless."""
    status = rollout.status
    every = rollout.spec.analysis.check_every
    calls: list[Call] = []
    if status.observed_generation != rollout.generation:
        return calls
    held = next((c.reason for c in status.conditions if c.type == "Reconciling"), "") == WAITING
    if status.phase is Phase.PENDING and held:
        key = start_key(rollout)
        calls += _gate_calls(rollout, WebhookType.PRE_ROLLOUT, key, every, now)
    if status.phase is Phase.PROGRESSING and status.step_started_at is not None:
        ready = (
            status.paused is None
            and not steering.gated(rollout.spec, status)
            and steering.ready(rollout.spec, status, status.analysis, now)
            and (status.step_index or 0) + 1 < len(rollout.spec.steps)
        )
        if ready:
            calls += _gate_calls(rollout, WebhookType.PRE_STEP, step_key(rollout), every, now)
    end = _end_key(rollout)
    if end is not None:
        for hook in _of(rollout, WebhookType.POST_ROLLOUT):
            record = _record(status, hook.name)
            if record is None or record.key != end:
                calls.append(Call(hook, end, payload(rollout, hook, end)))
    return calls


def _gate_calls(rollout: Rollout, kind: WebhookType, key: str, every: timedelta, now: datetime) -> list[Call]:
    calls = []
    for hook in _of(rollout, kind):
        record = _record(rollout.status, hook.name)
        if record is not None and record.key == key and record.result != FAIL:
            continue  # passed, or refused (a refusal does not change until the spec does)
        if record is None or record.key != key or now >= record.at + every:
            calls.append(Call(hook, key, payload(rollout, hook, key)))
    return calls


def during(rollout: Rollout, checked_at: datetime) -> list[Call]:
    """The during-step calls of a check that ran at `checked_at` in the step the rollout was at."""
    if rollout.status.phase is not Phase.PROGRESSING:
        return []
    key = _check_key(rollout, checked_at)
    return [Call(h, key, payload(rollout, h, key)) for h in _of(rollout, WebhookType.DURING_STEP)]


def fold(rollout: Rollout, results: Sequence[Result]) -> RolloutStatus:
    """The status with the answers recorded: each webhook's last call, the attempts for its key.

    Idempotent (an answer already recorded changes nothing); webhooks no longer in the spec are dropped."""
    status = rollout.status
    records = {w.name: w for w in status.webhooks}
    hooks = {h.name: h for h in rollout.spec.webhooks}
    for result in sorted(results, key=lambda r: r.at):
        hook = hooks.get(result.name)
        if hook is None:
            continue
        before = records.get(result.name)
        if before is not None and before.key == result.key and before.at >= result.at:
            continue  # already recorded
        same = before is not None and before.key == result.key
        records[result.name] = WebhookStatus(
            name=hook.name,
            type=hook.type,
            key=result.key,
            result=result.result,
            code=result.code,
            message=result.message,
            since=before.since if same and before is not None else result.started_at,
            at=result.at,
            attempts=before.attempts + 1 if same and before is not None else 1,
        )
    kept = tuple(records[h.name] for h in rollout.spec.webhooks if h.name in records)
    if kept == status.webhooks:
        return status
    return status.model_copy(update={"webhooks": kept})


# --- the payload -------------------------------------------------------------------------------------


def _metrics(analysis: AnalysisStatus | None) -> list[dict[str, Any]]:
    if analysis is None:
        return []
    return [
        {"name": m.name, "value": m.value, "threshold": m.threshold, "verdict": m.verdict.value, "query": m.query}
        for m in analysis.metrics
    ]


def payload(rollout: Rollout, hook: Webhook, key: str) -> dict[str, Any]:
    """The JSON body of a call (README: Webhooks). Also the body of a `generic` notification."""
    status = rollout.status
    index = status.step_index
    weight = status.canary_weight
    analysis = status.analysis
    stable = status.stable or rollout.spec.stable
    return {
        "apiVersion": PAYLOAD_VERSION,
        "kind": "WebhookCall",
        "webhook": {"name": hook.name, "type": hook.type.value, "key": key},
        "rollout": rollout.name,
        "namespace": rollout.namespace,
        "generation": rollout.generation,
        "phase": status.phase.value if status.phase else None,
        "message": status.message or "",
        "step": None
        if index is None
        else {"index": index + 1, "of": len(rollout.spec.steps), "weight": rollout.spec.steps[index].weight},
        "weights": {"canary": weight, "stable": None if weight is None else 100 - weight},
        "stable": stable.model_dump(exclude_none=True) if stable is not None else None,
        "canary": (status.canary or rollout.spec.canary).model_dump(exclude_none=True),
        "metrics": {
            "checkedAt": format_time(analysis.checked_at) if analysis else None,
            "verdict": analysis.verdict.value if analysis else None,
            "results": _metrics(analysis),
        },
        "metadata": dict(hook.metadata),
    }
