"""The Rollout resource as immutable data: spec, status and the values the core passes around.

These models mirror `crds/rollout.yaml` (field names, defaults) and are the only place where
defaults live on the Python side. They hold data only: no I/O, no clock, no kopf.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, model_validator
from pydantic.alias_generators import to_camel

REQUEST_ANNOTATION = "coalmine.dev/request"  # where `coalmine promote|abort|pause|resume|retry` put a request
REQUEST_KEYS = frozenset({"id", "verb", "full", "by", "reason", "at", "generation"})
MAX_REQUEST_ID, MAX_REASON = 64, 1024

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Go's time.Duration, the longest duration Kubernetes tools parse (2562047h47m16.854775807s): longer ones
# do not fit a timedelta, or put a deadline past the year 9999.
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("10s", "2m", "1h30m", "500ms") as the CRD's pattern allows."""
    if isinstance(text, timedelta):
        return text
    text = str(text).strip()
    pos, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 30s, 2m or 1h30m")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than the longest duration, 2562047h")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a duration the way a user would write it: 90s -> "1m30s", 0.5s -> "500ms"."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice: {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
Timestamp = Annotated[datetime, PlainSerializer(format_time, return_type=str)]


class Model(BaseModel):
    """Frozen, camelCase on the wire, snake_case in Python; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- spec -----------------------------------------------------------------------------------------


class VirtualServiceRef(Model):
    name: str
    routes: tuple[str, ...] = ()


class HTTPRouteRef(Model):
    """A Gateway API HTTPRoute whose rules split between two Services (one per version)."""

    name: str
    rules: tuple[str, ...] = ()  # rule names (rules[].name); () = the route's only rule


VIRTUAL_SERVICE, HTTP_ROUTE = "VirtualService", "HTTPRoute"


class RouteRef(Model):
    """The route object a Rollout steps, whichever router it is for."""

    kind: str  # VIRTUAL_SERVICE or HTTP_ROUTE
    name: str
    routes: tuple[str, ...] = ()  # owned http routes (VirtualService) or rules (HTTPRoute); () = the only one

    @property
    def field(self) -> str:
        """Where the spec names it, for messages."""
        return "spec.virtualService" if self.kind == VIRTUAL_SERVICE else "spec.httpRoute"

    @property
    def routes_field(self) -> str:
        return f"{self.field}.routes" if self.kind == VIRTUAL_SERVICE else f"{self.field}.rules"


class Destination(Model):
    host: str | None = None
    subset: str = ""  # "" with spec.httpRoute: the host is a Service of its own (one per version)
    port: int | None = None

    @property
    def label(self) -> str:
        """How messages name it: the subset, or the Service when there is none."""
        return self.subset or self.host or "?"


class DestinationRuleRef(Model):
    name: str


class Approval(enum.StrEnum):
    """Whether a step goes on by itself once its hold is over, or waits for a person's `promote`."""

    AUTO = "auto"
    MANUAL = "manual"


class Step(Model):
    weight: int = 0  # 0 only in an A/B step (match), which comes before every weight step
    match: tuple[dict[str, Any], ...] | None = None  # A/B: Istio HTTPMatchRequests; matching users go to the canary
    mirror: int | None = None  # mirror (shadow): percent of the owned route's requests copied to the canary, 0 % users
    hold: Duration | None = None
    approval: Approval = Approval.AUTO  # manual: after the hold, wait for `coalmine promote` (checks keep running)


DEFAULT_STEPS = (Step(weight=10), Step(weight=30), Step(weight=50), Step(weight=100))


class PrometheusRef(Model):
    address: str | None = None


# gRPC status codes by name (grpc/grpc doc/statuscodes.md): a gRPC request answered with any code but OK
# (0) is a failure, whatever its HTTP status (gRPC answers errors with HTTP 200), unless listed in
# successRate.grpcSuccessCodes.
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def _grpc_code(value: Any) -> str:
    """A gRPC code by name (NOT_FOUND) or number (5), as its number in Istio's grpc_response_status label."""
    if isinstance(value, int) and not isinstance(value, bool) and value in GRPC_CODES.values():
        return str(value)
    text = str(value).strip()
    if text.isdigit() and int(text) in GRPC_CODES.values():
        return str(int(text))
    if text.upper() in GRPC_CODES:
        return str(GRPC_CODES[text.upper()])
    raise ValueError(f"{value!r} is not a gRPC status code (a name such as NOT_FOUND, or 0 to 16)")


GrpcCode = Annotated[str, BeforeValidator(_grpc_code)]


