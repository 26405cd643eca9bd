"""The demo's scenario as data, and the pure checks on what the operator did.

Why it exists: the demo applies `examples/` (the same files a user applies) with only the
timings shortened, and proves that the operator touched nothing but the owned route's
destinations. Keeping those transformations and comparisons pure makes them testable and keeps
the runner a thin shell. No I/O here, except `load_examples`, which only reads files.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from coalmine.core.models import format_duration
from coalmine.core.validation import match_route_name

T = TypeVar("T")
KINDS = ("Namespace", "DestinationRule", "VirtualService", "Rollout")
WORKLOAD_KINDS = ("Service", "Deployment")
AB_EXAMPLE = Path("strategies") / "ab-rollout.yaml"  # the seed story's A/B step, relative to examples/
MATCH_ROUTE = match_route_name("order")  # the route the operator inserts during an A/B step of Rollout `order`


@dataclass(frozen=True)
class Examples:
    """The objects of `examples/`, in apply order, and the A/B step of `examples/strategies/ab-rollout.yaml`."""

    namespace: dict[str, Any]
    destination_rule: dict[str, Any]
    virtual_service: dict[str, Any]
    rollout: dict[str, Any]
    workloads: tuple[dict[str, Any], ...] = ()  # the Service and the Deployments whose pods readiness counts
    ab_step: dict[str, Any] | None = None  # {match: [...]}: the A/B step the second release begins with


def default_examples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples"


def parse_examples(
    documents: Sequence[Mapping[str, Any]], namespace: str, ab_rollout: Mapping[str, Any] | None = None
) -> Examples:
    """Pick the objects out of the example documents and move them to `namespace`; take the A/B step
    (the first step with a match) out of `ab_rollout`, when given."""
    by_kind: dict[str, dict[str, Any]] = {}
    workloads: list[dict[str, Any]] = []
    for doc in documents:
        if doc and doc.get("kind") in KINDS:
            by_kind[str(doc["kind"])] = copy.deepcopy(dict(doc))
        elif doc and doc.get("kind") in WORKLOAD_KINDS:
            workload = copy.deepcopy(dict(doc))
            workload["metadata"]["namespace"] = namespace
            workloads.append(workload)
    missing = [k for k in KINDS if k not in by_kind]
    if missing:
        raise ValueError(f"examples/ lacks a {', '.join(missing)}")
    by_kind["Namespace"]["metadata"]["name"] = namespace
    for kind in KINDS[1:]:
        by_kind[kind]["metadata"]["namespace"] = namespace
    ab_step = None
    if ab_rollout is not None:
        steps = (ab_rollout.get("spec") or {}).get("steps") or []
        found = next((s for s in steps if s.get("match")), None)
        if found is None:
            raise ValueError(f"examples/{AB_EXAMPLE} has no step with a match (A/B)")
        ab_step = {"match": copy.deepcopy(found["match"])}
    return Examples(
        by_kind["Namespace"],
        by_kind["DestinationRule"],
        by_kind["VirtualService"],
        by_kind["Rollout"],
        workloads=tuple(workloads),
        ab_step=ab_step,
    )


def load_examples(directory: Path, namespace: str) -> Examples:
    documents: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    ab_path = directory / AB_EXAMPLE
    ab_rollout = None
    if ab_path.exists():
        ab_rollout = next(
            (d for d in yaml.safe_load_all(ab_path.read_text()) if d and d.get("kind") == "Rollout"), None
        )
    return parse_examples(documents, namespace, ab_rollout)


def check_every(hold: timedelta) -> timedelta:
    """Checks per hold: about six, never more often than once a second."""
    return max(timedelta(seconds=1), timedelta(seconds=round(hold.total_seconds() / 6)))


def demo_steps(example: Mapping[str, Any], ab_step: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The example's steps without their holds (the demo holds each for --hold), after `ab_step` if given."""
    steps = [{"weight": int(s["weight"])} for s in example["spec"]["steps"]]
    return [{"match": copy.deepcopy(ab_step["match"])}, *steps] if ab_step is not None else steps


def demo_rollout(example: Mapping[str, Any], hold: timedelta) -> dict[str, Any]:
    """The example Rollout with the demo's timings: every step held `hold`, checks every hold/6.

    Thresholds (success rate, latency, failureLimit) stay as the example has them; minRequests
    and maxNoData shrink with the hold so a step of seconds can gather enough requests.
    """
    body = copy.deepcopy(dict(example))
    spec = body["spec"]
    text = format_duration(hold)
    spec["steps"] = demo_steps(example)
    analysis = spec.setdefault("analysis", {})
    analysis["interval"] = text
    analysis["checkEvery"] = format_duration(check_every(hold))
    if hold < timedelta(minutes=1):
        analysis["minRequests"] = 10
        analysis["maxNoData"] = format_duration(max(timedelta(seconds=30), 3 * hold))
    return body


