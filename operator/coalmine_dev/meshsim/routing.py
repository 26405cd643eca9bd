"""Istio HTTP routing as meshsim models it: pure functions over VirtualService/DestinationRule dicts.

Why it exists: meshsim must split simulated traffic exactly the way the *current* VirtualService
says, because that split is what coalmine's analysis reads back from Prometheus. Keeping the
routing rules here, free of I/O, lets them be tested table-driven and reasoned about alone.

What it must not do: talk to the API server, read clocks, keep state, or draw randomness from
anywhere but the `random.Random` it is handed.

Modelled (the subset of Istio's semantics coalmine relies on):
- A VirtualService applies to a service when one of its `hosts` resolves to the service's FQDN
  (short names resolve in the VS's namespace) and it is bound to the mesh (`gateways` empty or
  containing `mesh`). Several VSs for one host conflict in Istio; meshsim takes the oldest
  (creationTimestamp, then namespace/name), as Istio does for conflicting mesh VSs.
- `http[]` is ordered and the first route whose `match` list matches wins. A route with no
  `match` matches everything. Match blocks are OR-ed, conditions inside a block are AND-ed.
  Supported conditions: `headers.<name>.{exact,prefix,regex}` (an empty match means "present"),
  `uri.{exact,prefix,regex}` and `method.{...}`. `regex` is a full match, as RE2 in Envoy.
  A block with any other condition (sourceLabels, port, queryParams, ...) never matches: the
  simulated request has no such attribute, and over-matching would hide routing mistakes.
- Weights are relative: each destination gets `weight / sum(weights)`; weight 0 gets nothing.
  A route with a single destination gets all traffic whatever its weight. An unset weight
  counts as 0, as in Istio. If several destinations all weigh 0 (Istio's webhook rejects
  this; a bare CRD schema does not), meshsim does not guess a split: the request is a no-route
  (404 NR), so an operator bug that writes 0/0 shows up as errors instead of being hidden.
- A route without `route[]` (redirect, directResponse, delegate) is not simulated: a request
  that hits it is a no-route (404 NR).
- The destination's `version` comes from the DestinationRule subset's `labels.version`, as
  Istio takes `destination_version` from the pod labels the subset selects. A destination that
  names a subset which no DestinationRule defines fails like Envoy's missing cluster:
  503 with response flag `NC` (upstream cluster not found), seen only by the source reporter.
  A destination without a subset has version "unknown" (meshsim does not know the pods).
- Ready endpoints (see `endpoints.py` for the rule): when meshsim follows the destination's
  Service, a destination (its subset, or the whole Service without one) that has no ready
  endpoint fails like Envoy with no healthy upstream: 503 with response flag `UH`, seen only by
  the source reporter. Hosts meshsim does not follow are treated as served.
- DestinationRule lookup for a host: a DR in the client's namespace, then the service's
  namespace, then any other, oldest first.
- Mirrors: the selected route's `mirror` (with `mirrorPercentage`, else the deprecated `mirrorPercent`,
  else 100 %) and each entry of `mirrors` (`destination`, `percentage`, default 100 %) copy the request
  to their destination with that probability. A copy is routed like a request (subset, ready endpoints)
  and listed in `Decision.mirrors`; what becomes of it (reported by the destination alone, never a user
  response) is the runtime's business.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from coalmine_dev.meshsim import gateway
from coalmine_dev.meshsim.endpoints import EMPTY, EndpointIndex

CLUSTER_DOMAIN = "svc.cluster.local"

# Outcomes, named after what Envoy reports.
OK = "ok"
NO_ROUTE = "no_route"  # 404, response_flags NR
NO_CLUSTER = "no_cluster"  # 503, response_flags NC
NO_HEALTHY_UPSTREAM = "no_healthy_upstream"  # 503, response_flags UH
OVERFLOW = "overflow"  # 503, response_flags UO: the caller's circuit breaker (connectionPool) is full

_SUPPORTED_MATCH_KEYS = frozenset({"name", "headers", "uri", "method"})


@dataclass(frozen=True)
class Request:
    """The attributes of one simulated request that routing looks at."""

    headers: Mapping[str, str] = field(default_factory=dict)
    uri: str = "/"
    method: str = "GET"


@dataclass(frozen=True)
class Destination:
    """Where a request ended up: a service (namespace + short host) and a subset."""

    namespace: str
    host: str  # short service name
    subset: str  # "" when the route names no subset
    version: str  # DR subset's labels.version, or "unknown"
    workload: str = ""  # the Deployment (or other controller) owning its ready pods, "" when unknown

    @property
    def key(self) -> str:
        """`<namespace>/<host>/<subset>`, the key meshsim's config and counts use."""
        return f"{self.namespace}/{self.host}/{self.subset}"

    @property
    def fqdn(self) -> str:
        return f"{self.host}.{self.namespace}.{CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class Decision:
    """The routing result for one request."""

    outcome: str  # OK, NO_ROUTE, NO_CLUSTER or NO_HEALTHY_UPSTREAM
    destination: Destination | None  # set for OK, NO_CLUSTER and NO_HEALTHY_UPSTREAM
    route: str | None  # "<vs namespace>/<vs name>/<route name or #index>", None without a route
    mirrors: tuple[Decision, ...] = ()  # the copies the route's mirrors made of this request (see the module doc)

    @property
    def response_code(self) -> int | None:
        """The code Envoy itself answers with, or None when the request reaches the destination."""
        return {NO_ROUTE: 404, NO_CLUSTER: 503, NO_HEALTHY_UPSTREAM: 503, OVERFLOW: 503}.get(self.outcome)

    @property
    def response_flags(self) -> str:
        return {NO_ROUTE: "NR", NO_CLUSTER: "NC", NO_HEALTHY_UPSTREAM: "UH", OVERFLOW: "UO"}.get(self.outcome, "-")


