"""One behavioural suite for both traffic routers: the seed scenario on a VirtualService (sidecars) or on an
HTTPRoute (ambient, a waypoint reporting), behind the same small interface the tests use.

`Routed(kind, ...)` applies the objects, creates the Rollout, reads the canary's weight of the owned route
and the route object with the owned part and server fields removed (for byte-equal comparisons).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes import client
from rollout_support import ISTIO, Shop, rollout, without_owned_route

GATEWAY = ("gateway.networking.k8s.io", "v1")
AMBIENT_LABELS = {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}


def http_route(namespace: str) -> dict[str, Any]:
    """The seed scenario as an HTTPRoute: a beta rule ahead of the weighted primary rule, a filter, a timeout,
    a mesh (GAMMA) parentRef on Service `order` and one Service per version."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "order", "namespace": namespace, "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "order", "port": 8080}],
            "rules": [
                {
                    "name": "beta",
                    "matches": [{"headers": [{"name": "user-group", "value": "beta"}]}],
                    "backendRefs": [{"name": "order-v2", "port": 8080}],
                },
                {
                    "name": "primary",
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "order"}]},
                        }
                    ],
                    "timeouts": {"request": "5s"},
                    "backendRefs": [{"name": "order-v1", "port": 8080, "weight": 100}],
                },
            ],
        },
    }


def service(namespace: str, name: str) -> client.V1Service:
    """A Service without a selector: meshsim treats it as served (no pods needed) and the route controller
    resolves it."""
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8080, name="http")]),
    )


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Routed(Shop):
    """The seed scenario on router `kind` ("VirtualService" or "HTTPRoute")."""

    def __init__(self, api_client: client.ApiClient, namespace: str, kind: str) -> None:
        super().__init__(api_client, namespace)
        self.kind = kind

    @property
    def http(self) -> bool:
        return self.kind == "HTTPRoute"

    @property
    def canary_key(self) -> tuple[str, str]:
        """(host, subset) of the canary as meshsim's destinations name it."""
        return ("order-v2", "") if self.http else ("order", "v2")

    def apply(self, labels: dict[str, str] | None = None) -> None:
        if not self.http:
            self.apply_istio()
            return
        self.label_namespace(AMBIENT_LABELS if labels is None else labels)
        for name in ("order", "order-v1", "order-v2"):
            self.core.create_namespaced_service(self.ns, service(self.ns, name))
        self.custom.create_namespaced_custom_object(*GATEWAY, self.ns, "httproutes", http_route(self.ns))

    def label_namespace(self, labels: dict[str, str]) -> None:
        self.core.patch_namespace(self.ns, {"metadata": {"labels": labels}})

    def body(self, **spec: Any) -> dict[str, Any]:
        body = rollout(self.ns, **spec)
        if self.http:
            body["spec"].pop("virtualService")
            body["spec"]["httpRoute"] = {"name": "order", "rules": ["primary"]}
            body["spec"]["stable"] = {"host": "order-v1"}
            body["spec"]["canary"] = {"host": "order-v2"}
        return body

    def create(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            "coalmine.dev", "v1alpha1", self.ns, "rollouts", self.body(**spec)
        )
        return result

    def route(self) -> dict[str, Any]:
        if not self.http:
            return self.get_vs()
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(*GATEWAY, self.ns, "httproutes", "order")
        return result

    def patch_route_metadata(self, patch: dict[str, Any]) -> None:
        group = GATEWAY if self.http else ISTIO
        plural = "httproutes" if self.http else "virtualservices"
        self.custom.patch_namespaced_custom_object(*group, self.ns, plural, "order", {"metadata": patch})

    def weights(self) -> dict[str, int]:
        route = self.route()
        if not self.http:
            return self.primary_weights(route)
        rule = next(r for r in route["spec"]["rules"] if r.get("name") == "primary")
        return {ref["name"]: ref.get("weight", 1) for ref in rule["backendRefs"]}

    def canary(self) -> int:
        return self.weights().get("order-v2" if self.http else "v2", 0)

    def unowned(self) -> bytes:
        """The route object without what the Rollout owns, server metadata or status, as canonical JSON."""
        route = self.route()
        if not self.http:
            return canonical(without_owned_route(route))
        route = copy.deepcopy(route)
        for rule in route["spec"]["rules"]:
            if rule.get("name") == "primary":
                rule.pop("backendRefs")
        route.pop("status", None)
        route["metadata"] = {k: v for k, v in route["metadata"].items() if k in ("name", "namespace", "labels")}
        return canonical(route)