class SuccessRate(Model):
    min: float = 99.0  # percent; the absolute guard rail
    max_drop_vs_stable: float | None = None  # percentage points below the stable's, on the same window
    grpc_success_codes: tuple[GrpcCode, ...] = ()  # gRPC codes besides OK that are not failures, as numbers

    @property
    def grpc_ok(self) -> tuple[str, ...]:
        """The grpc_response_status values that are not failures: OK and the listed ones, in order."""
        return tuple(sorted({"0", *self.grpc_success_codes}, key=int))


class Latency(Model):
    quantile: float = 0.99
    max_ms: float = 500.0  # the absolute guard rail
    max_ratio_vs_stable: float | None = None  # canary quantile / stable quantile, on the same window


class JudgeKind(enum.StrEnum):
    MANN_WHITNEY = "mannWhitney"


class Judge(Model):
    """A statistical comparison of canary and stable over per-interval samples of the step."""

    kind: JudgeKind = JudgeKind.MANN_WHITNEY
    confidence: float = 0.95
    min_samples: int = 8  # per side; fewer make the comparison Inconclusive


class Slo(Model):
    """Judge the canary as if promoted: its error budget burn rate over every window (multiwindow)."""

    objective: float  # percent of good requests, e.g. 99.9
    burn_rate: float = 14.4
    windows: tuple[Duration, ...] = (timedelta(minutes=1), timedelta(minutes=5))


class TrafficCheck(Model):
    """Does the mesh send the canary the share the routes give it?"""

    enabled: bool = True
    tolerance: float = 2.0  # percentage points, on top of the binomial margin (99 %) for the request count
    checks: int = 3  # far off this many checks in a row fails the check (TrafficMismatch)


class FailFast(Model):
    """Roll back on one check when its errors are overwhelming evidence, not after failureLimit checks."""

    enabled: bool = True
    confidence: float = 0.999  # a canary at the success-rate bound would show this many errors with p < 1 - this


class Selector(Model):
    canary: dict[str, str] | None = None
    stable: dict[str, str] | None = None


class CustomMetric(Model):
    name: str
    query: str
    min: float | None = None
    max: float | None = None
    dry_run: bool = False  # evaluated and shown, never rolls back: to trial a metric


class CircuitBreaker(Model):
    """The mesh's own refusals of the canary: 503s with response_flags UO, UH or URX (overflow, no healthy
    upstream, retries exhausted), reported by the caller's proxy, counted as failures in the success rate."""

    enabled: bool = True


class Analysis(Model):
    interval: Duration = timedelta(minutes=1)
    check_every: Duration = timedelta(seconds=10)
    prometheus: PrometheusRef = PrometheusRef()
    success_rate: SuccessRate = SuccessRate()
    latency: Latency = Latency()
    min_requests: int = 20
    failure_limit: int = 2
    max_no_data: Duration = timedelta(minutes=5)
    selector: Selector = Selector()
    metrics: tuple[CustomMetric, ...] = ()
    judge: Judge | None = None
    slo: Slo | None = None
    traffic_check: TrafficCheck = TrafficCheck()
    fail_fast: FailFast = FailFast()
    circuit_breaker: CircuitBreaker = CircuitBreaker()


class UnexpectedTraffic(enum.StrEnum):
    """What a start does when the owned routes are not served by the stable alone (nor by the canary alone)."""

    WAIT = "Wait"  # move nothing, say what was found, look again every RECHECK
    RESET = "Reset"  # start from the first step anyway: the routes get exactly stable and canary


class Capacity(enum.StrEnum):
    """How much ready capacity the canary needs before a shift, beyond readiness.minReady."""

    NONE = "none"  # minReady ready pods, whatever the weight
    PROPORTIONAL = "proportional"  # also the next weight's share of the stable's ready pods (rounded up)


class Readiness(Model):
    """Shifts wait for the canary to have ready pods (EndpointSlices of the destination's Service)."""

    min_ready: int = 1  # 0 turns the gate off
    capacity: Capacity = Capacity.NONE
    timeout: Duration = timedelta(minutes=10)  # waiting longer than this rolls back (WaitingForCanary)


class WebhookType(enum.StrEnum):
    """When a webhook is called, and what its answer does (core/hooks.py)."""

    PRE_ROLLOUT = "pre-rollout"  # before the first shift: a 2xx lets the rollout start
    PRE_STEP = "pre-step"  # before each later weight increase: a non-2xx holds the step
    DURING_STEP = "during-step"  # at every check: recorded; holds the step only with gating: true
    POST_ROLLOUT = "post-rollout"  # after Succeeded or RolledBack, once each: informational


