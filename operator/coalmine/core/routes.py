"""What the routers' objects look like, read-only: the rules of a VirtualService or an HTTPRoute, and the
weighted destinations of one rule. Pure; the layer under validation, so both routers share one resolution.

    VirtualService  spec.http[]        route[]        {destination: {host, subset, port}, weight}
    HTTPRoute       spec.rules[]       backendRefs[]  {name, namespace, port, weight, filters}  (a Service each)

Weights are relative in both. A VirtualService destination without weight counts 0 when there are
several (a lone one gets everything); an HTTPRoute backendRef without weight counts 1 (Gateway API's default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from coalmine.core.models import HTTP_ROUTE

JsonDict = Mapping[str, Any]


class RouteGone(Exception):
    """An owned route (rule) is no longer in the route object (someone renamed or removed it)."""


@dataclass(frozen=True)
class Entry:
    """One weighted destination of a rule: where it sends (host, subset) and its relative weight."""

    host: str
    subset: str
    weight: int
    raw: JsonDict


def rules_key(kind: str) -> str:
    """The spec field holding the rules: `http` or `rules`."""
    return "rules" if kind == HTTP_ROUTE else "http"


def entries_key(kind: str) -> str:
    """A rule's field holding the weighted destinations: `route` or `backendRefs`."""
    return "backendRefs" if kind == HTTP_ROUTE else "route"


def rules(kind: str, obj: JsonDict | None) -> list[JsonDict]:
    if obj is None:
        return []
    return list((obj.get("spec") or {}).get(rules_key(kind)) or [])


def backend_host(ref: JsonDict) -> str:
    """An HTTPRoute backendRef as a host: `name`, or `name.namespace` when it names another namespace."""
    name = str(ref.get("name", ""))
    namespace = ref.get("namespace")
    return f"{name}.{namespace}" if namespace else name


def is_service(ref: JsonDict) -> bool:
    return ref.get("group", "") in ("", "core") and ref.get("kind", "Service") == "Service"


def entries(kind: str, rule: JsonDict) -> list[Entry]:
    raw: list[JsonDict] = list(rule.get(entries_key(kind)) or [])
    if kind == HTTP_ROUTE:
        return [Entry(backend_host(r), "", int(r.get("weight", 1)), r) for r in raw if is_service(r)]
    found = [e for e in raw if isinstance(e.get("destination"), Mapping)]
    return [
        Entry(
            str(e["destination"].get("host", "")),
            str(e["destination"].get("subset", "")),
            int(e.get("weight") or 0) if len(found) > 1 else 100,
            e,
        )
        for e in found
    ]


def same_traffic(kind: str, current: Sequence[JsonDict], desired: Sequence[JsonDict]) -> bool:
    """Whether a rule with `desired` destinations would send exactly what it sends with `current`: the same
    destinations (each as written, but for its weight) with the same share of the traffic, a destination at
    weight 0 counting as absent. So a route a person or Git wrote as `[canary]` is already at 100 % and is
    not rewritten as `[stable 0, canary 100]` (nor `[stable]` as `[stable 100, canary 0]`) by a finished
    Rollout re-asserting its weight: such a write moves nothing and would only make drift."""
    if list(current) == list(desired):
        return True
    rule = entries_key(kind)
    found = [entries(kind, {rule: list(side)}) for side in (current, desired)]
    if any(len(e) != len(side) for e, side in zip(found, (current, desired), strict=True)):
        return False  # entries this module does not weigh (not a Service, no destination): compare as written
    return _served(found[0]) == _served(found[1])


def _served(weighed: Sequence[Entry]) -> list[tuple[str, Fraction]] | None:
    total = sum(e.weight for e in weighed)
    if total <= 0:
        return None
    served = [
        (json.dumps({k: v for k, v in e.raw.items() if k != "weight"}, sort_keys=True), Fraction(e.weight, total))
        for e in weighed
        if e.weight > 0
    ]
    return sorted(served)


def not_weighable(kind: str, rule: JsonDict) -> str | None:
    """Why a rule has no destinations to weigh (None: it has)."""
    if kind == HTTP_ROUTE:
        if rule.get("backendRefs"):
            return None
        redirect = any((f or {}).get("type") == "RequestRedirect" for f in rule.get("filters") or [])
        return "a RequestRedirect filter" if redirect else "no backendRefs"
    if "route" in rule:
        return None
    return next((k for k in ("delegate", "redirect", "directResponse") if k in rule), "no route")


def rule_index(kind: str, obj: JsonDict, name: str | None) -> int | None:
    return index_in(rules(kind, obj), name)


def index_in(found: Sequence[JsonDict], name: str | None) -> int | None:
    """The rule named `name`; with None, the only rule."""
    if name is None:
        return 0 if len(found) == 1 else None
    return next((i for i, rule in enumerate(found) if rule.get("name") == name), None)
