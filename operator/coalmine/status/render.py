"""Turn a Rollout object and its Events into what a cluster admin reads: pure functions, no I/O.

Why it exists: `coalmine status` and `coalmine demo` must show the same thing, and what they show
must be testable without a cluster. `summarize` reads a Rollout dict (as the API server returns it,
status possibly missing or half-written) into a `RolloutView`; `to_renderable` draws that with rich
for a terminal, `to_lines` as plain text for pipes and logs (no control codes). `now` is always a
parameter, never read from the clock here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from coalmine.core.models import DEFAULT_STEPS, Analysis, Readiness, parse_duration
from coalmine.core.plan import describe_match

BAR_WIDTH = 30
TEXT_BAR_WIDTH = 20
MAX_EVENTS = 8
DEFAULTS = Analysis()  # the spec's defaults, for Rollouts whose stored spec predates them
READINESS_DEFAULTS = Readiness()

PHASE_STYLE = {
    "Pending": "dim",
    "Progressing": "bold yellow",
    "Succeeded": "bold green",
    "RollingBack": "bold red",
    "RolledBack": "bold red",
    "Invalid": "bold magenta",
}
VERDICT_STYLE = {"Pass": "green", "Fail": "bold red", "NoData": "yellow"}
STABLE_STYLE = "blue"
CANARY_STYLE = "yellow"


@dataclass(frozen=True)
class EventRow:
    """One Kubernetes Event about a Rollout, reduced to what the view shows."""

    time: datetime | None
    type: str
    reason: str
    message: str
    count: int = 1


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: float | None
    threshold: str
    verdict: str
    reason: str
    stable: float | None = None  # the same measure on the stable, for relative checks
    dry_run: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (dry run)" if self.dry_run else self.name

    def shown(self) -> str:
        value = format_value(self.name, self.value)
        return value if self.stable is None else f"{value} (stable {format_value(self.name, self.stable)})"


@dataclass(frozen=True)
class RollbackRow:
    reason: str
    metric: str
    value: float | None
    threshold: str
    query: str
    at: datetime | None


@dataclass(frozen=True)
class PauseRow:
    since: datetime | None
    by: str
    reason: str


@dataclass(frozen=True)
class RequestRow:
    """The last request the operator handled (status.lastRequest)."""

    command: str  # "promote", "promote --full", ...
    by: str
    result: str  # Applied or Refused
    message: str
    at: datetime | None  # when it was handled


@dataclass(frozen=True)
class ReadinessRow:
    """status.readiness: the ready pods as last seen, and since when a shift waits for the canary's."""

    canary_ready: int | None  # None: not counted (the host is not a Service with a selector here)
    stable_ready: int | None
    needed: int | None
    waiting_since: datetime | None
    timeout: timedelta  # spec.readiness.timeout: waiting longer rolls back (WaitingForCanary)
    message: str

    @property
    def deadline(self) -> datetime | None:
        return self.waiting_since + self.timeout if self.waiting_since is not None else None


@dataclass(frozen=True)
class SideRoute:
    """A route (or part of one) a step adds to the owned route's traffic, shown under the weights:
    `kind` names the step kind ("A/B"), `text` says what it does to whom."""

    kind: str
    text: str


# Step kinds besides a weight, each with the label the steps line shows for it: the first key a step
# has decides. One more kind (a mirror step, say) is one more entry here and, for what it adds to the
# routes while it runs, one more function in SIDE_ROUTES.
STEP_KINDS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("match", lambda _: "A/B"),
    ("mirror", lambda step: f"mirror {_int(step.get('mirror'), 0)}%"),
)


def step_label(step: Mapping[str, Any]) -> str:
    """How the steps line shows one step: its kind's label, or its weight."""
    for key, label in STEP_KINDS:
        if step.get(key) is not None:
            return label(step)
    return str(_int(step.get("weight"), 0))


