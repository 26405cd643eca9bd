"""The smallest guarded change to a VirtualService that puts the owned routes at a canary weight.

Pure: given the VirtualService as read, it returns a JSON patch that touches only
`/spec/http/<i>/route` of the owned routes, each replace preceded by `test` ops on the route's
name and on its current destinations. If anyone else changed those destinations since the read,
the API server refuses the whole patch (422) and the caller re-reads: a concurrent edit is never
clobbered. Everything else in the VirtualService (match, retries, timeout, headers, mirror, other
routes, other fields of each destination) is left as it is. No change means an empty patch, and so does a
route that already sends the weight asked for in other words (`[canary]` for 100 %, `[stable]` for 0 %: a
destination at weight 0 counts as absent), which is left as its author wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from coalmine.core import routes
from coalmine.core.models import VIRTUAL_SERVICE, MirrorStatus
from coalmine.core.routes import RouteGone
from coalmine.core.validation import MIRROR_KEYS, Backend, Traffic, mirror_fields, route_index

__all__ = [
    "MirrorChanged",
    "RouteGone",
    "applied",
    "desired_destinations",
    "mirror_during",
    "weight_patch",
    "without_ours",
]


class MirrorChanged(RouteGone):
    """The owned route's mirror is neither the operator's nor the one recorded in the status: it is
    recorded again (write-ahead) before the operator's mirror replaces it."""


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


COPIED = ("retries", "timeout", "headers")  # what an A/B route copies from the owned route


def _merged(owned: JsonDict, extra: JsonDict) -> dict[str, Any]:
    """One match block that holds when both do: the owned route's block with the A/B step's added."""
    result = copy.deepcopy(dict(owned))
    for key, value in extra.items():
        if key in ("headers", "queryParams", "withoutHeaders") and isinstance(result.get(key), dict):
            result[key] = {**result[key], **copy.deepcopy(value)}
        else:
            result[key] = copy.deepcopy(value)
    return result


def match_route(owned: JsonDict, traffic: Traffic, name: str, match: Sequence[JsonDict]) -> dict[str, Any]:
    """The A/B route: `match` (within the owned route's own match, when it has one), all to the canary,
    with the owned route's retries, timeout and headers so matched users get the same resilience."""
    own = owned.get("match") or [{}]
    blocks = [_merged(o, m) for o in own for m in match]
    canary = desired_destinations(list(owned.get("route") or []), traffic, 100)[1]
    canary.pop("weight", None)
    route: dict[str, Any] = {"name": name, "match": blocks, "route": [canary]}
    for key in COPIED:
        if key in owned:
            route[key] = copy.deepcopy(owned[key])
    return route


def mirror_during(route: JsonDict, traffic: Traffic, percent: int, saved: JsonDict) -> dict[str, Any]:
    """The owned route's mirror fields during a mirror step, from its own (`saved`): with none, `mirror` =
    the canary and `mirrorPercentage`; with a `mirrors` list, the canary's entry appended to it; with a
    `mirror` of its own, both in a `mirrors` list (Istio refuses `mirror` and `mirrors` together), so the
    user's mirror keeps working while the step runs. `saved` itself is put back, byte-equal, afterwards."""
    canary = desired_destinations(list(route.get("route") or []), traffic, 100)[1]["destination"]
    ours = {"destination": canary, "percentage": {"value": percent}}
    if saved.get("mirrors"):
        return {**copy.deepcopy(dict(saved)), "mirrors": [*copy.deepcopy(list(saved["mirrors"])), ours]}
    if "mirror" in saved:
        theirs: dict[str, Any] = {"destination": copy.deepcopy(saved["mirror"])}
        if "mirrorPercentage" in saved:
            theirs["percentage"] = copy.deepcopy(saved["mirrorPercentage"])
        elif "mirrorPercent" in saved:  # deprecated integer percent
            theirs["percentage"] = {"value": saved["mirrorPercent"]}
        return {"mirrors": [theirs, ours]}
    return {"mirror": ours["destination"], "mirrorPercentage": ours["percentage"]}