def fqdn(name: str, namespace: str) -> str:
    """Resolve a Kubernetes service name relative to `namespace`, as Istio does for VS/DR hosts."""
    name = name.rstrip(".")
    if name.endswith("." + CLUSTER_DOMAIN):
        return name
    if name.endswith(".svc"):
        return name + ".cluster.local"
    if name.count(".") == 1:  # "<name>.<namespace>"
        return f"{name}.{CLUSTER_DOMAIN}"
    if "." not in name:
        return f"{name}.{namespace}.{CLUSTER_DOMAIN}"
    return name  # some other FQDN (an external host): left as is


def split_fqdn(host_fqdn: str) -> tuple[str, str]:
    """`reviews.demo.svc.cluster.local` -> ("demo", "reviews"); other names -> ("unknown", name)."""
    suffix = "." + CLUSTER_DOMAIN
    if host_fqdn.endswith(suffix):
        parts = host_fqdn[: -len(suffix)].split(".")
        if len(parts) == 2:
            return parts[1], parts[0]
    return "unknown", host_fqdn


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = obj.get("spec") or {}
    return spec


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = _meta(obj)
    # RFC 3339 timestamps in UTC sort correctly as strings; objects without one sort last.
    return (
        str(meta.get("creationTimestamp") or "~"),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
    )


def find_virtual_service(
    virtual_services: Iterable[Mapping[str, Any]], namespace: str, host: str
) -> Mapping[str, Any] | None:
    """The mesh VirtualService that applies to service `host` in `namespace`, or None."""
    target = fqdn(host, namespace)
    candidates = []
    for vs in virtual_services:
        spec = _spec(vs)
        gateways = spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            continue
        vs_namespace = str(_meta(vs).get("namespace", "default"))
        if any(fqdn(str(h), vs_namespace) == target for h in spec.get("hosts") or []):
            candidates.append(vs)
    return min(candidates, key=_age_key) if candidates else None


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def string_matches(match: Mapping[str, Any] | None, value: str | None) -> bool:
    """Istio's StringMatch: exact, prefix or (full-match) regex; an empty match means "present"."""
    if value is None:
        return False
    if not match:
        return True
    if "exact" in match:
        return value == str(match["exact"])
    if "prefix" in match:
        return value.startswith(str(match["prefix"]))
    if "regex" in match:
        compiled = _compile(str(match["regex"]))
        return compiled is not None and compiled.fullmatch(value) is not None
    return True