@dataclass(frozen=True)
class RolloutView:
    """Everything shown for one Rollout, already computed for a given `now`."""

    namespace: str
    name: str
    phase: str
    stale: bool  # the status is about an older generation (the operator has not caught up)
    routes: tuple[str, ...]
    stable: str
    canary: str
    canary_weight: int
    step: int | None  # 1-based
    step_weights: tuple[int, ...]
    hold: timedelta | None
    hold_left: timedelta | None  # pauses do not count: a paused hold keeps what it had left
    paused: PauseRow | None
    manual: bool  # the current step waits for promote once its hold is over
    checked_at: datetime | None
    check_verdict: str | None
    window: str | None
    requests: float | None
    consecutive_failures: int
    failure_limit: int
    no_data_since: datetime | None
    max_no_data: timedelta | None
    metrics: tuple[MetricRow, ...]
    rollback: RollbackRow | None
    message: str
    last_request: RequestRow | None = None
    webhooks: tuple[tuple[str, str], ...] = ()  # (result, line) of each webhook's last answer (status.webhooks)
    step_labels: tuple[str, ...] = ()  # each step as the steps line shows it: its weight, or its kind (A/B)
    side_routes: tuple[SideRoute, ...] = ()  # what the current step adds to the routes (the A/B route)
    readiness: ReadinessRow | None = None  # while Progressing: status.readiness
    events: tuple[EventRow, ...] = field(default=())
    now: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))


# --- parsing (tolerant: a status may be missing, partial or from an older operator) -----------------


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _duration(value: Any) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any, default: int) -> int:
    number = _number(value)
    return default if number is None else int(number)


def _destination(dest: Any) -> str:
    if not isinstance(dest, Mapping):
        return "?"
    host = str(dest.get("host") or "")
    if host and not dest.get("subset"):  # spec.httpRoute: a Service per version
        return host
    subset = str(dest.get("subset") or "?")
    return f"{host}/{subset}" if host else subset


