"""Gateway API HTTPRoutes as meshsim models them, for mesh (GAMMA) routes: pure, like routing.py.

An HTTPRoute applies to requests for Service `host` when one of its parentRefs is that Service
(`group: ""`, `kind: Service`), in the route's namespace unless the parentRef names another; several
apply: the oldest (creationTimestamp, then namespace/name). Its rules are tried in order (Gateway API's
precedence by specificity is not modelled) and the first whose `matches` match wins; a rule without
`matches` matches everything. Supported: header matches (Exact, the default, and RegularExpression) and
path matches (PathPrefix, the default, and Exact). A backendRef is chosen by relative weight (default
1); a rule whose backendRefs all weigh 0, or that has none, answers like no route. Each backendRef is a
Service of its own: the destination's `version` is the Service selector's `version` label (as the pods
behind it report), "unknown" without one. Routes bound only to a Gateway (ingress) are not simulated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coalmine_dev.meshsim.endpoints import EndpointIndex

Obj = Mapping[str, Any]


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _age_key(obj: Obj) -> tuple[str, str, str]:
    meta = _meta(obj)
    return (str(meta.get("creationTimestamp") or "~"), str(meta.get("namespace", "")), str(meta.get("name", "")))


def find_http_route(http_routes: Iterable[Obj], namespace: str, host: str) -> Obj | None:
    """The HTTPRoute whose parentRefs include Service `host` in `namespace`, or None."""
    candidates = []
    for route in http_routes:
        route_ns = str(_meta(route).get("namespace", "default"))
        for ref in (route.get("spec") or {}).get("parentRefs") or []:
            service = ref.get("group") == "" and ref.get("kind") == "Service" and ref.get("name") == host
            if service and str(ref.get("namespace") or route_ns) == namespace:
                candidates.append(route)
                break
    return min(candidates, key=_age_key) if candidates else None


def _match(match: Obj, headers: Mapping[str, str], path: str) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    for header in match.get("headers") or []:
        value = lowered.get(str(header.get("name", "")).lower())
        if value is None:
            return False
        if header.get("type", "Exact") == "RegularExpression":
            if re.fullmatch(str(header.get("value", "")), value) is None:
                return False
        elif value != str(header.get("value", "")):
            return False
    if "path" in match:
        kind, wanted = match["path"].get("type", "PathPrefix"), str(match["path"].get("value", "/"))
        if kind == "Exact" and path != wanted:
            return False
        if kind == "PathPrefix" and not (path == wanted or path.startswith(wanted.rstrip("/") + "/") or wanted == "/"):
            return False
    return True


def select_rule(route: Obj, headers: Mapping[str, str], path: str) -> tuple[int, Obj] | None:
    for index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        matches: Sequence[Obj] = rule.get("matches") or []
        if not matches or any(_match(m, headers, path) for m in matches):
            return index, rule
    return None


def choose_backend(refs: Sequence[Obj], rng: random.Random) -> Obj | None:
    weights = [max(0, int(r.get("weight", 1))) for r in refs]
    total = sum(weights)
    if total <= 0:
        return None
    point = rng.random() * total
    for ref, weight in zip(refs, weights, strict=True):
        if point < weight:
            return ref
        point -= weight
    return [r for r, w in zip(refs, weights, strict=True) if w > 0][-1]


def version_of(endpoints: EndpointIndex, namespace: str, service: str) -> str:
    return endpoints.version(namespace, service) or "unknown"