def block_matches(block: Mapping[str, Any], request: Request) -> bool:
    """One HTTPMatchRequest: every condition in it must hold."""
    if set(block) - _SUPPORTED_MATCH_KEYS:
        return False
    headers = {k.lower(): v for k, v in request.headers.items()}
    for name, cond in (block.get("headers") or {}).items():
        if not string_matches(cond, headers.get(str(name).lower())):
            return False
    if "uri" in block and not string_matches(block["uri"], request.uri):
        return False
    return not ("method" in block and not string_matches(block["method"], request.method))


def route_matches(route: Mapping[str, Any], request: Request) -> bool:
    blocks: Sequence[Mapping[str, Any]] = route.get("match") or []
    return not blocks or any(block_matches(b, request) for b in blocks)


def select_http_route(vs: Mapping[str, Any], request: Request) -> tuple[int, Mapping[str, Any]] | None:
    """The first `http[]` route that matches the request (index, route), or None."""
    for index, route in enumerate(_spec(vs).get("http") or []):
        if route_matches(route, request):
            return index, route
    return None


def route_label(vs: Mapping[str, Any], index: int, route: Mapping[str, Any]) -> str:
    meta = _meta(vs)
    name = route.get("name") or f"#{index}"
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}/{name}"


def _weight(dest: Mapping[str, Any]) -> int:
    try:
        return max(0, int(dest.get("weight") or 0))
    except (TypeError, ValueError):
        return 0


def choose_destination(destinations: Sequence[Mapping[str, Any]], rng: random.Random) -> Mapping[str, Any] | None:
    """Pick one HTTPRouteDestination by relative weight (see the module docstring for the edge cases)."""
    if not destinations:
        return None
    if len(destinations) == 1:
        return destinations[0]
    weights = [_weight(d) for d in destinations]
    total = sum(weights)
    if total <= 0:
        return None
    point = rng.random() * total
    for dest, weight in zip(destinations, weights, strict=True):
        if point < weight:
            return dest
        point -= weight
    # Floating-point edge: fall back to the last destination that has any weight.
    last: Mapping[str, Any] = [d for d, w in zip(destinations, weights, strict=True) if w > 0][-1]
    return last


def find_destination_rule(
    destination_rules: Iterable[Mapping[str, Any]], host_fqdn: str, client_namespace: str
) -> Mapping[str, Any] | None:
    service_namespace, _ = split_fqdn(host_fqdn)
    candidates = [
        dr
        for dr in destination_rules
        if fqdn(str(_spec(dr).get("host", "")), str(_meta(dr).get("namespace", "default"))) == host_fqdn
    ]

    def precedence(dr: Mapping[str, Any]) -> tuple[int, tuple[str, str, str]]:
        ns = _meta(dr).get("namespace")
        rank = 0 if ns == client_namespace else 1 if ns == service_namespace else 2
        return rank, _age_key(dr)

    return min(candidates, key=precedence) if candidates else None


