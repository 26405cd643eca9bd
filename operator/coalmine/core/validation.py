"""Resolve a Rollout against the VirtualService, DestinationRules and other Rollouts around it, before any write.

`resolve` is pure. It takes the objects as dicts (None when they do not exist) and returns a
`Resolution`: as much as could be resolved, in three stages, and the first `Problem` found.

1. routes:  the spec is valid, the VirtualService and the owned routes exist, no older Rollout owns
            them, and the canary's host is known. Gives the owned routes as they are now.
2. traffic: the stable is known (spec, status or inferred). Gives where weights are written.
3. target:  the DestinationRule defines both subsets with labels to select metrics by. Gives the queries.

A rollout whose canary subset vanished mid-step thus still knows its routes and its stable and can be
rolled back. Each guard raises `_Unresolved(problem)`; `resolve` turns it into the Resolution at its
edge. A Problem is `waiting` when it can resolve itself without a spec change (an object that does
not exist yet, a route another Rollout holds), `claimed` when another Rollout owns the route.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from coalmine.core import routes as routing
from coalmine.core.models import HTTP_ROUTE, VIRTUAL_SERVICE, Destination, Rollout, RolloutSpec, RouteRef, WebhookType

JsonDict = Mapping[str, Any]
TEMPLATE = re.compile(r"\{\{\s*([a-zA-Z_.]+)\s*\}\}")
TEMPLATE_VARIABLES = ("namespace", "window", "canary.host", "canary.version", "stable.host", "stable.version")


@dataclass(frozen=True)
class Problem:
    message: str
    waiting: bool = False
    claimed_by: str | None = None  # another Rollout owns the route: never write, wait for it to go
    preflight: bool = False  # the mesh lacks what the checks need (core/preflight.py): wait for it


class _Unresolved(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _fail(message: str, *, waiting: bool = False) -> _Unresolved:
    return _Unresolved(Problem(message, waiting=waiting))


@dataclass(frozen=True)
class Backend:
    """A destination with its host resolved (as the routes write it)."""

    host: str
    subset: str
    port: int | None = None

    def matches(self, destination: JsonDict, namespace: str) -> bool:
        return destination.get("subset", "") == self.subset and same_host(
            destination.get("host", ""), self.host, namespace
        )

    def is_entry(self, entry: routing.Entry, namespace: str) -> bool:
        return entry.subset == self.subset and same_host(entry.host, self.host, namespace)

    def __str__(self) -> str:
        return f"{self.host}/{self.subset}" if self.subset else self.host

    @property
    def label(self) -> str:
        """The subset, or the Service when it has none (HTTPRoute backends)."""
        return self.subset or self.host

    @staticmethod
    def of(destination: Destination, host: str) -> Backend:
        return Backend(host=host, subset=destination.subset, port=destination.port)


@dataclass(frozen=True)
class Share:
    host: str
    subset: str
    percent: int

    def __str__(self) -> str:
        where = f"{self.host}/{self.subset}" if self.subset else self.host
        return f"{where} {self.percent}%"

    def is_for(self, destination: Backend | Destination, namespace: str) -> bool:
        """A destination without host (spec.canary with the VirtualService's only host) matches any host."""
        host = destination.host or ""
        return self.subset == destination.subset and (not host or same_host(self.host, host, namespace))


@dataclass(frozen=True)
class RouteTraffic:
    """One owned route as found: where it is, and each destination's share of its traffic (Istio's
    relative weights as percent; a lone destination gets everything)."""

    name: str | None
    index: int
    shares: tuple[Share, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)  # the route as read

    @property
    def mirroring(self) -> dict[str, Any]:
        """Its mirror fields as read (MIRROR_KEYS)."""
        return mirror_fields(self.raw)

    @property
    def label(self) -> str:
        return self.name or "<unnamed>"

    def share(self, destination: Backend | Destination, namespace: str) -> int:
        return sum(s.percent for s in self.shares if s.is_for(destination, namespace))

    def serving(self) -> tuple[Share, ...]:
        return tuple(s for s in self.shares if s.percent > 0)


@dataclass(frozen=True)
class Traffic:
    """Where the operator writes weights: the owned routes, the stable and the canary."""

    namespace: str
    virtual_service: str  # the route object's name (a VirtualService, or an HTTPRoute with kind HTTP_ROUTE)
    routes: tuple[str | None, ...]  # route (rule) names; None = the object's only (unnamed) one
    stable: Backend
    canary: Backend
    kind: str = VIRTUAL_SERVICE

    @property
    def where(self) -> str:
        return f"{self.kind} {self.namespace}/{self.virtual_service}"


@dataclass(frozen=True)
class Side:
    """A destination resolved against the DestinationRule: how to select its metrics."""

    backend: Backend
    service_name: str  # short name, as Istio's destination_service_name label has it
    matchers: tuple[tuple[str, str], ...]  # metric label matchers beyond the defaults
    version: str | None  # the subset's `version` label, when it has one

    @property
    def host(self) -> str:
        return self.backend.host

    @property
    def subset(self) -> str:
        return self.backend.subset


@dataclass(frozen=True)
class Target:
    traffic: Traffic
    destination_rule: str
    stable: Side
    canary: Side
    shared_by: tuple[str, ...] = ()  # routes the Rollout does not own that also send to stable or canary

    @property
    def namespace(self) -> str:
        return self.traffic.namespace


@dataclass(frozen=True)
class Claim:
    """Another Rollout of the namespace, as far as route ownership goes."""

    name: str
    virtual_service: str  # the route object's name
    routes: tuple[str, ...]  # () = the object's only route
    created_at: datetime | None
    started: bool  # it has moved traffic on its routes (a canary is on record in its status)
    kind: str = VIRTUAL_SERVICE

    def rank(self) -> tuple[int, datetime, str]:
        """The owner of a route is the claimant with the smallest rank: one that has moved traffic,
        then the oldest, then the first by name. Every replica computes the same from the same objects."""
        return (0 if self.started else 1, self.created_at or datetime.max.replace(tzinfo=None), self.name)

    @staticmethod
    def from_body(body: JsonDict) -> Claim | None:
        """From a watched Rollout object; None when it names no route object (its spec is broken)."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        kind, ref, key = VIRTUAL_SERVICE, spec.get("virtualService"), "routes"
        if spec.get("httpRoute") is not None:
            kind, ref, key = HTTP_ROUTE, spec.get("httpRoute"), "rules"
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
            return None
        routes = ref.get(key) or ()
        created = meta.get("creationTimestamp")
        return Claim(
            name=str(meta.get("name", "")),
            virtual_service=ref["name"],
            routes=tuple(str(r) for r in routes) if isinstance(routes, list) else (),
            created_at=datetime.fromisoformat(created.replace("Z", "")) if isinstance(created, str) else None,
            started=bool((body.get("status") or {}).get("canary")),
            kind=kind,
        )

    @staticmethod
    def of(rollout: Rollout) -> Claim:
        route = rollout.spec.route
        return Claim(
            name=rollout.name,
            virtual_service=route.name,
            routes=route.routes,
            created_at=rollout.ref.created_at.replace(tzinfo=None) if rollout.ref.created_at else None,
            started=rollout.status.canary is not None,
            kind=route.kind,
        )


@dataclass(frozen=True)
class Workloads:
    """A namespace's Services, EndpointSlice endpoints and Pod labels, as the watch delivered them."""

    selectors: Mapping[str, bool]  # Service name -> it has a selector (so its pods are known)
    endpoints: Mapping[str, Sequence[tuple[bool, str | None]]]  # Service name -> (ready, Pod name) per endpoint
    pod_labels: Mapping[str, Mapping[str, str]]  # Pod name -> labels


@dataclass(frozen=True)
class Ready:
    """Ready pods of each side: ready endpoints of the host's Service whose Pod carries every label of
    the side's subset. None for a side whose host is not a Service with a selector in the Rollout's
    namespace (its pods cannot be counted; `why` says so)."""

    canary: int | None
    stable: int | None
    service: str = ""
    why: str = ""


@dataclass(frozen=True)
class Cluster:
    """What the Rollout's namespace holds: its route object (VirtualService or HTTPRoute), DestinationRules
    and the other Rollouts, and its workloads (None: not observed, so readiness is not judged)."""

    virtual_service: JsonDict | None  # the route object spec.route names
    destination_rules: Sequence[JsonDict] = ()
    claims: Sequence[Claim] = ()
    workloads: Workloads | None = None


@dataclass(frozen=True)
class Resolution:
    problem: Problem | None = None
    routes: tuple[RouteTraffic, ...] = ()  # stage 1: the owned routes as they are now
    canary: Backend | None = None  # stage 1
    traffic: Traffic | None = None  # stage 2
    servable: frozenset[str] = field(default_factory=frozenset)  # "stable"/"canary" with a subset in the DR
    target: Target | None = None  # stage 3
    ready: Ready | None = None  # with the target, when the workloads were observed


def short_host(host: str) -> str:
    return host.split(".", 1)[0]


def same_host(a: str, b: str, namespace: str) -> bool:
    """Whether two hosts name one service: `order`, `order.shop` and the FQDN are the same in `shop`."""

    def norm(host: str) -> str:
        parts = host.split(".")
        if len(parts) == 1:
            return f"{host}.{namespace}"
        return ".".join(parts[:2])

    return norm(a) == norm(b)


# --- stage 0: the spec alone ----------------------------------------------------------------------


def check_spec(spec: RolloutSpec) -> Problem | None:
    """What the CRD's schema and CEL rules also reject; repeated here for clusters with an older CRD."""
    try:
        _check_steps(spec)
        _check_analysis(spec)
        _check_webhooks(spec)
    except _Unresolved as exc:
        return exc.problem
    return None


MATCH_KEYS = frozenset(
    {
        "name",
        "uri",
        "scheme",
        "method",
        "authority",
        "headers",
        "queryParams",
        "withoutHeaders",
        "ignoreUriCase",
        "port",
    }
)
STRING_MATCH_KEYS = frozenset({"exact", "prefix", "regex"})


MIRROR_KEYS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirrors")  # an http route's mirror fields


def mirror_fields(route: JsonDict) -> dict[str, Any]:
    """The route's mirror fields as they are (absent ones left out)."""
    return {key: route[key] for key in MIRROR_KEYS if key in route}


def match_route_name(rollout_name: str) -> str:
    """The name of the route an A/B step inserts: the operator's, named after its Rollout."""
    return f"coalmine-{rollout_name}"


def _check_match(index: int, match: Sequence[JsonDict]) -> None:
    where = f"spec.steps[{index}].match"
    if not match:
        raise _fail(f"{where}: at least one match is needed")
    for position, block in enumerate(match):
        unknown = sorted(set(block) - MATCH_KEYS)
        if unknown:
            raise _fail(f"{where}[{position}]: {unknown[0]!r} is not supported (use {', '.join(sorted(MATCH_KEYS))})")
        if not set(block) - {"name"}:
            raise _fail(f"{where}[{position}]: an empty match would send every user to the canary")
        for key in ("headers", "queryParams", "withoutHeaders"):
            for name, cond in (block.get(key) or {}).items():
                if (
                    not isinstance(cond, Mapping)
                    or len(set(cond) & STRING_MATCH_KEYS) != 1
                    or set(cond) - STRING_MATCH_KEYS
                ):
                    raise _fail(f"{where}[{position}].{key}.{name}: needs exactly one of exact, prefix, regex")


def _check_steps(spec: RolloutSpec) -> None:
    if not spec.steps:
        raise _fail("spec.steps: at least one step is needed")
    weighted = False
    for index, step in enumerate(spec.steps):
        kinds = [k for k, v in (("weight", step.weight), ("match", step.match), ("mirror", step.mirror)) if v]
        if len(kinds) > 1:
            raise _fail(
                f"spec.steps[{index}]: a step has one of weight, match (A/B) or mirror, not both {kinds[0]} and {kinds[1]}"
            )
        if step.mirror is not None:
            if not 1 <= step.mirror <= 100:
                raise _fail(f"spec.steps[{index}].mirror: {step.mirror} is not a percent between 1 and 100")
            if weighted:
                raise _fail(f"spec.steps[{index}].mirror: mirror steps come before every weight step")
            continue
        if step.match is not None:
            if weighted:
                raise _fail(f"spec.steps[{index}].match: A/B steps come before every weight step")
            _check_match(index, step.match)
            continue
        weighted = True
    weights = [
        (index, step.weight) for index, step in enumerate(spec.steps) if step.match is None and step.mirror is None
    ]
    if not weights:
        raise _fail("spec.steps: at least one weight step is needed (the last has weight 100)")
    for position, (index, weight) in enumerate(weights):
        if not 1 <= weight <= 100:
            raise _fail(f"spec.steps[{index}].weight: {weight} is not between 1 and 100")
        if position and weight <= weights[position - 1][1]:
            raise _fail(f"spec.steps[{index}].weight: {weight} does not increase on {weights[position - 1][1]}")
    if weights[-1][1] != 100:
        raise _fail(f"spec.steps[{weights[-1][0]}].weight: the last step must be 100, not {weights[-1][1]}")
    for index, step in enumerate(spec.steps):
        if step.hold is not None and step.hold <= timedelta(0):
            raise _fail(f"spec.steps[{index}].hold: must be longer than 0")


def _check_analysis(spec: RolloutSpec) -> None:
    a = spec.analysis
    checks: list[tuple[bool, str]] = [
        (a.check_every > timedelta(0), "spec.analysis.checkEvery: must be longer than 0"),
        (a.check_every <= a.interval, "spec.analysis.checkEvery: must not be longer than interval"),
        (a.interval > timedelta(0), "spec.analysis.interval: must be longer than 0"),
        (a.max_no_data > timedelta(0), "spec.analysis.maxNoData: must be longer than 0"),
        (a.failure_limit >= 1, "spec.analysis.failureLimit: must be at least 1"),
        (a.min_requests >= 1, "spec.analysis.minRequests: must be at least 1"),
        (0 <= a.success_rate.min <= 100, "spec.analysis.successRate.min: must be between 0 and 100"),
        (0 < a.latency.quantile < 1, "spec.analysis.latency.quantile: must be between 0 and 1"),
        (a.latency.max_ms > 0, "spec.analysis.latency.maxMs: must be above 0"),
    ]
    for index, metric in enumerate(a.metrics):
        checks.append(
            (metric.min is not None or metric.max is not None, f"spec.analysis.metrics[{index}]: needs min or max")
        )
        unknown = [m.group(1) for m in TEMPLATE.finditer(metric.query) if m.group(1) not in TEMPLATE_VARIABLES]
        checks.append(
            (
                not unknown,
                f"spec.analysis.metrics[{index}].query: unknown variable {{{{ {', '.join(unknown)} }}}}; "
                f"known: {', '.join(TEMPLATE_VARIABLES)}",
            )
        )
    for ok, message in checks:
        if not ok:
            raise _fail(message)


def _check_webhooks(spec: RolloutSpec) -> None:
    seen: set[str] = set()
    for index, hook in enumerate(spec.webhooks):
        where = f"spec.webhooks[{index}]"
        if hook.name in seen:
            raise _fail(f"{where}.name: {hook.name!r} is used twice")
        seen.add(hook.name)
        if not hook.url.startswith(("http://", "https://")):
            raise _fail(f"{where}.url: must be an http:// or https:// URL, not {hook.url[:100]!r}")
        if hook.timeout <= timedelta(0):
            raise _fail(f"{where}.timeout: must be longer than 0")
        if hook.gating and hook.type is not WebhookType.DURING_STEP:
            raise _fail(f"{where}.gating: applies to during-step webhooks only, not {hook.type.value}")
    channels = [sub.channel for sub in spec.notify]
    for index, channel in enumerate(channels):
        if channel in channels[:index]:
            raise _fail(f"spec.notify[{index}].channel: {channel!r} is named twice")


# --- stage 1: the owned routes ----------------------------------------------------------------------


def _route_index(http: Sequence[JsonDict], name: str | None) -> int | None:
    return routing.index_in(http, name)


def route_index(vs: JsonDict, name: str | None, kind: str = VIRTUAL_SERVICE) -> int | None:
    return routing.rule_index(kind, vs, name)


def _listed(http: Sequence[JsonDict]) -> str:
    return ", ".join(str(r.get("name") or "<unnamed>") for r in http)


def _vs_name(namespace: str, spec: RolloutSpec) -> str:
    return f"{spec.route.kind} {namespace}/{spec.route.name}"


def _what(ref: RouteRef) -> str:
    """How one of the object's rules is called."""
    return "rule" if ref.kind == HTTP_ROUTE else "http route"


def _http_routes(spec: RolloutSpec, namespace: str, vs: JsonDict | None) -> list[JsonDict]:
    ref = spec.route
    if vs is None:
        raise _fail(f"{_vs_name(namespace, spec)} ({ref.field}.name) not found", waiting=True)
    http = routing.rules(ref.kind, vs)
    if not http:
        raise _fail(f"{_vs_name(namespace, spec)} has no {_what(ref)}s (spec.{routing.rules_key(ref.kind)} is empty)")
    return http


def _owned_names(spec: RolloutSpec, namespace: str, http: Sequence[JsonDict]) -> tuple[str | None, ...]:
    ref = spec.route
    if ref.routes:
        return tuple(ref.routes)
    if len(http) == 1:
        return (http[0].get("name"),)
    raise _fail(
        f"{ref.routes_field}: {_vs_name(namespace, spec)} has {len(http)} {_what(ref)}s ({_listed(http)}); "
        "name the ones this Rollout owns"
    )


def _owned_indices(
    spec: RolloutSpec, namespace: str, http: Sequence[JsonDict], names: Sequence[str | None]
) -> list[int]:
    ref = spec.route
    indices = []
    for position, name in enumerate(names):
        field_name = f"{ref.routes_field}[{position}]" if ref.routes else ref.field
        index = _route_index(http, name)
        if index is None:
            raise _fail(
                f"{field_name}: {_vs_name(namespace, spec)} has no {_what(ref)} named {name!r} "
                f"(" + ("rules" if ref.kind == HTTP_ROUTE else "routes") + f": {_listed(http)})"
            )
        why = routing.not_weighable(ref.kind, http[index])
        if why is not None:
            raise _fail(
                f"{field_name}: {_what(ref)} {name!r} of {_vs_name(namespace, spec)} has {why}, not destinations to weigh"
            )
        indices.append(index)
    return indices


def _unclaimed(rollout: Rollout, http: Sequence[JsonDict], owned: Sequence[int], claims: Sequence[Claim]) -> None:
    """Another Rollout naming one of the owned routes, and ranking first, owns it."""
    me = Claim.of(rollout)
    ref = rollout.spec.route
    # The namespace's other Rollouts on this route object, then ranked: sorting all of a namespace's claims
    # in every tick was a fifth of the operator's CPU with 1,000 Rollouts in a namespace.
    rivals = [c for c in claims if c.virtual_service == ref.name and c.kind == ref.kind and c.name != rollout.name]
    for other in sorted(rivals, key=Claim.rank):
        theirs = {_route_index(http, name) for name in (other.routes or (None,))}
        shared = sorted(i for i in owned if i in theirs)
        if shared and other.rank() < me.rank():
            names = ", ".join(str(http[i].get("name") or "<unnamed>") for i in shared)
            why = "it has moved traffic on it" if other.started else "it is older"
            raise _Unresolved(
                Problem(
                    f"{ref.field}: {_what(ref)} {names} of {_vs_name(rollout.namespace, rollout.spec)} "
                    f"is owned by Rollout {rollout.namespace}/{other.name} ({why}); this Rollout writes nothing "
                    "until that one is deleted or names other routes",
                    waiting=True,
                    claimed_by=other.name,
                )
            )


def _host_for(spec: RolloutSpec, namespace: str, field_name: str, dest: Destination, hosts: Sequence[str]) -> str:
    if spec.route.kind == HTTP_ROUTE:
        if not dest.host:
            raise _fail(f"spec.{field_name}.host: with spec.httpRoute, name the {field_name}'s Service")
        if dest.subset:
            raise _fail(
                f"spec.{field_name}.subset: with spec.httpRoute each version is a Service of its own "
                f"(backendRefs have no subsets); remove subset {dest.subset!r}"
            )
        return dest.host
    if not dest.subset:
        raise _fail(f"spec.{field_name}.subset: required with spec.virtualService (the DestinationRule subset)")
    if dest.host:
        return dest.host
    if len(hosts) == 1:
        return hosts[0]
    raise _fail(f"spec.{field_name}.host: {_vs_name(namespace, spec)} has {len(hosts)} hosts; say which one")


def _shares_of(kind: str, route: JsonDict) -> tuple[Share, ...]:
    found = routing.entries(kind, route)
    total = sum(e.weight for e in found)
    return tuple(
        Share(host=e.host, subset=e.subset, percent=round(100 * e.weight / total) if total else 0) for e in found
    )


def _shares(route: JsonDict) -> tuple[Share, ...]:
    return _shares_of(VIRTUAL_SERVICE, route)


# --- stage 2: the stable ------------------------------------------------------------------------------


def _infer_stable(
    routes: Sequence[RouteTraffic], canary: Backend, namespace: str, kind: str = VIRTUAL_SERVICE
) -> Destination:
    """With spec.stable omitted: the destination serving the owned routes now, besides the canary.

    Called once per generation (plan.start records the answer in status.stable), so a release in
    Git can change the canary subset alone and the last promoted version becomes the stable.
    """
    chosen: dict[str, tuple[str, str]] = {}
    for route in routes:
        others = [s for s in route.shares if not s.is_for(canary, namespace)]
        if not others:
            raise _fail(
                f"spec.stable: omitted, and http route {route.label!r} sends traffic only to the canary; name the stable"
            )
        best = max(others, key=lambda s: s.percent)
        chosen[route.label] = (best.host, best.subset)
    if kind == HTTP_ROUTE:
        hosts = {host for host, _ in chosen.values()}
        if len(hosts) == 1:
            return Destination(host=hosts.pop())
    if len(set(chosen.values())) > 1:
        listed = ", ".join(f"{name}: {host}/{subset}" for name, (host, subset) in chosen.items())
        raise _fail(f"spec.stable: omitted, and the routes are served by different destinations ({listed})")
    host, subset = next(iter(chosen.values()))
    if not subset:
        raise _fail("spec.stable: omitted, and the serving destination has no subset; name the stable")
    return Destination(host=host, subset=subset)


def _routes_reach(
    spec: RolloutSpec, namespace: str, routes: Sequence[RouteTraffic], stable: Backend, canary: Backend
) -> None:
    for route in routes:
        hosts = [s.host for s in route.shares]
        if not any(same_host(h, stable.host, namespace) or same_host(h, canary.host, namespace) for h in hosts):
            raise _fail(
                f"{spec.route.field}: {_what(spec.route)} {route.label!r} of {_vs_name(namespace, spec)} routes to "
                f"{', '.join(hosts) or 'nothing'}, not to {stable.host}"
            )


# --- stage 3: the DestinationRule and metric selection -------------------------------------------------


def rule_hosts(rollout: Rollout, vs: JsonDict | None) -> frozenset[str] | None:
    """The short host names whose DestinationRules `resolve` can look at: the spec's and the recorded
    stable's hosts, the VirtualService's hosts and every host its routes send to (a superset of the stable
    and canary it resolves). None: any rule (spec.destinationRule.name names one whatever its host)."""
    spec = rollout.spec
    if spec.destination_rule is not None:
        return None
    hosts = {d.host for d in (spec.stable, spec.canary, rollout.status.stable) if d is not None and d.host}
    vs_spec = (vs or {}).get("spec") or {}
    hosts.update(str(h) for h in vs_spec.get("hosts") or [])
    for rule in vs_spec.get("http") or []:
        for entry in (rule or {}).get("route") or []:
            hosts.add(str(((entry or {}).get("destination") or {}).get("host", "")))
    return frozenset(short_host(h) for h in hosts if h)


def _find_dr(spec: RolloutSpec, namespace: str, host: str, rules: Sequence[JsonDict]) -> JsonDict:
    if spec.destination_rule is not None:
        name = spec.destination_rule.name
        found = next((r for r in rules if r["metadata"]["name"] == name), None)
        if found is None:
            raise _fail(f"DestinationRule {namespace}/{name} (spec.destinationRule.name) not found", waiting=True)
        return found
    matching = [r for r in rules if same_host(r.get("spec", {}).get("host", ""), host, namespace)]
    if not matching:
        raise _fail(
            f"spec.destinationRule: omitted, and no DestinationRule in namespace {namespace} has host {host}",
            waiting=True,
        )
    if len(matching) > 1:
        names = ", ".join(sorted(r["metadata"]["name"] for r in matching))
        raise _fail(
            f"DestinationRules {names} in {namespace} all have host {host}; name one in spec.destinationRule.name"
        )
    return matching[0]


def _subset(dr: JsonDict, name: str) -> JsonDict | None:
    return next((s for s in (dr.get("spec", {}).get("subsets") or []) if s.get("name") == name), None)


def _servable(
    spec: RolloutSpec, namespace: str, rules: Sequence[JsonDict], backends: Mapping[str, Backend]
) -> frozenset[str]:
    """Which of stable and canary have their subset defined (Istio answers 503 for an undefined one)."""
    result = set()
    for role, backend in backends.items():
        try:
            dr = _find_dr(spec, namespace, backend.host, rules)
        except _Unresolved:
            continue
        if _subset(dr, backend.subset) is not None:
            result.add(role)
    return frozenset(result)


def _side(
    field_name: str,
    backend: Backend,
    dr: JsonDict,
    namespace: str,
    selector: Mapping[str, str] | None,
) -> Side:
    dr_name = f"DestinationRule {namespace}/{dr['metadata']['name']}"
    subset = _subset(dr, backend.subset)
    if subset is None:
        known = ", ".join(sorted(str(s.get("name")) for s in dr.get("spec", {}).get("subsets") or [])) or "none"
        raise _fail(
            f"spec.{field_name}.subset: {dr_name} defines no subset {backend.subset!r} (subsets: {known}); "
            "Istio would answer 503 for it"
        )
    version = (subset.get("labels") or {}).get("version")
    if selector:
        matchers = tuple(sorted(selector.items()))
    elif version:
        matchers = (("destination_version", version),)
    else:
        raise _fail(
            f"spec.{field_name}.subset: subset {backend.subset!r} of {dr_name} has no 'version' label to select its "
            f"metrics by; set spec.analysis.selector.{field_name}"
        )
    return Side(backend=backend, service_name=short_host(backend.host), matchers=matchers, version=version)


def _shared_by(http: Sequence[JsonDict], owned: Sequence[int], traffic: Traffic, mine: str = "") -> tuple[str, ...]:
    names = []
    for index, route in enumerate(http):
        if index in owned or route.get("name") == mine:
            continue
        found = routing.entries(traffic.kind, route)
        if any(b.is_entry(e, traffic.namespace) for e in found for b in (traffic.stable, traffic.canary)):
            names.append(str(route.get("name") or f"#{index}"))
    return tuple(names)


def _service_side(field_name: str, backend: Backend, selector: Mapping[str, str] | None) -> Side:
    """HTTPRoute: each version is a Service of its own, so its name selects its metrics."""
    matchers = tuple(sorted(selector.items())) if selector else ()
    return Side(backend=backend, service_name=short_host(backend.host), matchers=matchers, version=None)


def _target(spec: RolloutSpec, namespace: str, rules: Sequence[JsonDict], traffic: Traffic) -> Target:
    selector = spec.analysis.selector
    if traffic.kind == HTTP_ROUTE:
        return Target(
            traffic=traffic,
            destination_rule="",
            stable=_service_side("stable", traffic.stable, selector.stable),
            canary=_service_side("canary", traffic.canary, selector.canary),
        )
    dr = _find_dr(spec, namespace, traffic.stable.host, rules)
    stable = _side("stable", traffic.stable, dr, namespace, selector.stable)
    if not same_host(traffic.canary.host, traffic.stable.host, namespace):
        dr_canary = _find_dr(spec, namespace, traffic.canary.host, rules)  # a second service has its own
    else:
        dr_canary = dr
    canary = _side("canary", traffic.canary, dr_canary, namespace, selector.canary)
    return Target(traffic=traffic, destination_rule=dr["metadata"]["name"], stable=stable, canary=canary)


def host_namespace(host: str, namespace: str) -> str:
    """The namespace a host's Service lives in: `order` is in the Rollout's, `order.shop...` in shop."""
    parts = host.split(".")
    return parts[1] if len(parts) > 1 else namespace


def count_ready(workloads: Workloads, service: str, labels: Mapping[str, str]) -> int | None:
    """Ready endpoints of `service` whose Pod carries every one of `labels`, as istiod builds a subset's
    endpoints; an endpoint whose ready condition is unset counts as ready (the API's "unknown"). None
    when the Service does not exist or has no selector (its endpoints are not tied to pods)."""
    if not workloads.selectors.get(service):
        return None
    count = 0
    for ready, pod in workloads.endpoints.get(service, ()):
        have = workloads.pod_labels.get(pod or "", {})
        if ready and pod is not None and all(have.get(k) == str(v) for k, v in labels.items()):
            count += 1
    return count


def _ready(namespace: str, rules: Sequence[JsonDict], spec: RolloutSpec, target: Target, workloads: Workloads) -> Ready:
    counts: dict[str, int | None] = {}
    whys = []
    for role, side in (("canary", target.canary), ("stable", target.stable)):
        service = short_host(side.host)
        if host_namespace(side.host, namespace) != namespace:
            counts[role] = None
            whys.append(f"{role} host {side.host} is in another namespace")
            continue
        labels: Mapping[str, str] = {}  # an HTTPRoute's side is a whole Service (one per version)
        if target.traffic.kind != HTTP_ROUTE:
            dr = _find_dr(spec, namespace, side.host, rules)
            labels = (_subset(dr, side.subset) or {}).get("labels") or {}
        counts[role] = count_ready(workloads, service, labels)
        if counts[role] is None:
            whys.append(f"no Service {namespace}/{service} with a selector")
    service = f"{namespace}/{short_host(target.canary.host)}"
    return Ready(canary=counts["canary"], stable=counts["stable"], service=service, why="; ".join(dict.fromkeys(whys)))


# --- the edge ---------------------------------------------------------------------------------------------


def resolve(rollout: Rollout, cluster: Cluster) -> Resolution:
    """Resolve the Rollout's references as far as they go, and say exactly what stops them."""
    spec, namespace = rollout.spec, rollout.namespace
    kind = spec.route.kind
    try:
        _check_steps(spec)
        _check_analysis(spec)
        _check_webhooks(spec)
        http = _http_routes(spec, namespace, cluster.virtual_service)
        names = _owned_names(spec, namespace, http)
        owned = _owned_indices(spec, namespace, http, names)
        ab = next((i for i, step in enumerate(spec.steps) if step.match is not None), None)
        if ab is not None and kind == HTTP_ROUTE:
            raise _fail(f"spec.steps[{ab}].match: A/B steps need spec.virtualService (not built for an HTTPRoute)")
        if ab is not None and len(names) != 1:
            raise _fail(f"spec.steps[{ab}].match: an A/B step needs exactly one owned route, not {len(names)}")
        mirror = next((i for i, step in enumerate(spec.steps) if step.mirror is not None), None)
        if mirror is not None and kind == HTTP_ROUTE:
            raise _fail(
                f"spec.steps[{mirror}].mirror: mirror steps need spec.virtualService (the operator does not write "
                "Gateway API's RequestMirror filter)"
            )
        if mirror is not None and len(names) != 1:
            raise _fail(f"spec.steps[{mirror}].mirror: a mirror step needs exactly one owned route, not {len(names)}")
        mine = match_route_name(rollout.name)
        if mine in names:
            raise _fail(f"spec.virtualService.routes: {mine!r} is the name of this Rollout's own A/B route")
        _unclaimed(rollout, http, owned, cluster.claims)
        hosts: list[str] = list((cluster.virtual_service or {}).get("spec", {}).get("hosts") or [])
        canary = Backend.of(spec.canary, _host_for(spec, namespace, "canary", spec.canary, hosts))
    except _Unresolved as exc:
        return Resolution(problem=exc.problem)
    routes = tuple(
        RouteTraffic(name, i, _shares_of(kind, http[i]), http[i]) for name, i in zip(names, owned, strict=True)
    )

    try:
        recorded = rollout.status.stable if rollout.started else None
        stable_dest = spec.stable or recorded or _infer_stable(routes, canary, namespace, kind)
        stable = Backend.of(stable_dest, _host_for(spec, namespace, "stable", stable_dest, hosts))
        if same_host(stable.host, canary.host, namespace) and stable.subset == canary.subset:
            raise _fail(f"spec.canary: the canary is the stable destination ({canary.host}, {canary.subset})")
        _routes_reach(spec, namespace, routes, stable, canary)
    except _Unresolved as exc:
        return Resolution(problem=exc.problem, routes=routes, canary=canary)
    traffic = Traffic(namespace, spec.route.name, names, stable, canary, kind)
    if kind == HTTP_ROUTE:  # no subsets: a Service is servable as far as the route goes
        servable = frozenset({"stable", "canary"})
    else:
        servable = _servable(spec, namespace, cluster.destination_rules, {"stable": stable, "canary": canary})

    try:
        target = _target(spec, namespace, cluster.destination_rules, traffic)
        target = replace(target, shared_by=_shared_by(http, owned, traffic, match_route_name(rollout.name)))
    except _Unresolved as exc:
        return Resolution(problem=exc.problem, routes=routes, canary=canary, traffic=traffic, servable=servable)
    ready = None
    if cluster.workloads is not None:
        ready = _ready(namespace, cluster.destination_rules, spec, target, cluster.workloads)
    return Resolution(routes=routes, canary=canary, traffic=traffic, servable=servable, target=target, ready=ready)


def observe_routes(
    vs: JsonDict | None, names: Sequence[str | None], kind: str = VIRTUAL_SERVICE
) -> tuple[RouteTraffic, ...]:
    """The named routes as they are in `vs` now; () when the route object or any of them is gone."""
    if vs is None:
        return ()
    http = routing.rules(kind, vs)
    found = []
    for name in names:
        index = _route_index(http, name)
        if index is None:
            return ()
        found.append(RouteTraffic(name, index, _shares_of(kind, http[index]), http[index]))
    return tuple(found)


def share_of(routes: Sequence[RouteTraffic], destination: Backend | Destination, namespace: str) -> int | None:
    """The destination's share of the routes' traffic, in percent: the most any owned route gives it
    (they agree unless someone edited one). None when the routes are unknown."""
    if not routes:
        return None
    return max(route.share(destination, namespace) for route in routes)
