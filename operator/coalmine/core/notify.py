"""Notifications: which transitions a Rollout's subscribers are told about, and the messages. Pure.

A transition's Event (plan.Event) of a subscribed type is queued in `status.notifications` in the same
status write that records the transition (write-ahead), one entry per channel, each with an id made
of the generation, the event and its time. The shell delivers Pending entries off the tick
(adapters/webhooks.py, with retries and backoff) and hands the outcome back, which `fold` records:
an entry that is Delivered is never sent again, also after a restart. An operator killed between a
delivery and its record sends that one again (at least once; the id lets a receiver drop it).

The channels (their kind and URL) are the operator's, from --notifications-config; a Rollout names
them in `spec.notify`, and the config's `default` subscription takes every Rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coalmine.core.models import (
    NotificationStatus,
    NotifyEvent,
    Rollout,
    RolloutStatus,
    Subscription,
    format_time,
)
from coalmine.core.plan import Event, Reason

MAX_KEPT = 20  # status.notifications keeps the newest this many (never dropping a Pending one)
PENDING, DELIVERED, FAILED = "Pending", "Delivered", "Failed"

_EVENTS = {
    Reason.ROLLED_BACK: NotifyEvent.ROLLED_BACK,
    Reason.SUCCEEDED: NotifyEvent.SUCCEEDED,
    Reason.WAITING_FOR_PROMOTION: NotifyEvent.WAITING_FOR_APPROVAL,
    Reason.NO_DATA: NotifyEvent.NO_DATA,
    Reason.INVALID: NotifyEvent.INVALID,
}


@dataclass(frozen=True)
class Outcome:
    """A delivery's end (the shell's observation)."""

    id: str
    channel: str
    result: str  # DELIVERED or FAILED
    attempts: int
    at: datetime
    error: str = ""


def subscriptions(rollout: Rollout | None, defaults: Sequence[Subscription]) -> list[Subscription]:
    return [*defaults, *(rollout.spec.notify if rollout is not None else ())]


def queue(
    rollout: Rollout | None,
    status: RolloutStatus,
    generation: int,
    events: Sequence[Event],
    subscribed: Sequence[Subscription],
    now: datetime,
    *,
    namespace: str,
    name: str,
) -> RolloutStatus:
    """`status` with a Pending entry per subscribed channel for each event of a subscribed type."""
    added: list[NotificationStatus] = []
    known = {(n.id, n.channel) for n in status.notifications}
    for event in events:
        kind = _EVENTS.get(event.reason)
        if kind is None:
            continue
        ident = f"{namespace}/{name}/g{generation}/{kind.value}/{format_time(now)}"
        for sub in subscribed:
            if kind not in sub.on or (ident, sub.channel) in known:
                continue
            known.add((ident, sub.channel))
            added.append(
                NotificationStatus(
                    id=ident,
                    event=kind,
                    channel=sub.channel,
                    message=event.message,
                    details=details(rollout, status, kind, namespace=namespace, name=name),
                    at=now,
                )
            )
    if not added:
        return status
    return status.model_copy(update={"notifications": _trim((*status.notifications, *added))})


def _trim(entries: Sequence[NotificationStatus]) -> tuple[NotificationStatus, ...]:
    extra = len(entries) - MAX_KEPT
    kept = []
    for entry in entries:
        if extra > 0 and entry.result != PENDING:
            extra -= 1
            continue
        kept.append(entry)
    return tuple(kept)


def pending(status: RolloutStatus) -> list[NotificationStatus]:
    return [n for n in status.notifications if n.result == PENDING]


def fold(status: RolloutStatus, outcomes: Sequence[Outcome]) -> RolloutStatus:
    """The status with delivery outcomes recorded (idempotent; an entry already trimmed is forgotten)."""
    done = {(o.id, o.channel): o for o in outcomes}
    if not done:
        return status
    entries = []
    for entry in status.notifications:
        outcome = done.get((entry.id, entry.channel))
        if outcome is not None and entry.result == PENDING:
            entry = entry.model_copy(
                update={
                    "result": outcome.result,
                    "attempts": outcome.attempts,
                    "error": outcome.error,
                    "done_at": outcome.at,
                }
            )
        entries.append(entry)
    new = tuple(entries)
    return status if new == status.notifications else status.model_copy(update={"notifications": new})


def details(
    rollout: Rollout | None, status: RolloutStatus, kind: NotifyEvent, *, namespace: str, name: str
) -> dict[str, str]:
    """What a person needs, as label -> text: the release, the weights, what failed, where to look."""
    facts: dict[str, str] = {}
    stable = status.stable.subset if status.stable else "?"
    canary = status.canary.subset if status.canary else (rollout.spec.canary.subset if rollout else "?")
    generation = f" (generation {status.observed_generation})" if status.observed_generation else ""
    facts["Release"] = f"{namespace}/{name}: {stable} -> {canary}{generation}"
    if status.canary_weight is not None:
        facts["Weights"] = f"canary {status.canary_weight}%, stable {100 - status.canary_weight}%"
    if status.step_label:
        facts["Step"] = status.step_label
    rollback = status.rollback
    if kind is NotifyEvent.ROLLED_BACK and rollback is not None:
        facts["Reason"] = rollback.reason + (f" by {rollback.by}" if rollback.by else "")
        if rollback.metric:
            value = "no data" if rollback.value is None else f"{rollback.value:.4g}"
            facts["Failed"] = f"{rollback.metric} = {value} (threshold {rollback.threshold})"
        if rollback.query:
            facts["Query"] = rollback.query
    elif kind in (NotifyEvent.NO_DATA, NotifyEvent.SUCCEEDED, NotifyEvent.WAITING_FOR_APPROVAL) and status.analysis:
        facts["Last check"] = "; ".join(
            f"{m.name} {'no data' if m.value is None else f'{m.value:.4g}'} ({m.threshold}): {m.verdict.value}"
            for m in status.analysis.metrics
        )
    facts["More"] = f"coalmine status {name} -n {namespace}"
    if kind is NotifyEvent.WAITING_FOR_APPROVAL:
        facts["Promote"] = f"coalmine promote {name} -n {namespace}"
    return facts


_TITLES = {
    NotifyEvent.ROLLED_BACK: "rolled back",
    NotifyEvent.SUCCEEDED: "succeeded",
    NotifyEvent.WAITING_FOR_APPROVAL: "waits for approval",
    NotifyEvent.NO_DATA: "has no data",
    NotifyEvent.INVALID: "is invalid",
}


def title(entry: NotificationStatus) -> str:
    rollout = entry.id.split("/g", 1)[0]
    return f"Rollout {rollout} {_TITLES[entry.event]}"


def slack(entry: NotificationStatus) -> dict[str, Any]:
    """A Slack incoming-webhook message: Block Kit blocks, with `text` as the fallback."""
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{_code(label, value)}"} for label, value in entry.details.items()]
    return {
        "text": f"{title(entry)}: {entry.message}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title(entry)[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": entry.message[:3000]}},
            *(
                {"type": "section", "fields": fields[i : i + 10]}  # Slack takes at most 10 fields a section
                for i in range(0, len(fields), 10)
            ),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{entry.event.value} · {entry.id}"}]},
        ],
    }


def _code(label: str, value: str) -> str:
    return f"`{value}`" if label in ("More", "Promote", "Query") else value


def msteams(entry: NotificationStatus) -> dict[str, Any]:
    """A Teams incoming-webhook / Workflows message: one Adaptive Card (1.4) attachment."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": title(entry), "weight": "Bolder", "size": "Medium"},
                        {"type": "TextBlock", "text": entry.message, "wrap": True},
                        {
                            "type": "FactSet",
                            "facts": [{"title": label, "value": value} for label, value in entry.details.items()],
                        },
                    ],
                },
            }
        ],
    }


def generic(entry: NotificationStatus) -> dict[str, Any]:
    """The generic channel's JSON: the notification as recorded."""
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Notification",
        "id": entry.id,
        "event": entry.event.value,
        "title": title(entry),
        "message": entry.message,
        "details": dict(entry.details),
        "at": format_time(entry.at),
    }


def body(kind: str, entry: NotificationStatus) -> dict[str, Any]:
    return {"slack": slack, "msteams": msteams}.get(kind, generic)(entry)