def subset_labels(
    destination_rules: Iterable[Mapping[str, Any]], host_fqdn: str, subset: str, client_namespace: str
) -> Mapping[str, str] | None:
    """The subset's `labels` ({} if it has none), or None when no DR defines the subset."""
    dr = find_destination_rule(destination_rules, host_fqdn, client_namespace)
    if dr is None:
        return None
    for s in _spec(dr).get("subsets") or []:
        if s.get("name") == subset:
            return {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
    return None


def subset_version(
    destination_rules: Iterable[Mapping[str, Any]], host_fqdn: str, subset: str, client_namespace: str
) -> str | None:
    """The subset's `labels.version` ("unknown" if it has none), or None when no DR defines the subset."""
    labels = subset_labels(destination_rules, host_fqdn, subset, client_namespace)
    return None if labels is None else labels.get("version", "unknown")


def route_request(
    virtual_services: Sequence[Mapping[str, Any]],
    destination_rules: Sequence[Mapping[str, Any]],
    namespace: str,
    host: str,
    request: Request,
    rng: random.Random,
    client_namespace: str | None = None,
    endpoints: EndpointIndex = EMPTY,
    http_routes: Sequence[Mapping[str, Any]] = (),
) -> Decision:
    """Route one request addressed to service `host` in `namespace` (the whole pipeline).

    Returns a NO_ROUTE decision with `route=None` when no VirtualService applies: meshsim only
    simulates traffic it can route (it does not know the pods behind a bare Service); the
    runtime skips such services rather than inventing versions. `endpoints` holds the ready
    endpoints of the Services meshsim follows (none by default: every destination is served).
    """
    client_ns = client_namespace or namespace
    http_route = gateway.find_http_route(http_routes, namespace, host)
    if http_route is not None:  # a mesh HTTPRoute for the Service (see gateway.py)
        return _route_by_http_route(http_route, host, request, rng, endpoints)
    vs = find_virtual_service(virtual_services, namespace, host)
    if vs is None:
        return Decision(NO_ROUTE, None, None)
    selected = select_http_route(vs, request)
    if selected is None:
        return Decision(NO_ROUTE, None, route_label(vs, -1, {"name": "<no match>"}))
    index, route = selected
    label = route_label(vs, index, route)
    chosen = choose_destination(route.get("route") or [], rng)
    if chosen is None:
        return Decision(NO_ROUTE, None, label)
    vs_namespace = str(_meta(vs).get("namespace", "default"))
    decision = _to_destination(
        chosen.get("destination") or {}, host, vs_namespace, destination_rules, client_ns, endpoints, label
    )
    copies = tuple(
        _to_destination(dest, host, vs_namespace, destination_rules, client_ns, endpoints, label)
        for dest, percent in mirror_policies(route)
        if rng.random() * 100 < percent
    )
    return replace(decision, mirrors=copies) if copies else decision


def mirror_policies(route: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], float]]:
    """(destination, percent) of each mirror of an http route, as Istio reads `mirror` and `mirrors`."""
    found: list[tuple[Mapping[str, Any], float]] = []
    if route.get("mirror"):
        percent: Any = 100.0
        if "mirrorPercentage" in route:
            percent = (route.get("mirrorPercentage") or {}).get("value", 0.0)
        elif "mirrorPercent" in route:
            percent = route["mirrorPercent"]
        found.append((route["mirror"], float(percent or 0.0)))
    for policy in route.get("mirrors") or []:
        if policy.get("destination"):
            value = (policy.get("percentage") or {}).get("value", 0.0) if "percentage" in policy else 100.0
            found.append((policy["destination"], float(value or 0.0)))
    return found


def _to_destination(
    dest: Mapping[str, Any],
    host: str,
    vs_namespace: str,
    destination_rules: Sequence[Mapping[str, Any]],
    client_ns: str,
    endpoints: EndpointIndex,
    label: str,
) -> Decision:
    """Where a route's destination (or mirror) sends a request: its subset's version and ready endpoints."""
    dest_fqdn = fqdn(str(dest.get("host", host)), vs_namespace)
    dest_namespace, dest_host = split_fqdn(dest_fqdn)
    subset = str(dest.get("subset") or "")
    labels: Mapping[str, str] | None = None
    version = "unknown"
    if subset:
        labels = subset_labels(destination_rules, dest_fqdn, subset, client_ns)
        if labels is None:
            return Decision(NO_CLUSTER, Destination(dest_namespace, dest_host, subset, "unknown"), label)
        version = labels.get("version", "unknown")
    if endpoints.ready_count(dest_namespace, dest_host, labels) == 0:
        return Decision(NO_HEALTHY_UPSTREAM, Destination(dest_namespace, dest_host, subset, version), label)
    workload = endpoints.workload(dest_namespace, dest_host, labels) or ""
    return Decision(OK, Destination(dest_namespace, dest_host, subset, version, workload), label)


