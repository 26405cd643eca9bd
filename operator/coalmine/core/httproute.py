"""The smallest guarded change to a Gateway API HTTPRoute that puts the owned rules at a canary weight, and
whether the route's controller has taken the route as it is now.

Pure, like virtualservice.py: the JSON patch touches only `/spec/rules/<i>/backendRefs` of the owned
rules, each replace preceded by `test` ops on the rule's name and its current backendRefs, so a
concurrent edit makes the API server refuse the whole patch. Each version is a Service of its own
(`order-v1`, `order-v2`): the rule gets exactly [stable (100 - w), canary (w)], each backendRef keeping
what it carries besides its weight (port, filters, namespace). Matches, filters, timeouts, other rules,
parentRefs and hostnames stay as they are. A rule that already sends the weight asked for in other words
(`[canary]` for 100 %, a backendRef at weight 0 counting as absent) is not written.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from coalmine.core import routes
from coalmine.core.models import HTTP_ROUTE
from coalmine.core.routes import RouteGone
from coalmine.core.validation import Backend, Traffic, same_host

JsonDict = Mapping[str, Any]
Op = dict[str, Any]


def _ref_for(side: Backend, namespace: str, template: JsonDict | None) -> dict[str, Any]:
    name, _, other = side.host.partition(".")
    ref: dict[str, Any] = {"name": name}
    if other and other.split(".")[0] != namespace:
        ref["namespace"] = other.split(".")[0]
    port = side.port if side.port is not None else (template or {}).get("port")
    if port is not None:
        ref["port"] = port
    return ref


def desired_backends(current: list[dict[str, Any]], traffic: Traffic, canary_weight: int) -> list[dict[str, Any]]:
    ns = traffic.namespace

    def entry(side: Backend, weight: int, template: JsonDict | None) -> dict[str, Any]:
        found = next(
            (r for r in current if routes.is_service(r) and same_host(routes.backend_host(r), side.host, ns)), None
        )
        result = copy.deepcopy(found) if found is not None else _ref_for(side, ns, template)
        if side.port is not None:
            result["port"] = side.port
        result["weight"] = weight
        return result

    stable = entry(traffic.stable, 100 - canary_weight, None)
    return [stable, entry(traffic.canary, canary_weight, stable)]


def weight_patch(route: JsonDict, traffic: Traffic, canary_weight: int) -> list[Op]:
    """JSON patch (RFC 6902) moving every owned rule to `canary_weight`; [] when already there."""
    found = routes.rules(HTTP_ROUTE, route)
    ops: list[Op] = []
    for name in traffic.routes:
        index = routes.index_in(found, name)
        if index is None:
            raise RouteGone(f"{traffic.where} has no rule {name!r} any more")
        current = list(found[index].get("backendRefs") or [])
        desired = desired_backends(current, traffic, canary_weight)
        if routes.same_traffic(HTTP_ROUTE, current, desired):
            continue
        path = f"/spec/rules/{index}"
        if name is not None:
            ops.append({"op": "test", "path": f"{path}/name", "value": name})
        ops.append({"op": "test", "path": f"{path}/backendRefs", "value": current})
        ops.append({"op": "replace", "path": f"{path}/backendRefs", "value": desired})
    return ops


def not_accepted(route: JsonDict) -> str | None:
    """Why the route's controller has not (yet) taken this generation of the route: every parent in
    status.parents must say Accepted=True and ResolvedRefs=True for metadata.generation. None: it has."""
    meta = route.get("metadata") or {}
    generation = meta.get("generation")
    where = f"HTTPRoute {meta.get('namespace')}/{meta.get('name')}"
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return f"{where}: no route controller has reported on generation {generation} (status.parents is empty)"
    for parent in parents:
        ref = parent.get("parentRef") or {}
        who = f"{ref.get('kind', 'Gateway')} {ref.get('name')} ({parent.get('controllerName', 'a controller')})"
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in ("Accepted", "ResolvedRefs"):
            condition = conditions.get(kind)
            if condition is None or condition.get("observedGeneration") != generation:
                return f"{where}: {who} has not reported {kind} for generation {generation} yet"
            if condition.get("status") != "True":
                why = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
                return f"{where}: {kind} is {condition.get('status')} for generation {generation} at {who}: {why}"
    return None
