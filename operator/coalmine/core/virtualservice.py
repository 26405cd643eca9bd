"""The smallest guarded change to a VirtualService that puts the owned routes at a canary weight.

Pure: given the VirtualService as read, it returns a JSON patch that touches only
`/spec/http/<i>/route` of the owned routes, each replace preceded by `test` ops on the route's
name and on its current destinations. If anyone else changed those destinations since the read,
the API server refuses the whole patch (422) and the caller re-reads: a concurrent edit is never
clobbered. Everything else in the VirtualService (match, retries, timeout, headers, mirror, other
routes, other fields of each destination) is left as it is. No change means an empty patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from coalmine.core.routes import RouteGone
from coalmine.core.validation import Backend, Traffic, route_index

__all__ = ["RouteGone", "applied", "desired_destinations", "weight_patch"]

JsonDict = Mapping[str, Any]
Op = dict[str, Any]


def desired_destinations(current: list[dict[str, Any]], traffic: Traffic, canary_weight: int) -> list[dict[str, Any]]:
    """Exactly [stable (100 - w), canary (w)], keeping what each existing entry carries besides its weight."""
    ns = traffic.namespace

    def entry(side: Backend, weight: int, template: dict[str, Any] | None) -> dict[str, Any]:
        found = next((e for e in current if side.matches(e.get("destination") or {}, ns)), None)
        if found is not None:
            result = copy.deepcopy(found)
        else:
            dest: dict[str, Any] = {"host": side.host, "subset": side.subset}
            port = (template or {}).get("destination", {}).get("port")
            if port is not None:
                dest["port"] = copy.deepcopy(port)
            result = {"destination": dest}
        if side.port is not None:
            result["destination"]["port"] = {"number": side.port}
        result["weight"] = weight
        return result

    stable = entry(traffic.stable, 100 - canary_weight, None)
    canary = entry(traffic.canary, canary_weight, stable)
    return [stable, canary]


def weight_patch(vs: JsonDict, traffic: Traffic, canary_weight: int) -> list[Op]:
    """JSON patch (RFC 6902) moving every owned route to `canary_weight`; [] when already there."""
    http = vs.get("spec", {}).get("http") or []
    ops: list[Op] = []
    for name in traffic.routes:
        index = route_index(vs, name)
        if index is None:
            raise RouteGone(
                f"VirtualService {traffic.namespace}/{traffic.virtual_service} has no http route {name!r} any more"
            )
        current = list(http[index].get("route") or [])
        desired = desired_destinations(current, traffic, canary_weight)
        if desired == current:
            continue
        path = f"/spec/http/{index}"
        if name is not None:
            ops.append({"op": "test", "path": f"{path}/name", "value": name})
        ops.append({"op": "test", "path": f"{path}/route", "value": current})
        ops.append({"op": "replace", "path": f"{path}/route", "value": desired})
    return ops


def applied(vs: JsonDict, ops: list[Op]) -> dict[str, Any]:
    """`vs` after a patch `weight_patch` made, as the API server would store it (for simulations: replay,
    tests). Raises RouteGone when a `test` op does not hold, as the server would refuse the patch."""
    result: dict[str, Any] = copy.deepcopy(dict(vs))
    for op in ops:
        parts = op["path"].strip("/").split("/")  # spec, http, <i>, name|route
        route = result["spec"]["http"][int(parts[2])]
        if op["op"] == "test" and route.get(parts[3]) != op["value"]:
            raise RouteGone(f"{op['path']} is not {op['value']!r}")
        if op["op"] == "replace":
            route[parts[3]] = copy.deepcopy(op["value"])
    return result