def _route_by_http_route(
    route: Mapping[str, Any], host: str, request: Request, rng: random.Random, endpoints: EndpointIndex
) -> Decision:
    meta = _meta(route)
    route_ns = str(meta.get("namespace", "default"))
    selected = gateway.select_rule(route, request.headers, request.uri)
    if selected is None:
        return Decision(NO_ROUTE, None, f"{route_ns}/{meta.get('name', '')}/<no match>")
    index, rule = selected
    label = f"{route_ns}/{meta.get('name', '')}/{rule.get('name') or f'#{index}'}"
    chosen = gateway.choose_backend(rule.get("backendRefs") or [], rng)
    if chosen is None:
        return Decision(NO_ROUTE, None, label)
    dest_ns, dest_host = str(chosen.get("namespace") or route_ns), str(chosen.get("name", host))
    version = gateway.version_of(endpoints, dest_ns, dest_host)
    if endpoints.ready_count(dest_ns, dest_host, None) == 0:
        return Decision(NO_HEALTHY_UPSTREAM, Destination(dest_ns, dest_host, "", version), label)
    workload = endpoints.workload(dest_ns, dest_host, None) or ""
    return Decision(OK, Destination(dest_ns, dest_host, "", version, workload), label)


class MeshIndex:
    """The VirtualService and DestinationRules that can matter to each service, from one snapshot.

    `route_request` scans every VirtualService and DestinationRule it is given; meshsim at 1,000
    services did that for every simulated request. The index narrows the lists to the candidates
    (the mesh VirtualServices whose hosts resolve to the service, and the DestinationRules of the
    hosts their routes name), so routing over the narrowed lists decides exactly as over all of them.
    """

    def __init__(self, virtual_services: Iterable[Mapping[str, Any]], destination_rules: Iterable[Mapping[str, Any]]):
        self._virtual_services: dict[str, list[Mapping[str, Any]]] = {}
        for vs in virtual_services:
            spec = _spec(vs)
            gateways = spec.get("gateways") or []
            if gateways and "mesh" not in gateways:
                continue
            vs_namespace = str(_meta(vs).get("namespace", "default"))
            for target in {fqdn(str(h), vs_namespace) for h in spec.get("hosts") or []}:
                self._virtual_services.setdefault(target, []).append(vs)
        self._rules: dict[str, list[Mapping[str, Any]]] = {}
        for dr in destination_rules:
            target = fqdn(str(_spec(dr).get("host", "")), str(_meta(dr).get("namespace", "default")))
            self._rules.setdefault(target, []).append(dr)
        self._cache: dict[tuple[str, str], tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}

    def for_service(self, namespace: str, host: str) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """(virtual services, destination rules) to route requests to `host` in `namespace` with."""
        key = (namespace, host)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        candidates = self._virtual_services.get(fqdn(host, namespace), [])
        vs = min(candidates, key=_age_key) if candidates else None
        rules: list[Mapping[str, Any]] = []
        if vs is not None:
            vs_namespace = str(_meta(vs).get("namespace", "default"))
            hosts: set[str] = set()
            for route in _spec(vs).get("http") or []:
                for dest in route.get("route") or []:
                    hosts.add(fqdn(str((dest.get("destination") or {}).get("host", host)), vs_namespace))
                for mirror, _ in mirror_policies(route):
                    hosts.add(fqdn(str(mirror.get("host", host)), vs_namespace))
            rules = [dr for target in sorted(hosts) for dr in self._rules.get(target, [])]
        cached = ([vs] if vs is not None else [], rules)
        self._cache[key] = cached
        return cached