def summarize(obj: Mapping[str, Any], events: Iterable[EventRow], now: datetime) -> RolloutView:
    """Read one Rollout dict and its Events into a `RolloutView` as of `now`."""
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    spec: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    analysis_spec: Mapping[str, Any] = spec.get("analysis") or {}
    steps: Sequence[Mapping[str, Any]] = spec.get("steps") or [{"weight": s.weight} for s in DEFAULT_STEPS]
    interval = _duration(analysis_spec.get("interval")) or DEFAULTS.interval

    phase = str(status.get("phase") or "Unknown")
    step_index = status.get("stepIndex")
    step = step_index + 1 if isinstance(step_index, int) else None
    hold: timedelta | None = None
    manual = False
    if isinstance(step_index, int) and 0 <= step_index < len(steps):
        hold = _duration(steps[step_index].get("hold")) or interval
        manual = steps[step_index].get("approval") == "manual"
    pause: Mapping[str, Any] | None = status.get("paused")
    paused = (
        PauseRow(
            since=parse_time(pause.get("since")), by=str(pause.get("by") or ""), reason=str(pause.get("reason") or "")
        )
        if isinstance(pause, Mapping)
        else None
    )
    hold_left: timedelta | None = None
    started = parse_time(status.get("stepStartedAt"))
    if phase == "Progressing" and hold is not None and started is not None:
        # As core.steering.hold_end: the step's earlier pauses and the current one do not count.
        pauses = _duration(status.get("stepPausedFor")) or timedelta(0)
        if paused is not None and paused.since is not None:
            pauses += max(timedelta(0), now - max(paused.since, started))
        hold_left = max(timedelta(0), started + hold + pauses - now)

    check: Mapping[str, Any] = status.get("analysis") or {}
    metrics = tuple(
        MetricRow(
            name=str(m.get("name", "?")),
            value=_number(m.get("value")),
            threshold=str(m.get("threshold") or ""),
            verdict=str(m.get("verdict") or "?"),
            reason=str(m.get("reason") or ""),
            stable=_number(m.get("stableValue")),
            dry_run=bool(m.get("dryRun")),
        )
        for m in check.get("metrics") or []
    )
    rb: Mapping[str, Any] | None = status.get("rollback")
    rollback = (
        RollbackRow(
            reason=str(rb.get("reason") or ""),
            metric=str(rb.get("metric") or ""),
            value=_number(rb.get("value")),
            threshold=str(rb.get("threshold") or ""),
            query=str(rb.get("query") or ""),
            at=parse_time(rb.get("at")),
        )
        if rb
        else None
    )
    handled: Mapping[str, Any] | None = status.get("lastRequest")
    last_request = (
        RequestRow(
            command=str(handled.get("verb") or "?") + (" --full" if handled.get("full") else ""),
            by=str(handled.get("by") or ""),
            result=str(handled.get("result") or ""),
            message=str(handled.get("message") or ""),
            at=parse_time(handled.get("handledAt")),
        )
        if isinstance(handled, Mapping)
        else None
    )
    webhooks = tuple(
        (str(w.get("result") or "?"), webhook_text(w, now))
        for w in status.get("webhooks") or []
        if isinstance(w, Mapping)
    )
    observed = status.get("observedGeneration")
    generation = meta.get("generation")
    stale = observed is not None and generation is not None and observed != generation
    current: Mapping[str, Any] = (
        steps[step_index] if isinstance(step_index, int) and 0 <= step_index < len(steps) and not stale else {}
    )
    ordered = sorted(events, key=lambda e: e.time or datetime.min.replace(tzinfo=UTC))
    return RolloutView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or "?"),
        phase=phase,
        stale=stale,
        routes=tuple(
            str(r)
            for r in (spec.get("virtualService") or {}).get("routes")
            or (spec.get("httpRoute") or {}).get("rules")
            or ()
        ),
        stable=_destination(status.get("stable") or spec.get("stable")),  # the routes' truth first
        canary=_destination(status.get("canary") or spec.get("canary")),
        canary_weight=_int(status.get("canaryWeight"), 0),
        step=step,
        step_weights=tuple(_int(s.get("weight"), 0) for s in steps),
        hold=hold,
        hold_left=hold_left,
        paused=paused,
        manual=manual,
        checked_at=parse_time(check.get("checkedAt")),
        check_verdict=str(check["verdict"]) if check.get("verdict") else None,
        window=str(check["window"]) if check.get("window") else None,
        requests=_number(check.get("requests")),
        consecutive_failures=_int(check.get("consecutiveFailures"), 0),
        failure_limit=_int(analysis_spec.get("failureLimit"), DEFAULTS.failure_limit),
        no_data_since=parse_time(check.get("noDataSince")),
        max_no_data=_duration(analysis_spec.get("maxNoData")) or DEFAULTS.max_no_data,
        metrics=metrics,
        rollback=rollback,
        message=str(status.get("message") or ""),
        last_request=last_request,
        webhooks=webhooks,
        step_labels=tuple(step_label(s) for s in steps),
        side_routes=tuple(r for side in SIDE_ROUTES if (r := side(spec, status, current)) is not None),
        readiness=_readiness(spec, status) if phase == "Progressing" else None,
        events=tuple(ordered[-MAX_EVENTS:]),
        now=now,
    )


def _readiness(spec: Mapping[str, Any], status: Mapping[str, Any]) -> ReadinessRow | None:
    record: Mapping[str, Any] | None = status.get("readiness")
    if not isinstance(record, Mapping):
        return None
    number = {k: _number(record.get(k)) for k in ("canaryReady", "stableReady", "needed")}
    return ReadinessRow(
        canary_ready=None if number["canaryReady"] is None else int(number["canaryReady"]),
        stable_ready=None if number["stableReady"] is None else int(number["stableReady"]),
        needed=None if number["needed"] is None else int(number["needed"]),
        waiting_since=parse_time(record.get("waitingSince")),
        timeout=_duration((spec.get("readiness") or {}).get("timeout")) or READINESS_DEFAULTS.timeout,
        message=str(record.get("message") or ""),
    )