def without_ours(current: dict[str, Any], written: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The route's mirror fields edited by someone while the operator's were on it, without the operator's
    own entry (left in a `mirrors` list, or as `mirror` with its percentage): what to put back later."""
    result = dict(current)
    for fields in (f for f in written if f):
        if "mirrors" in fields and isinstance(result.get("mirrors"), list):
            ours = fields["mirrors"][-1]
            kept = [entry for entry in result["mirrors"] if entry != ours]
            if kept:
                result["mirrors"] = kept
            else:
                del result["mirrors"]
        if "mirror" in fields and all(result.get(k) == fields[k] for k in ("mirror", "mirrorPercentage")):
            del result["mirror"], result["mirrorPercentage"]
    return result


def _mirror_ops(vs: JsonDict, traffic: Traffic, record: MirrorStatus | None, on: bool) -> list[Op]:
    """Ops putting the operator's mirror (`record.fields`) on the owned route (`on`), or the route's own
    (`record.saved`) back. The operator overwrites only a mirror it recorded (or its own) and removes only
    its own; the first op tests the whole route as read, so a concurrent edit refuses the patch."""
    if record is None:
        return []
    http = vs.get("spec", {}).get("http") or []
    index = route_index(vs, traffic.routes[0])
    assert index is not None  # weight_patch raised RouteGone otherwise
    current = mirror_fields(http[index])
    ours = [record.fields] + ([record.previous] if record.previous is not None else [])
    if on:
        if current == record.fields:
            return []
        if current not in ours and without_ours(current, ours) != record.saved:
            raise MirrorChanged(
                f"the mirror of http route {traffic.routes[0] or '<unnamed>'!r} of {traffic.where} changed since it "
                "was recorded; it is recorded again before the operator's mirror replaces it"
            )
        target = record.fields
    else:
        if current not in ours or current == record.saved:
            return []
        target = record.saved
    path = f"/spec/http/{index}"
    ops: list[Op] = []
    for key in MIRROR_KEYS:
        if key in target:
            if current.get(key) != target[key]:
                ops.append({"op": "add", "path": f"{path}/{key}", "value": copy.deepcopy(target[key])})
        elif key in current:
            ops.append({"op": "remove", "path": f"{path}/{key}"})
    return ops


def weight_patch(
    vs: JsonDict,
    traffic: Traffic,
    canary_weight: int,
    *,
    match_name: str | None = None,
    match: Sequence[JsonDict] | None = None,
    mirror: MirrorStatus | None = None,
    mirror_on: bool = False,
) -> list[Op]:
    """JSON patch (RFC 6902) moving every owned route to `canary_weight`; [] when already there.

    With `mirror` (status.mirror), also the operator's mirror on the (one) owned route: on (`mirror_on`)
    or taken off with the route's own mirror put back; those ops follow a `test` of the whole route as
    read, which comes first. With `match_name`, also the operator's A/B route of that name: present with
    `match` right ahead of the owned route, or absent when `match` is None. Its ops come last, so the
    owned route's index in the ops before them is the one read."""
    http = vs.get("spec", {}).get("http") or []
    ops: list[Op] = []
    mirror_ops: list[Op] = []
    owned = route_index(vs, traffic.routes[0]) if traffic.routes else None
    if mirror is not None and owned is not None:
        mirror_ops = _mirror_ops(vs, traffic, mirror, mirror_on)
        if mirror_ops:  # the whole route as read: its own mirror cannot change unseen before it is replaced
            ops.append({"op": "test", "path": f"/spec/http/{owned}", "value": copy.deepcopy(http[owned])})
    for name in traffic.routes:
        index = route_index(vs, name)
        if index is None:
            raise RouteGone(
                f"VirtualService {traffic.namespace}/{traffic.virtual_service} has no http route {name!r} any more"
            )
        current = list(http[index].get("route") or [])
        desired = desired_destinations(current, traffic, canary_weight)
        if routes.same_traffic(VIRTUAL_SERVICE, current, desired):
            continue
        path = f"/spec/http/{index}"
        if name is not None:
            ops.append({"op": "test", "path": f"{path}/name", "value": name})
        ops.append({"op": "test", "path": f"{path}/route", "value": current})
        ops.append({"op": "replace", "path": f"{path}/route", "value": desired})
    ops += mirror_ops
    if match_name is not None:
        ops += _match_ops(vs, traffic, canary_weight, match_name, match)
    return ops


def _match_ops(
    vs: JsonDict, traffic: Traffic, canary_weight: int, name: str, match: Sequence[JsonDict] | None
) -> list[Op]:
    http = vs.get("spec", {}).get("http") or []
    found = route_index(vs, name)
    if match is None:
        if found is None:
            return []
        return [
            {"op": "test", "path": f"/spec/http/{found}/name", "value": name},
            {"op": "remove", "path": f"/spec/http/{found}"},
        ]
    owned_name = traffic.routes[0]
    index = route_index(vs, owned_name)
    assert index is not None  # weight_patch raised RouteGone otherwise
    owned = dict(http[index])
    owned["route"] = desired_destinations(list(owned.get("route") or []), traffic, canary_weight)
    desired = match_route(owned, traffic, name, match)
    guard = [{"op": "test", "path": f"/spec/http/{index}/name", "value": owned_name}] if owned_name else []
    if found is None:
        return [*guard, {"op": "add", "path": f"/spec/http/{index}", "value": desired}]
    if http[found] == desired:
        return []
    return [
        {"op": "test", "path": f"/spec/http/{found}/name", "value": name},
        {"op": "replace", "path": f"/spec/http/{found}", "value": desired},
    ]


def applied(vs: JsonDict, ops: list[Op]) -> dict[str, Any]:
    """`vs` after a patch `weight_patch` made, as the API server would store it (for simulations: replay,
    tests). Raises RouteGone when a `test` op does not hold, as the server would refuse the patch."""
    result: dict[str, Any] = copy.deepcopy(dict(vs))
    for op in ops:
        parts = op["path"].strip("/").split("/")  # spec, http, <i>[, name|route]
        http = result["spec"]["http"]
        index = int(parts[2])
        if len(parts) == 3:
            if op["op"] == "add":
                http.insert(index, copy.deepcopy(op["value"]))
            elif op["op"] == "remove":
                del http[index]
            elif op["op"] == "replace":
                http[index] = copy.deepcopy(op["value"])
            elif http[index] != op["value"]:
                raise RouteGone(f"{op['path']} is not {op['value']!r}")
            continue
        if index >= len(http):
            raise RouteGone(f"{op['path']} does not exist")
        route = http[index]
        if op["op"] == "test" and route.get(parts[3]) != op["value"]:
            raise RouteGone(f"{op['path']} is not {op['value']!r}")
        if op["op"] in ("replace", "add"):
            route[parts[3]] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del route[parts[3]]
    return result