class Webhook(Model):
    name: str
    type: WebhookType
    url: str
    timeout: Duration = timedelta(seconds=10)  # one call; for pre-rollout also the whole wait for a 2xx
    metadata: dict[str, str] = {}
    gating: bool = False  # during-step only: a failed call holds the step like a failed pre-step


class NotifyEvent(enum.StrEnum):
    """What a Rollout can ask to be told about (each is also an Event reason, but for WaitingForApproval)."""

    ROLLED_BACK = "RolledBack"
    SUCCEEDED = "Succeeded"
    WAITING_FOR_APPROVAL = "WaitingForApproval"
    NO_DATA = "NoData"
    INVALID = "Invalid"


class Subscription(Model):
    channel: str
    on: tuple[NotifyEvent, ...] = tuple(NotifyEvent)


class RolloutSpec(Model):
    virtual_service: VirtualServiceRef | None = None
    http_route: HTTPRouteRef | None = None  # instead of virtual_service (the CRD requires exactly one)
    stable: Destination | None = None  # omitted: whatever serves the routes when the generation starts
    canary: Destination
    destination_rule: DestinationRuleRef | None = None
    steps: tuple[Step, ...] = DEFAULT_STEPS
    analysis: Analysis = Analysis()
    on_unexpected_traffic: UnexpectedTraffic = UnexpectedTraffic.WAIT
    readiness: Readiness = Readiness()
    webhooks: tuple[Webhook, ...] = ()
    notify: tuple[Subscription, ...] = ()

    @model_validator(mode="after")
    def _one_route(self) -> RolloutSpec:
        if (self.virtual_service is None) == (self.http_route is None):
            raise ValueError("set exactly one of virtualService and httpRoute")
        return self

    def hold(self, index: int) -> timedelta:
        return self.steps[index].hold or self.analysis.interval

    @property
    def route(self) -> RouteRef:
        """The route object this Rollout steps (an HTTPRoute when spec.httpRoute is set)."""
        if self.http_route is not None:
            return RouteRef(kind=HTTP_ROUTE, name=self.http_route.name, routes=self.http_route.rules)
        if self.virtual_service is None:
            raise ValueError("spec: set virtualService or httpRoute")
        return RouteRef(kind=VIRTUAL_SERVICE, name=self.virtual_service.name, routes=self.virtual_service.routes)


# --- status ---------------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    PENDING = "Pending"  # waiting: for an object to exist, for another Rollout to release the route, for a fix
    PROGRESSING = "Progressing"  # stepping the canary weight and checking each step
    ROLLING_BACK = "RollingBack"  # rollback decided and recorded; the canary still has traffic until it moves
    SUCCEEDED = "Succeeded"  # the canary has all the traffic of the owned routes
    ROLLED_BACK = "RolledBack"  # the canary has 0 after a failed check, missing data or changed objects
    INVALID = "Invalid"  # the spec does not fit the cluster; nothing was written


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK})
STARTED_PHASES = frozenset({Phase.PROGRESSING, Phase.ROLLING_BACK, *TERMINAL_PHASES})


