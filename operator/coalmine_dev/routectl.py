"""A simulated Gateway API route controller for the local stack: it sets HTTPRoute status as Istio would.

Why it exists: on a cluster, istiod (or another Gateway API implementation) reports on every HTTPRoute
generation, per parentRef, whether it is Accepted and whether its backendRefs resolve (ResolvedRefs).
The operator waits for both before a step counts. The local stack runs no istiod, so this small
controller does that part, and nothing else: it watches HTTPRoutes, and for each generation writes
`status.parents` (one entry per parentRef, controllerName CONTROLLER) with

- Accepted=True (reason Accepted), or False (reason NotAllowedByListeners, the annotation's text as the
  message) when the route carries the annotation REFUSE;
- ResolvedRefs=True (reason ResolvedRefs), or False (reason BackendNotFound) naming the backendRef
  Services that do not exist;

each with the route's `metadata.generation` as observedGeneration. It writes only the status
subresource, and only when that changes. `delay` postpones every write (a slow controller).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

log = logging.getLogger("coalmine_dev.routectl")

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
CONTROLLER = "coalmine.dev/simulated-route-controller"
REFUSE = "routectl.coalmine.dev/refuse"  # annotation: Accepted=False with this message


def route_status(route: dict[str, Any], missing: list[str], now: str) -> list[dict[str, Any]]:
    """The status.parents this controller reports for `route` (pure)."""
    meta = route.get("metadata") or {}
    generation = meta.get("generation")
    refused = (meta.get("annotations") or {}).get(REFUSE)
    parents = []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        accepted = {
            "type": "Accepted",
            "status": "False" if refused else "True",
            "reason": "NotAllowedByListeners" if refused else "Accepted",
            "message": refused or "Route was valid",
            "observedGeneration": generation,
            "lastTransitionTime": now,
        }
        resolved = {
            "type": "ResolvedRefs",
            "status": "False" if missing else "True",
            "reason": "BackendNotFound" if missing else "ResolvedRefs",
            "message": f"backend Service {', '.join(missing)} not found" if missing else "All references resolved",
            "observedGeneration": generation,
            "lastTransitionTime": now,
        }
        parents.append({"parentRef": ref, "controllerName": CONTROLLER, "conditions": [accepted, resolved]})
    return parents


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def strip(parents: list[dict[str, Any]]) -> Any:
        return [
            {**p, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in p["conditions"]]}
            for p in parents
        ]

    return bool(strip(a) == strip(b))


class RouteController:
    """Watch HTTPRoutes in `namespace` ("" = all) and keep their status, in a thread: start(), stop()."""

    def __init__(self, api_client: Any, namespace: str = "", delay: float = 0.0) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.delay = delay
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"routectl-{namespace or 'all'}", daemon=True)

    def start(self) -> RouteController:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _missing(self, route: dict[str, Any]) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        route_ns = route["metadata"]["namespace"]
        missing = []
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                ns = ref.get("namespace") or route_ns
                try:
                    self.core.read_namespaced_service(ref["name"], ns)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    missing.append(f"{ns}/{ref['name']}")
        return sorted(set(missing))

    def reconcile(self, route: dict[str, Any]) -> None:
        if self.delay:
            self.stop_event.wait(self.delay)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        parents = route_status(route, self._missing(route), now)
        current = ((route.get("status") or {}).get("parents")) or []
        ours = [p for p in current if p.get("controllerName") == CONTROLLER]
        if _same(ours, parents):
            return
        others = [p for p in current if p.get("controllerName") != CONTROLLER]
        meta = route["metadata"]
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": {"parents": others + parents}}
        )

    def _loop(self) -> None:
        from kubernetes import watch

        func: Any
        args: tuple[str, ...]
        while not self.stop_event.is_set():
            try:
                if self.namespace:
                    func, args = self.custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)
                else:
                    func, args = self.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
                listing = json.loads(func(*args, _preload_content=False).data)
                for item in listing.get("items") or []:
                    self.reconcile(item)
                w = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    func, *args, resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=20
                ):
                    if self.stop_event.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(event["raw_object"])
                    elif event["type"] == "ERROR":
                        break
            except Exception as exc:  # re-list after any error, as a controller would
                log.warning("routectl: %s; re-listing", exc)
                self.stop_event.wait(0.5)
