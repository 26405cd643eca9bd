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
from typing import Any

import yaml

from coalmine.core.models import format_duration

KINDS = ("Namespace", "DestinationRule", "VirtualService", "Rollout")


@dataclass(frozen=True)
class Examples:
    """The four objects of `examples/`, in apply order."""

    namespace: dict[str, Any]
    destination_rule: dict[str, Any]
    virtual_service: dict[str, Any]
    rollout: dict[str, Any]


def default_examples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples"


def parse_examples(documents: Sequence[Mapping[str, Any]], namespace: str) -> Examples:
    """Pick the four objects out of the example documents and move them to `namespace`."""
    by_kind: dict[str, dict[str, Any]] = {}
    for doc in documents:
        if doc and doc.get("kind") in KINDS:
            by_kind[str(doc["kind"])] = copy.deepcopy(dict(doc))
    missing = [k for k in KINDS if k not in by_kind]
    if missing:
        raise ValueError(f"examples/ lacks a {', '.join(missing)}")
    by_kind["Namespace"]["metadata"]["name"] = namespace
    for kind in KINDS[1:]:
        by_kind[kind]["metadata"]["namespace"] = namespace
    return Examples(by_kind["Namespace"], by_kind["DestinationRule"], by_kind["VirtualService"], by_kind["Rollout"])


def load_examples(directory: Path, namespace: str) -> Examples:
    documents: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return parse_examples(documents, namespace)


def check_every(hold: timedelta) -> timedelta:
    """Checks per hold: about six, never more often than once a second."""
    return max(timedelta(seconds=1), timedelta(seconds=round(hold.total_seconds() / 6)))


def demo_rollout(example: Mapping[str, Any], hold: timedelta) -> dict[str, Any]:
    """The example Rollout with the demo's timings: every step held `hold`, checks every hold/6.

    Thresholds (success rate, latency, failureLimit) stay as the example has them; minRequests
    and maxNoData shrink with the hold so a step of seconds can gather enough requests.
    """
    body = copy.deepcopy(dict(example))
    spec = body["spec"]
    text = format_duration(hold)
    spec["steps"] = [{"weight": int(s["weight"])} for s in spec["steps"]]
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
) -> list[Untouched]:
    """Compare what the operator must not touch: the A/B route, retries, timeout, and the whole DR."""

    def http(vs: Mapping[str, Any], name: str) -> dict[str, Any]:
        return next((r for r in untouched_vs(vs, routes)["spec"].get("http", []) if r.get("name") == name), {})

    owned = routes[0] if routes else ""
    others = [r.get("name", "") for r in vs_before["spec"].get("http", []) if r.get("name") not in routes]
    results = [
        compare(f"VS route {name} (A/B)", http(vs_before, name), http(vs_after, name), "match and destination")
        for name in others
    ]
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


def changes(values: Sequence[int]) -> list[int]:
    """The values with consecutive repeats removed: [0, 0, 10, 10, 30] -> [0, 10, 30]."""
    out: list[int] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out