def _ab_route(spec: Mapping[str, Any], status: Mapping[str, Any], step: Mapping[str, Any]) -> SideRoute | None:
    """The operator's A/B route while the VirtualService has it (status.matchRoute), with the step's match
    (unknown while the status is for an older generation: the route has the match that generation wrote)."""
    name = status.get("matchRoute")
    if not name:
        return None
    routes = (spec.get("virtualService") or {}).get("routes") or ()
    where = f" ahead of {routes[0]}" if routes else ""
    match = step.get("match")
    who = f"users with {describe_match(match)}" if match else "the users its match selects"
    canary = _destination(status.get("canary") or spec.get("canary"))
    return SideRoute("A/B", f"route {name}{where}: {who} -> canary {canary}")


def _mirror(spec: Mapping[str, Any], status: Mapping[str, Any], step: Mapping[str, Any]) -> SideRoute | None:
    """The operator's mirror on the owned route while the route has it (status.mirror.active), and whether
    the route's own mirror is kept beside it (status.mirror.saved) to be put back when it goes."""
    record = status.get("mirror")
    if not isinstance(record, Mapping) or not record.get("active"):
        return None
    route = record.get("route") or "the owned route"
    canary = _destination(status.get("canary") or spec.get("canary"))
    own = " (the route's own mirror kept, put back when the step ends)" if record.get("saved") else ""
    percent = _int(record.get("percent"), 0)
    return SideRoute("mirror", f"{route}: copies of {percent}% of its requests -> canary {canary}, 0% users{own}")


# What a running step adds to the routes, from the spec, the status and the current step (empty when the
# status is for an older generation): one function per kind of step that adds something.
SIDE_ROUTES: tuple[Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], SideRoute | None], ...] = (
    _ab_route,
    _mirror,
)


def fingerprint(obj: Mapping[str, Any], events: Iterable[EventRow]) -> tuple[Any, ...]:
    """What must change for a pipe watcher to print a new block: phase, step, weight, verdicts, events.

    Not the clock (time left ticks by itself) and not each check's fresh numbers while verdicts hold.
    """
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    check: Mapping[str, Any] = status.get("analysis") or {}
    return (
        meta.get("namespace"),
        meta.get("name"),
        meta.get("generation"),
        *(
            repr(status.get(k))
            for k in (
                "phase",
                "observedGeneration",
                "stepIndex",
                "canaryWeight",
                "matchRoute",
                "readiness",
                "rollback",
                "paused",
                "lastRequest",
            )
        ),
        check.get("verdict"),
        check.get("consecutiveFailures"),
        tuple((m.get("name"), m.get("verdict")) for m in check.get("metrics") or []),
        tuple((e.time, e.reason, e.count, e.message) for e in events),
    )


# --- formatting -----------------------------------------------------------------------------------