def owned_routes(rollout: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(rollout["spec"]["virtualService"].get("routes") or ())


def untouched_vs(vs: Mapping[str, Any], routes: Sequence[str]) -> dict[str, Any]:
    """The VirtualService without what the Rollout owns (the named routes' destinations) and server fields."""
    spec = copy.deepcopy(dict(vs["spec"]))
    http = spec.get("http") or []
    for route in http:
        if route.get("name") in routes or (not routes and len(http) == 1):
            route.pop("route", None)
    meta = vs.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels") if k in meta},
        "spec": spec,
    }


def untouched_dr(dr: Mapping[str, Any]) -> dict[str, Any]:
    """The DestinationRule as the user wrote it: every field of it is off-limits to the operator."""
    meta = dr.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}, "spec": dr["spec"]}


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: equal bytes mean equal objects, field for field."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Untouched:
    name: str
    equal: bool
    before_sha256: str
    after_sha256: str
    detail: str


def compare(name: str, before: Any, after: Any, detail: str = "") -> Untouched:
    b, a = canonical(before), canonical(after)
    return Untouched(
        name=name,
        equal=a == b,
        before_sha256=hashlib.sha256(b).hexdigest()[:16],
        after_sha256=hashlib.sha256(a).hexdigest()[:16],
        detail=detail,
    )


def check_untouched(
    vs_before: Mapping[str, Any],
    vs_after: Mapping[str, Any],
    dr_before: Mapping[str, Any],
    dr_after: Mapping[str, Any],
    routes: Sequence[str],
    match_route: str = "",
) -> list[Untouched]:
    """Compare what the operator must not touch: the user's A/B route, retries, timeout, and the whole DR;
    and, with `match_route`, that the operator's own A/B route is as absent after as it was before."""

    def http(vs: Mapping[str, Any], name: str) -> dict[str, Any]:
        return next((r for r in untouched_vs(vs, routes)["spec"].get("http", []) if r.get("name") == name), {})

    owned = routes[0] if routes else ""
    others = [r.get("name", "") for r in vs_before["spec"].get("http", []) if r.get("name") not in routes]
    results = [
        compare(f"VS route {name} (user's A/B)", http(vs_before, name), http(vs_after, name), "match and destination")
        for name in others
    ]
    if match_route:
        results.append(
            compare(
                f"VS route {match_route} (operator's A/B)",
                route_named(vs_before, match_route),
                route_named(vs_after, match_route),
                "absent before, gone after",
            )
        )
    for key in ("retries", "timeout"):
        results.append(
            compare(f"VS route {owned} {key}", http(vs_before, owned).get(key), http(vs_after, owned).get(key))
        )
    results.append(
        compare("VS all but owned destinations", untouched_vs(vs_before, routes), untouched_vs(vs_after, routes))
    )
    dr_b, dr_a = untouched_dr(dr_before), untouched_dr(dr_after)
    results.append(
        compare(
            "DR outlierDetection (circuit breaker)",
            dr_b["spec"].get("trafficPolicy", {}).get("outlierDetection"),
            dr_a["spec"].get("trafficPolicy", {}).get("outlierDetection"),
        )
    )
    same_version = (dr_before.get("metadata") or {}).get("resourceVersion") == (dr_after.get("metadata") or {}).get(
        "resourceVersion"
    )
    whole = compare("DR whole object", dr_b, dr_a, "never written" if same_version else "resourceVersion changed")
    results.append(
        whole if same_version else Untouched(whole.name, False, whole.before_sha256, whole.after_sha256, whole.detail)
    )
    return results


def canary_weight(vs: Mapping[str, Any], routes: Sequence[str], canary_subset: str) -> int:
    """The canary subset's weight on the first owned route (0 when it is not on the route)."""
    http = vs["spec"].get("http") or []
    route = next((r for r in http if r.get("name") in routes), http[0] if len(http) == 1 else None)
    if route is None:
        return 0
    for dest in route.get("route") or []:
        if dest.get("destination", {}).get("subset") == canary_subset:
            return int(dest.get("weight", 0 if len(route["route"]) > 1 else 100))
    return 0


def changes(values: Sequence[T]) -> list[T]:
    """The values with consecutive repeats removed: [0, 0, 10, 10, 30] -> [0, 10, 30]."""
    out: list[T] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def route_named(vs: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The http route called `name`, or None."""
    found = next((r for r in vs["spec"].get("http") or [] if r.get("name") == name), None)
    return copy.deepcopy(found) if found is not None else None


def ab_problem(readings: Sequence[tuple[int, bool]]) -> str:
    """What is wrong with the A/B route over a release ("" when nothing is), from what was read in turn:
    (the canary's weight on the owned route, the operator's A/B route is in the VirtualService).

    The story an A/B step must tell: the route appears while the owned route still gives the canary 0 %,
    it is gone once the weights begin (in the same write as the first weight), and gone at the end.
    """
    if not any(present for _, present in readings):
        return "the A/B route was never seen in the VirtualService"
    if any(weight != 0 for weight, present in readings if present):
        return "the A/B route was there while the owned route gave the canary weight"
    first_weight = next((i for i, (weight, _) in enumerate(readings) if weight > 0), len(readings))
    if any(present for _, present in readings[first_weight:]):
        return "the A/B route came back after the weight steps began"
    if readings[-1][1]:
        return "the A/B route is still in the VirtualService at the end"
    return ""
