"""Check a Rollout against the VirtualService and DestinationRule it names, before any write.

`resolve` is pure: it takes the objects as dicts (or None when they do not exist) and returns
either a `Target` (everything the operator needs to write weights and query metrics) or a
`Problem` naming the object and the field. A Problem is `waiting` when it can resolve itself
without a spec change (the VirtualService or DestinationRule does not exist yet, as happens
when Git applies the Rollout first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from coalmine.models import Destination, RolloutSpec

JsonDict = Mapping[str, Any]
TEMPLATE = re.compile(r"\{\{\s*([a-zA-Z_.]+)\s*\}\}")
TEMPLATE_VARIABLES = ("namespace", "window", "canary.host", "canary.version", "stable.host", "stable.version")


@dataclass(frozen=True)
class Problem:
    message: str
    waiting: bool = False


@dataclass(frozen=True)
class Side:
    """A destination resolved against the VirtualService and DestinationRule."""

    host: str  # as the routes write it
    subset: str
    port: int | None
    service_name: str  # short name, as Istio's destination_service_name label has it
    matchers: tuple[tuple[str, str], ...]  # metric label matchers beyond the defaults
    version: str | None  # the subset's `version` label, when it has one


@dataclass(frozen=True)
class Target:
    namespace: str
    virtual_service: str
    routes: tuple[str | None, ...]  # route names; None = the VS's only (unnamed) route
    destination_rule: str
    stable: Side
    canary: Side


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


def check_spec(spec: RolloutSpec) -> Problem | None:
    """What the CRD's schema and CEL rules also reject; repeated here for clusters with an older CRD."""
    weights = [step.weight for step in spec.steps]
    if not weights:
        return Problem("spec.steps: at least one step is needed")
    for index, weight in enumerate(weights):
        if not 1 <= weight <= 100:
            return Problem(f"spec.steps[{index}].weight: {weight} is not between 1 and 100")
        if index and weight <= weights[index - 1]:
            return Problem(f"spec.steps[{index}].weight: {weight} does not increase on {weights[index - 1]}")
    if weights[-1] != 100:
        return Problem(f"spec.steps[{len(weights) - 1}].weight: the last step must be 100, not {weights[-1]}")
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
    for index, step in enumerate(spec.steps):
        if step.hold is not None:
            checks.append((step.hold > timedelta(0), f"spec.steps[{index}].hold: must be longer than 0"))
    for index, metric in enumerate(a.metrics):
        checks.append(
            (
                metric.min is not None or metric.max is not None,
                f"spec.analysis.metrics[{index}]: needs min or max",
            )
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
            return Problem(message)
    return None


def _route_index(http: Sequence[JsonDict], name: str | None) -> int | None:
    if name is None:
        return 0 if len(http) == 1 else None
    return next((i for i, route in enumerate(http) if route.get("name") == name), None)


def route_index(vs: JsonDict, name: str | None) -> int | None:
    return _route_index(vs.get("spec", {}).get("http") or [], name)


def _find_dr(
    spec: RolloutSpec, namespace: str, host: str, rules: Sequence[JsonDict]
) -> tuple[JsonDict | None, Problem | None]:
    if spec.destination_rule is not None:
        name = spec.destination_rule.name
        found = next((r for r in rules if r["metadata"]["name"] == name), None)
        if found is None:
            return None, Problem(f"DestinationRule {namespace}/{name} (spec.destinationRule.name) not found", True)
        return found, None
    matching = [r for r in rules if same_host(r.get("spec", {}).get("host", ""), host, namespace)]
    if not matching:
        return None, Problem(f"no DestinationRule in namespace {namespace} has host {host}", True)
    if len(matching) > 1:
        names = ", ".join(sorted(r["metadata"]["name"] for r in matching))
        return None, Problem(
            f"DestinationRules {names} in {namespace} all have host {host}; name one in spec.destinationRule.name"
        )
    return matching[0], None


def _side(
    field: str,
    dest: Destination,
    host: str,
    dr: JsonDict,
    namespace: str,
    selector: Mapping[str, str] | None,
) -> Side | Problem:
    dr_name = f"DestinationRule {namespace}/{dr['metadata']['name']}"
    subsets = {s.get("name"): s for s in dr.get("spec", {}).get("subsets") or []}
    subset = subsets.get(dest.subset)
    if subset is None:
        known = ", ".join(sorted(str(name) for name in subsets)) or "none"
        return Problem(
            f"spec.{field}.subset: {dr_name} defines no subset {dest.subset!r} (subsets: {known}); "
            "Istio would answer 503 for it"
        )
    version = (subset.get("labels") or {}).get("version")
    if selector:
        matchers = tuple(sorted(selector.items()))
    elif version:
        matchers = (("destination_version", version),)
    else:
        return Problem(
            f"spec.{field}.subset: subset {dest.subset!r} of {dr_name} has no 'version' label to select its "
            f"metrics by; set spec.analysis.selector.{field}"
        )
    return Side(
        host=host,
        subset=dest.subset,
        port=dest.port,
        service_name=short_host(host),
        matchers=matchers,
        version=version,
    )


def _infer_stable(
    routes: Sequence[tuple[str, JsonDict]], canary: Destination, canary_host: str, namespace: str
) -> Destination | Problem:
    """With spec.stable omitted: the destination serving the owned routes now, besides the canary.

    Called once per generation (plan.start records the answer in status.stable), so a release in
    Git can change the canary subset alone and the last promoted version becomes the stable.
    """
    chosen: dict[str, tuple[str, str]] = {}
    for name, route in routes:
        entries = [e for e in route.get("route") or [] if isinstance(e.get("destination"), dict)]
        others = [
            e
            for e in entries
            if not (
                e["destination"].get("subset") == canary.subset
                and same_host(e["destination"].get("host", ""), canary_host, namespace)
            )
        ]
        if not others:
            return Problem(
                f"spec.stable: omitted, and http route {name!r} sends traffic only to the canary; name the stable"
            )
        best = max(others, key=lambda e: int(e.get("weight") if e.get("weight") is not None else 100))
        chosen[name] = (best["destination"].get("host", ""), str(best["destination"].get("subset", "")))
    if len(set(chosen.values())) > 1:
        listed = ", ".join(f"{name}: {host}/{subset}" for name, (host, subset) in chosen.items())
        return Problem(f"spec.stable: omitted, and the routes are served by different destinations ({listed})")
    host, subset = next(iter(chosen.values()))
    if not subset:
        return Problem("spec.stable: omitted, and the serving destination has no subset; name the stable")
    return Destination(host=host, subset=subset)


def resolve(
    spec: RolloutSpec,
    namespace: str,
    vs: JsonDict | None,
    rules: Sequence[JsonDict],
    *,
    recorded_stable: Destination | None = None,
) -> Target | Problem:
    """Resolve the Rollout's references, or say exactly what is wrong with them.

    `rules` are the DestinationRules in the Rollout's namespace. `recorded_stable` is the stable
    this generation started with (status.stable), used when spec.stable is omitted.
    """
    problem = check_spec(spec)
    if problem:
        return problem
    vs_name = f"VirtualService {namespace}/{spec.virtual_service.name}"
    if vs is None:
        return Problem(f"{vs_name} (spec.virtualService.name) not found", waiting=True)
    vs_spec = vs.get("spec") or {}
    http: list[JsonDict] = list(vs_spec.get("http") or [])
    if not http:
        return Problem(f"{vs_name} has no http routes (spec.http is empty)")

    names: tuple[str | None, ...]
    if spec.virtual_service.routes:
        names = tuple(spec.virtual_service.routes)
    elif len(http) == 1:
        names = (http[0].get("name"),)
    else:
        listed = ", ".join(str(r.get("name") or "<unnamed>") for r in http)
        return Problem(
            f"spec.virtualService.routes: {vs_name} has {len(http)} http routes ({listed}); "
            "name the ones this Rollout owns"
        )
    hosts: list[str] = list(vs_spec.get("hosts") or [])

    def host_for(field: str, dest: Destination) -> str | Problem:
        if dest.host:
            return dest.host
        if len(hosts) == 1:
            return hosts[0]
        return Problem(f"spec.{field}.host: {vs_name} has {len(hosts)} hosts; say which one")

    canary_host = host_for("canary", spec.canary)
    if isinstance(canary_host, Problem):
        return canary_host

    owned: list[tuple[str, JsonDict]] = []
    for position, name in enumerate(names):
        field = f"spec.virtualService.routes[{position}]" if spec.virtual_service.routes else "spec.virtualService"
        index = _route_index(http, name)
        if index is None:
            listed = ", ".join(str(r.get("name") or "<unnamed>") for r in http)
            return Problem(f"{field}: {vs_name} has no http route named {name!r} (routes: {listed})")
        route = http[index]
        if "route" not in route:
            kind = next((k for k in ("delegate", "redirect", "directResponse") if k in route), "no route")
            return Problem(f"{field}: http route {name!r} of {vs_name} has {kind}, not destinations to weigh")
        owned.append((field, route))

    stable_dest = spec.stable or recorded_stable
    if stable_dest is None:
        inferred = _infer_stable(
            [(str(r.get("name") or "<unnamed>"), r) for _, r in owned], spec.canary, canary_host, namespace
        )
        if isinstance(inferred, Problem):
            return inferred
        stable_dest = inferred
    stable_host = host_for("stable", stable_dest)
    if isinstance(stable_host, Problem):
        return stable_host
    if same_host(stable_host, canary_host, namespace) and stable_dest.subset == spec.canary.subset:
        return Problem(f"spec.canary: the canary is the stable destination ({canary_host}, {spec.canary.subset})")

    for field, route in owned:
        route_hosts = [d.get("destination", {}).get("host", "") for d in route.get("route") or []]
        if not any(same_host(h, stable_host, namespace) or same_host(h, canary_host, namespace) for h in route_hosts):
            return Problem(
                f"{field}: http route {route.get('name')!r} of {vs_name} routes to {', '.join(route_hosts) or 'nothing'}, "
                f"not to {stable_host}"
            )

    dr, dr_problem = _find_dr(spec, namespace, stable_host, rules)
    if dr is None:
        assert dr_problem is not None
        return dr_problem
    selector = spec.analysis.selector
    stable = _side("stable", stable_dest, stable_host, dr, namespace, selector.stable)
    if isinstance(stable, Problem):
        return stable
    canary = _side("canary", spec.canary, canary_host, dr, namespace, selector.canary)
    if isinstance(canary, Problem):
        return canary
    if not same_host(canary_host, stable_host, namespace):
        # A second service needs its own DestinationRule; the canary's subsets must be there.
        canary_dr, canary_problem = _find_dr(spec, namespace, canary_host, rules)
        if canary_dr is None:
            assert canary_problem is not None
            return canary_problem
        canary = _side("canary", spec.canary, canary_host, canary_dr, namespace, selector.canary)
        if isinstance(canary, Problem):
            return canary
    return Target(
        namespace=namespace,
        virtual_service=spec.virtual_service.name,
        routes=names,
        destination_rule=dr["metadata"]["name"],
        stable=stable,
        canary=canary,
    )