def format_seconds(value: timedelta) -> str:
    """1.2s, 45s, 2m05s, 1h02m: short enough for a status line."""
    seconds = value.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_hold(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds == int(seconds):
        whole = int(seconds)
        if whole % 3600 == 0 and whole:
            return f"{whole // 3600}h"
        if whole % 60 == 0 and whole:
            return f"{whole // 60}m"
        return format_seconds(value).replace(".0s", "s")
    return format_seconds(value)


def format_age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "?"
    return f"{format_seconds(max(timedelta(0), now - when))} ago"


def format_value(name: str, value: float | None) -> str:
    """A metric's value with the unit the operator's built-in metrics use."""
    if value is None:
        return "no data"
    if name.startswith(("success-rate", "traffic")):
        return f"{value:.4g} %"
    if name.startswith("latency-"):
        return f"{value:.4g} ms"
    return f"{value:.4g}"


def step_text(view: RolloutView) -> str:
    total = len(view.step_weights)
    if view.step is None:
        return f"step -/{total}"
    return f"step {view.step}/{total}"


def hold_text(view: RolloutView) -> str:
    if view.hold is None or view.phase != "Progressing":
        return ""
    if view.hold_left is None:
        return f"hold {format_hold(view.hold)}"
    if view.readiness is not None and view.readiness.waiting_since is not None:
        return f"hold {format_hold(view.hold)}, counts once the canary has its ready pods"
    if view.paused is not None:
        return f"hold {format_hold(view.hold)}, PAUSED with {format_seconds(view.hold_left)} left"
    if view.hold_left > timedelta(0):
        return f"hold {format_hold(view.hold)}, {format_seconds(view.hold_left)} left"
    if view.manual:
        passed = view.check_verdict == "Pass"
        return f"hold {format_hold(view.hold)} over, waiting for {'promote' if passed else 'a passing check, then promote'}"
    return f"hold {format_hold(view.hold)} over, waiting for a passing check"


def command(view: RolloutView, verb: str) -> str:
    """What a person runs to steer this Rollout (as core.steering.command)."""
    return f"coalmine {verb} {view.name} -n {view.namespace}" if view.namespace else f"coalmine {verb} {view.name}"


def waiting(view: RolloutView) -> tuple[str, str]:
    """A pause or a manual gate, and the command that releases it (("", "") when neither)."""
    if view.phase != "Progressing":
        return "", ""
    if canary := waiting_for_canary(view):
        return canary, f"the shift follows once they are ready; to give up now: {command(view, 'abort')}"
    if view.paused is not None:
        by = f" by {view.paused.by}" if view.paused.by else ""
        why = f" ({view.paused.reason})" if view.paused.reason else ""
        what = (
            f"paused{by} {format_age(view.paused.since, view.now)}{why}; checks continue and a failing canary is "
            "still rolled back"
        )
        return what, f"resume: {command(view, 'resume')}"
    if view.manual and view.hold_left is not None and view.hold_left <= timedelta(0):
        return f"step {view.step} waits for a person (approval: manual)", f"promote: {command(view, 'promote')}"
    return "", ""


def waiting_text(view: RolloutView) -> str:
    what, how = waiting(view)
    return f"{what}; {how}" if what else ""


def request_text(view: RolloutView) -> str:
    """The last request and what came of it (its message only when the status message is not that)."""
    r = view.last_request
    if r is None:
        return ""
    by = f" by {r.by}" if r.by else ""
    said = f": {r.message}" if r.message and r.message not in view.message else ""
    return f"{r.command}{by} {format_age(r.at, view.now)}: {r.result}{said}"


def webhook_text(record: Mapping[str, Any], now: datetime) -> str:
    """`confirm (pre-step) Fail HTTP 503 not yet, 3 calls, 4s ago` from one status.webhooks entry."""
    code = f" HTTP {record['code']}" if record.get("code") is not None else ""
    said = f" {record['message']}" if record.get("message") else ""
    calls = int(record.get("attempts") or 1)
    return (
        f"{record.get('name', '?')} ({record.get('type', '?')}) {record.get('result', '?')}{code}{said}, "
        f"{calls} call{'s' if calls != 1 else ''}, {format_age(parse_time(record.get('at')), now)}"
    )


def check_text(view: RolloutView) -> str:
    if view.check_verdict is None:
        return "no check yet"
    parts = [f"last check {view.check_verdict} {format_age(view.checked_at, view.now)}"]
    if view.window:
        parts.append(f"window {view.window}")
    if view.requests is not None:
        parts.append(f"{view.requests:.0f} canary requests")
    parts.append(f"{view.consecutive_failures}/{view.failure_limit} failed in a row")
    if view.no_data_since is not None and view.max_no_data is not None:
        parts.append(f"no data for {format_seconds(view.now - view.no_data_since)} of {format_hold(view.max_no_data)}")
    return ", ".join(parts)


def rollback_text(rb: RollbackRow, now: datetime) -> str:
    what = f"{rb.metric} {format_value(rb.metric, rb.value)}" if rb.metric else "no metric"
    threshold = f" (threshold {rb.threshold})" if rb.threshold else ""
    return f"rolled back ({rb.reason}): {what}{threshold}, {format_age(rb.at, now)}"


def steps_text(view: RolloutView) -> str:
    current = (view.step or 0) - 1
    labels = view.step_labels or tuple(str(w) for w in view.step_weights)
    return " → ".join(f"[{w}]" if i == current else w for i, w in enumerate(labels))


def readiness_text(view: RolloutView) -> str:
    """`canary 2 ready pods (needs 1), stable 4 ready`, or why they are not counted; "" without a record."""
    r = view.readiness
    if r is None:
        return ""
    if r.canary_ready is None:
        return r.message or "not checked: shifts do not wait for ready pods"
    needs = f" (needs {r.needed})" if r.needed is not None else ""
    stable = f", stable {r.stable_ready} ready" if r.stable_ready is not None else ""
    return f"canary {r.canary_ready} ready pod{'s' if r.canary_ready != 1 else ''}{needs}{stable}"


def waiting_for_canary(view: RolloutView) -> str:
    """While a shift waits for the canary's ready pods: how many, and when it rolls back ("" otherwise)."""
    r = view.readiness
    if r is None or r.waiting_since is None or r.deadline is None:
        return ""
    have = "?" if r.canary_ready is None else str(r.canary_ready)
    needs = f" of {r.needed} needed" if r.needed is not None else ""
    left = format_seconds(max(timedelta(0), r.deadline - view.now))
    return (
        f"WaitingForCanary: {have}{needs} ready canary pods, for {format_seconds(view.now - r.waiting_since)}; "
        f"rolls back in {left} (readiness.timeout {format_hold(r.timeout)}) unless they come"
    )


def text_bar(canary_weight: int, width: int = TEXT_BAR_WIDTH) -> str:
    canary = round(max(0, min(100, canary_weight)) * width / 100)
    return "[" + "#" * (width - canary) + "+" * canary + "]"


def short_message(message: str) -> str:
    """An event message without the PromQL the operator appends (the rollback line shows it once)."""
    return message.split("; query:", 1)[0]


def title(view: RolloutView) -> str:
    return f"{view.namespace}/{view.name}" if view.namespace else view.name


# --- plain text -----------------------------------------------------------------------------------


def to_lines(view: RolloutView) -> list[str]:
    """The view as plain text lines: for pipes, logs and the demo's non-interactive form."""
    stale = " (status is for an older generation)" if view.stale else ""
    head = ", ".join(
        p for p in (view.phase + stale, f"{step_text(view)} at {view.canary_weight}%", hold_text(view)) if p
    )
    routes = ",".join(view.routes) or "(only route)"
    lines = [
        f"{title(view)}: {head}",
        f"  traffic  route {routes}: stable {view.stable} {100 - view.canary_weight}% "
        f"{text_bar(view.canary_weight)} canary {view.canary} {view.canary_weight}%",
        f"  steps    {steps_text(view).replace('→', '->')}",
    ]
    lines += [f"  {side.kind:<8} {side.text}" for side in view.side_routes]
    if ready := readiness_text(view):
        lines.append(f"  ready    {ready}")
    if waiting := waiting_text(view):
        lines.append(f"  WAITING  {waiting}")
    lines.append(f"  check    {check_text(view)}")
    for m in view.metrics:
        reason = f"  ({m.reason})" if m.reason and m.verdict != "Pass" else ""
        lines.append(f"  metric   {m.label:<14} {m.shown():>12}  {m.threshold:<8} {m.verdict}{reason}")
    if view.rollback is not None:
        lines.append(f"  ROLLBACK {rollback_text(view.rollback, view.now)}")
        if view.rollback.query:
            lines.append(f"           query: {view.rollback.query}")
    elif view.message:
        lines.append(f"  message  {view.message}")
    if request := request_text(view):
        lines.append(f"  request  {request}")
    for _, hook in view.webhooks:
        lines.append(f"  webhook  {hook}")
    for e in view.events:
        lines.append(
            f"  event    {format_age(e.time, view.now):>10}  {e.type:<7} {e.reason:<15} {short_message(e.message)}"
        )
    return lines


def all_lines(views: Sequence[RolloutView], namespace: str | None) -> list[str]:
    if not views:
        return [f"no Rollouts in {'namespace ' + namespace if namespace else 'any namespace'}"]
    out: list[str] = []
    for view in views:
        out += [*to_lines(view), ""]
    return out[:-1]


# --- rich -----------------------------------------------------------------------------------------


def weight_bar(view: RolloutView, width: int = BAR_WIDTH) -> Text:
    canary = round(max(0, min(100, view.canary_weight)) * width / 100)
    bar = Text()
    bar.append(f"{view.stable} {100 - view.canary_weight:>3}% ", style=STABLE_STYLE)
    bar.append("█" * (width - canary), style=STABLE_STYLE)
    bar.append("▒" * canary, style=CANARY_STYLE)  # a different glyph, so the split reads without colour
    bar.append(f" {view.canary_weight:>3}% {view.canary}", style=CANARY_STYLE)
    return bar


def to_renderable(view: RolloutView) -> RenderableType:
    """The view as a rich Panel: weights bar, step and hold, metrics, rollback, events."""
    parts: list[RenderableType] = []
    head = Text()
    head.append(view.phase, style=PHASE_STYLE.get(view.phase, "bold"))
    if view.stale:
        head.append(" (status is for an older generation)", style="dim")
    head.append(f"   {step_text(view)}   ")
    head.append(steps_text(view), style="bold")
    if hold := hold_text(view):
        head.append(f"   {hold}", style="cyan")
    parts.append(head)
    routes = ", ".join(view.routes) or "the only route"
    parts.append(Text(f"route {routes}: stable █ / canary ▒", style="dim"))
    parts.append(weight_bar(view))
    for side in view.side_routes:
        parts.append(Text(f"{side.kind}: {side.text}", style=CANARY_STYLE, overflow="fold"))
    if ready := readiness_text(view):
        parts.append(Text(f"ready: {ready}", style="dim", overflow="fold"))
    what, how = waiting(view)
    if what:
        parts.append(Text(what, style="bold cyan", overflow="fold"))
        parts.append(Text(how, style="bold cyan"))

    check = Text(check_text(view), style=VERDICT_STYLE.get(view.check_verdict or "", "dim"))
    parts.append(check)
    if view.metrics:
        table = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold dim")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("threshold")
        table.add_column("verdict")
        table.add_column("why", overflow="fold")
        for m in view.metrics:
            table.add_row(
                m.label,
                m.shown(),
                m.threshold,
                Text(m.verdict, style=VERDICT_STYLE.get(m.verdict, "")),
                m.reason,
            )
        parts.append(table)
    if view.rollback is not None:
        rb = Text(rollback_text(view.rollback, view.now), style="bold red")
        parts.append(rb)
        if view.rollback.query:
            parts.append(Text(f"query: {view.rollback.query}", style="dim red", overflow="fold"))
    elif view.message:
        parts.append(Text(view.message, style="dim", overflow="fold"))
    if request := request_text(view):
        style = "red" if view.last_request is not None and view.last_request.result == "Refused" else "dim"
        parts.append(Text(f"last request: {request}", style=style, overflow="fold"))
    for result, hook in view.webhooks:
        parts.append(Text(f"webhook {hook}", style="dim" if result == "Pass" else "yellow", overflow="fold"))
    if view.events:
        events = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim", title_justify="left")
        events.add_column("age", justify="right", no_wrap=True)
        events.add_column("type", no_wrap=True)
        events.add_column("reason", no_wrap=True)
        events.add_column("message", overflow="fold")
        for e in view.events:
            style = "red" if e.type == "Warning" else ""
            events.add_row(format_age(e.time, view.now), Text(e.type, style=style), e.reason, short_message(e.message))
        parts.append(Text("events", style="bold dim"))
        parts.append(events)
    border = PHASE_STYLE.get(view.phase, "white").replace("bold ", "")
    return Panel(Group(*parts), title=title(view), title_align="left", border_style=border)


def all_renderable(views: Sequence[RolloutView], namespace: str | None) -> RenderableType:
    if not views:
        return Text(all_lines(views, namespace)[0], style="dim")
    return Group(*(to_renderable(v) for v in views))