class Verdict(enum.StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    NO_DATA = "NoData"
    INCONCLUSIVE = "Inconclusive"  # a judge could not tell yet: holds the step, counts as neither
    SKIPPED = "Skipped"  # shown for information (a dry-run metric's own verdict is kept on it)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


FiniteFloat = Annotated[float | None, BeforeValidator(_finite_or_none)]


class MetricResult(Model):
    """One metric of one check: the number, the bound it was held to, and what that means."""

    name: str
    value: FiniteFloat = None
    stable_value: FiniteFloat = None  # the same query on the stable, for checks relative to it
    threshold: str = ""
    verdict: Verdict
    reason: str = ""
    query: str = ""
    stable_query: str = ""
    score: FiniteFloat = None  # a judge's statistic: a p-value, a burn rate
    dry_run: bool = False


class AnalysisStatus(Model):
    checked_at: Timestamp
    window: str
    verdict: Verdict
    consecutive_failures: int = 0
    no_data_since: Timestamp | None = None
    traffic_mismatches: int = 0  # checks in a row whose canary share was far from the routes' weight
    requests: FiniteFloat = None
    metrics: tuple[MetricResult, ...] = ()
    # The operator's own later check, when one was made and not written (a routine pass, plan._routine_pass):
    # in memory only, never on the wire. It moves the next check to its grid point, and nothing else:
    # every decision reads the recorded fields, as an operator restarted without it would.
    unrecorded_check: Timestamp | None = Field(default=None, exclude=True)

    @property
    def last_check(self) -> datetime:
        """When the last check of this Rollout ran, recorded or not: the next is due a checkEvery later."""
        return max(self.checked_at, self.unrecorded_check or self.checked_at)


class ReadinessStatus(Model):
    """Ready pods of each side as last seen (None: the host is not a Service with a selector here, so
    its pods cannot be counted and shifts are not gated), and a shift waiting for the canary's."""

    canary_ready: int | None = None
    stable_ready: int | None = None
    needed: int | None = None  # ready canary pods the next shift needs (while waiting) or the current weight
    waiting_since: Timestamp | None = None  # set while a shift waits for the canary (WaitingForCanary)
    message: str = ""


class MirrorStatus(Model):
    """The operator's mirror on the owned route during a mirror step (steps[].mirror), recorded before it is
    written (write-ahead) and kept until the route no longer has it.

    `saved` is the route's own mirror fields (`mirror`, `mirrorPercentage`, `mirrorPercent`, `mirrors`) as
    they were before the operator's, exactly as read ({} when it had none): what is put back, byte-equal,
    when the mirror is removed. `fields` is what the operator puts there while the step runs."""

    route: str | None = None  # the owned route's name (None: the VirtualService's only, unnamed route)
    percent: int
    saved: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, Any] = Field(default_factory=dict)
    previous: dict[str, Any] | None = None  # the operator's earlier fields, while the route may still have them
    active: bool = False  # the route has `fields`, as last written or seen (the step's hold counts from then)


class RollbackInfo(Model):
    reason: str  # FailureLimit, FailFast, NoData, ObjectsChanged, WaitingForCanary or Aborted
    by: str = ""  # who aborted (Aborted only)
    metric: str = ""
    value: FiniteFloat = None
    threshold: str = ""
    query: str = ""
    at: Timestamp
    message: str = ""  # where and why: "step 2/4 (30%): success-rate 79.8% < 99% ..."


