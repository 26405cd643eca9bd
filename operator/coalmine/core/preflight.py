"""The ambient preflight: what a mesh is missing for the canary's L7 metrics to exist at all, said when a
generation starts instead of waiting forever for no data.

Pure: it gets the labels of the Rollout's namespace and of the stable's and canary's Services (None when
not found) and the route object, and returns what is missing. Under ambient (`istio.io/dataplane-mode:
ambient` on the namespace or the Service) L7 metrics come only from a waypoint (`reporter="waypoint"`):

- a Service opted out (`istio.io/dataplane-mode: none`) is not in the mesh;
- a Service without a waypoint (`istio.io/use-waypoint` on it or its namespace, not `none`) has no L7
  metrics at all, only ztunnel's TCP ones;
- a VirtualService is Alpha under ambient and cannot split versions of one Service: use an HTTPRoute with
  one Service per version (spec.httpRoute);
- an HTTPRoute bound to an ingress Gateway sends straight to the Services, bypassing their waypoint, unless
  they (or the namespace) carry `istio.io/ingress-use-waypoint: "true"`.

With spec.httpRoute and a namespace carrying no mesh label at all (no dataplane mode, no sidecar
injection, no revision), nothing would report the canary's requests: that is said too. A namespace without
labels on the VirtualService path is left alone (sidecars may be injected per pod).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coalmine.core.models import HTTP_ROUTE, VIRTUAL_SERVICE

JsonDict = Mapping[str, Any]
Labels = Mapping[str, str]

DATAPLANE_MODE = "istio.io/dataplane-mode"
USE_WAYPOINT = "istio.io/use-waypoint"
INGRESS_USE_WAYPOINT = "istio.io/ingress-use-waypoint"
SIDECAR_LABELS = ("istio-injection", "istio.io/rev")


def ingress_parents(route: JsonDict | None) -> list[str]:
    """The Gateways (not Services: those are mesh, GAMMA, parents) an HTTPRoute is bound to."""
    found = []
    for ref in ((route or {}).get("spec") or {}).get("parentRefs") or []:
        if ref.get("kind", "Gateway") == "Gateway" and ref.get("group", "gateway.networking.k8s.io") != "":
            found.append(str(ref.get("name")))
    return found


def check(
    kind: str,
    namespace: str,
    namespace_labels: Labels | None,
    services: Mapping[str, Labels | None],
    route: JsonDict | None = None,
) -> list[str]:
    """What is missing, one sentence each, naming the object and the label ([]: nothing found missing)."""
    ns = dict(namespace_labels or {})
    ns_ambient = ns.get(DATAPLANE_MODE) == "ambient"
    ambient = [name for name, labels in services.items() if _ambient(ns_ambient, labels)]
    problems: list[str] = []
    for name, labels in services.items():
        if labels is not None and labels.get(DATAPLANE_MODE) == "none" and ns_ambient:
            problems.append(
                f"Service {namespace}/{name} is not enrolled in the mesh ({DATAPLANE_MODE}=none on it, namespace "
                f"{namespace} is ambient): nothing reports its requests"
            )
    if not ambient:
        if kind == HTTP_ROUTE and not ns_ambient and not any(k in ns for k in (DATAPLANE_MODE, *SIDECAR_LABELS)):
            problems.append(
                f"namespace {namespace} is not enrolled in the mesh (no {DATAPLANE_MODE}=ambient, istio-injection "
                "or istio.io/rev label): nothing would report the canary's requests; label it "
                f"{DATAPLANE_MODE}=ambient"
            )
        return problems
    if kind == VIRTUAL_SERVICE:
        problems.append(
            f"spec.virtualService: namespace {namespace} runs in ambient mode ({DATAPLANE_MODE}=ambient), where "
            "VirtualService is Alpha and cannot split the versions of one Service; use spec.httpRoute with an "
            "HTTPRoute and one Service per version"
        )
    for name in ambient:
        labels = services.get(name) or {}
        waypoint = labels.get(USE_WAYPOINT) or ns.get(USE_WAYPOINT)
        if labels.get(USE_WAYPOINT) == "none" or not waypoint or waypoint == "none":
            problems.append(
                f"Service {namespace}/{name} has no waypoint ({USE_WAYPOINT} on it or on namespace {namespace}): "
                'under ambient only a waypoint reports L7 metrics (reporter="waypoint"), so every check would '
                "have no data"
            )
    gateways = ingress_parents(route) if kind == HTTP_ROUTE else []
    if gateways:
        bypass = [
            n
            for n in ambient
            if (services.get(n) or {}).get(INGRESS_USE_WAYPOINT, ns.get(INGRESS_USE_WAYPOINT)) != "true"
        ]
        if bypass:
            problems.append(
                f"ingress traffic from Gateway {', '.join(gateways)} bypasses the waypoint of Service "
                f"{', '.join(f'{namespace}/{n}' for n in bypass)}: label them (or namespace {namespace}) "
                f'{INGRESS_USE_WAYPOINT}="true", or the waypoint never sees (nor reports) that traffic'
            )
    return problems


def _ambient(ns_ambient: bool, labels: Labels | None) -> bool:
    mode = (labels or {}).get(DATAPLANE_MODE)
    return mode == "ambient" or (ns_ambient and mode != "none")


def summary(problems: Sequence[str]) -> str:
    return "preflight: " + "; ".join(problems)