class Request(Model):
    """A person's request to steer a rollout, as the CLI writes it in the annotation REQUEST_ANNOTATION.

    `problem` is set when the annotation could not be read as a request: it is then refused with that
    message (acknowledged once, under `id`, like any other)."""

    id: str
    verb: str = ""
    full: bool = False  # promote --full: to 100 % at once
    by: str = ""  # the user as the API server authenticated the CLI (SelfSubjectReview)
    reason: str = ""
    at: Timestamp | None = None  # when it was made (the CLI's clock)
    generation: int | None = None  # the metadata.generation it was made for
    problem: str = Field(default="", exclude=True)

    @property
    def command(self) -> str:
        return f"{self.verb} --full" if self.full else self.verb

    def to_annotation(self) -> str:
        """Compact JSON, the form `from_annotation` reads."""
        body = self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_annotation(cls, raw: str) -> Request:
        """Read the annotation strictly: a JSON object with only the known keys, each once, of the right
        type. Anything else is a Request with a `problem` (refused with that message), never an exception;
        without a usable id its id is a digest of the text, so it is acknowledged once all the same."""
        digest = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:16]
        try:
            body = json.loads(raw, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            return cls(id=digest, problem=f"annotation {REQUEST_ANNOTATION} cannot be read: {exc}")
        if not isinstance(body, dict):
            return cls(id=digest, problem=f"annotation {REQUEST_ANNOTATION} is not a JSON object")
        ident = body.get("id")
        if not isinstance(ident, str) or not 0 < len(ident) <= MAX_REQUEST_ID:
            ident = digest
        verb = body.get("verb") if isinstance(body.get("verb"), str) else ""
        unknown = sorted(set(body) - REQUEST_KEYS)
        if unknown:
            return cls(id=ident, verb=verb, problem=f"annotation {REQUEST_ANNOTATION}: unknown field {unknown[0]!r}")
        if ident == digest:
            return cls(
                id=ident,
                verb=verb,
                problem=f"annotation {REQUEST_ANNOTATION}: id must be a string of 1 to {MAX_REQUEST_ID} characters",
            )
        try:
            request = cls.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return cls(id=ident, verb=verb, problem=f"annotation {REQUEST_ANNOTATION}: {where}: {first['msg']}")
        if len(request.reason) > MAX_REASON:
            return request.model_copy(
                update={"problem": f"annotation {REQUEST_ANNOTATION}: reason is longer than {MAX_REASON} characters"}
            )
        return request


class HandledRequest(Request):
    """The last request the operator handled, which makes it handled exactly once."""

    handled_at: Timestamp
    result: str  # Applied or Refused
    message: str = ""


class HistoryEntry(Model):
    step_index: int
    weight: int
    started_at: Timestamp
    request: Request | None = None  # the request that made this entry (promote, abort, pause, resume, retry)

    @property
    def starts_step(self) -> bool:
        """The entry begins a step (a steering request that does not move on, such as pause, does not)."""
        return self.request is None or self.request.verb in ("promote", "retry")


class WebhookStatus(Model):
    """The last call of one webhook: what it was for (`key`), and its answer."""

    name: str
    type: WebhookType
    key: str  # what the call was for: g<generation>, g<gen>/s<step>/<step start>, ...; a new key starts over
    result: str  # Pass (2xx), Fail (anything else, no answer, a timeout), Refused (the allowlist)
    code: int | None = None  # the HTTP status, when there was one
    message: str = ""
    since: Timestamp  # the first call for this key (pre-rollout's timeout counts from it)
    at: Timestamp  # when this answer came
    attempts: int = 1  # calls made for this key


class NotificationStatus(Model):
    """One notification: queued with the transition it reports (write-ahead), delivered off the tick."""

    id: str  # <event>/<time>: one per event, so a restart never sends it twice once it is delivered
    event: NotifyEvent
    channel: str
    message: str
    details: dict[str, str] = {}  # release, weights, what failed (value, threshold, query), the command to see more
    at: Timestamp  # when the event happened
    result: str = "Pending"  # Pending, Delivered, Failed (retries exhausted, unknown channel)
    attempts: int = 0
    error: str = ""
    done_at: Timestamp | None = None


class Pause(Model):
    since: Timestamp
    by: str = ""
    reason: str = ""


class Condition(Model):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: Timestamp | None = None


class RolloutStatus(Model):
    phase: Phase | None = None
    observed_generation: int | None = None
    step_index: int | None = None
    step_label: str | None = None
    canary_weight: int | None = None
    step_started_at: Timestamp | None = None
    paused: Pause | None = None  # set while paused: no further increase (checks and rollback keep running)
    step_paused_for: Duration | None = None  # the current step's earlier pauses; its hold is longer by this
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    message: str | None = None
    traffic_retry_at: Timestamp | None = None  # a refused traffic write is tried again then, not before
    stable: Destination | None = None  # the stable this generation started with
    canary: Destination | None = None  # the canary canaryWeight is the share of (the last one started)
    history: tuple[HistoryEntry, ...] = ()
    last_request: HandledRequest | None = None  # acknowledges the request annotation: handled once, then ignored
    match_route: str | None = None  # the operator's A/B route in the VirtualService, as last written or seen
    mirror: MirrorStatus | None = None  # the operator's mirror on the owned route (written ahead of the route)
    rollback: RollbackInfo | None = None
    analysis: AnalysisStatus | None = None
    readiness: ReadinessStatus | None = None
    webhooks: tuple[WebhookStatus, ...] = ()  # the last call of each webhook (core/hooks.py)
    notifications: tuple[NotificationStatus, ...] = ()  # the newest, pending and sent (core/notify.py)
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def from_body(cls, status: Any) -> RolloutStatus:
        return cls.model_validate(status or {})


class Ref(Model):
    """Who a Rollout is, from its metadata alone: parsing this never fails on a bad spec."""

    namespace: str
    name: str
    uid: str = ""
    generation: int = 1
    resource_version: str = ""
    created_at: Timestamp | None = None

    @classmethod
    def from_body(cls, body: Any) -> Ref:
        meta = body.get("metadata", {})
        created = meta.get("creationTimestamp")
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=meta.get("generation", 1),
            resource_version=meta.get("resourceVersion", ""),
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else created,
        )


class Rollout(Model):
    """The parts of a Rollout object the operator reads, parsed once at the edge."""

    ref: Ref
    spec: RolloutSpec
    status: RolloutStatus
    request: Request | None = None  # the steering request annotation, handled or not

    @classmethod
    def from_body(cls, body: Any) -> Rollout:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        raw = annotations.get(REQUEST_ANNOTATION)
        return cls(
            ref=Ref.from_body(body),
            spec=RolloutSpec.model_validate(body.get("spec") or {}),
            status=RolloutStatus.from_body(body.get("status")),
            request=Request.from_annotation(raw) if isinstance(raw, str) else None,
        )

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def generation(self) -> int:
        return self.ref.generation

    @property
    def started(self) -> bool:
        """This generation has begun moving traffic (its stable and canary are on record)."""
        return self.status.observed_generation == self.generation and self.status.phase in STARTED_PHASES
