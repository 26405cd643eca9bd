"""Which pods can take a request: ready endpoints per Service and subset, as Envoy learns them from istiod.

Why it exists: in a mesh, a request routed to a subset whose pods are all unready (or absent) never
reaches a pod: the source sidecar answers 503 with response flag `UH` (no healthy upstream). meshsim
must show that, because it is what a canary without ready pods looks like in Istio's metrics.

The rule meshsim follows (the same in tests, the demo and by hand):
- A destination host is *followed* when a Service of that name **with a selector** exists in the
  host's namespace (and meshsim watches that namespace). Then the host's endpoints are the endpoints
  of the Service's EndpointSlices (label `kubernetes.io/service-name`) whose `conditions.ready` is
  true or unset (the API's "unknown, treat as ready"), and a subset's endpoints are those among them
  whose Pod (`targetRef`) carries every label of the DestinationRule subset, as istiod builds the
  subset clusters. A destination with no ready endpoint answers 503 `UH`.
- Any other host (no Service, or a Service without a selector) is *not followed*: meshsim does not
  know its pods and treats every destination as served, as it always has. Tests and benchmarks that
  create only VirtualServices and DestinationRules therefore behave as before.

What it must not do: I/O. It gets snapshots of Services, EndpointSlices and Pods as plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a Service: whether it takes traffic, and its Pod's labels ({} when unknown)."""

    ready: bool
    labels: Mapping[str, str]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def is_ready(endpoint: Mapping[str, Any]) -> bool:
    """EndpointSlice semantics: `ready` unset means unknown, which consumers treat as ready."""
    ready = (endpoint.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)


class EndpointIndex:
    """Ready endpoints by (namespace, service), built from one snapshot of the watched objects."""

    def __init__(
        self,
        services: Iterable[Mapping[str, Any]],
        endpoint_slices: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
    ) -> None:
        self._followed: set[tuple[str, str]] = set()
        self._versions: dict[tuple[str, str], str] = {}  # a Service per version: its selector's `version`
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector")
            if selector:
                key = (str(_meta(svc).get("namespace", "")), str(_meta(svc).get("name", "")))
                self._followed.add(key)
                if "version" in selector:
                    self._versions[key] = str(selector["version"])
        pod_labels: dict[tuple[str, str], Mapping[str, str]] = {
            (str(_meta(p).get("namespace", "")), str(_meta(p).get("name", ""))): _meta(p).get("labels") or {}
            for p in pods
        }
        self._endpoints: dict[tuple[str, str], list[Endpoint]] = {key: [] for key in self._followed}
        for eps in endpoint_slices:
            namespace = str(_meta(eps).get("namespace", ""))
            service = (_meta(eps).get("labels") or {}).get(SERVICE_NAME_LABEL)
            key = (namespace, str(service))
            if key not in self._endpoints:
                continue
            for endpoint in eps.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                labels: Mapping[str, str] = {}
                if ref.get("kind") == "Pod":
                    labels = pod_labels.get((str(ref.get("namespace") or namespace), str(ref.get("name"))), {})
                self._endpoints[key].append(Endpoint(is_ready(endpoint), labels))

    def version(self, namespace: str, host: str) -> str | None:
        """The `version` label the Service selects its pods by (None: it selects none)."""
        return self._versions.get((namespace, host))

    def follows(self, namespace: str, host: str) -> bool:
        return (namespace, host) in self._followed

    def ready_count(self, namespace: str, host: str, subset_labels: Mapping[str, str] | None) -> int | None:
        """Ready endpoints of service `host` whose pods match `subset_labels` (None: all of them).

        None when the host is not followed (see the module docstring): the caller assumes it is served.
        """
        endpoints = self._endpoints.get((namespace, host))
        if endpoints is None:
            return None
        wanted = dict(subset_labels or {})
        return sum(1 for e in endpoints if e.ready and all(e.labels.get(k) == str(v) for k, v in wanted.items()))

    def summary(self) -> dict[str, int]:
        """{"<namespace>/<service>": ready endpoints} for every followed service (for GET /mesh).

        Only endpoints whose Pod meshsim has seen count (a selected pod always has labels), so a count
        here means those endpoints can be matched to subsets.
        """
        return {
            f"{ns}/{name}": sum(1 for e in eps if e.ready and e.labels)
            for (ns, name), eps in sorted(self._endpoints.items())
        }


EMPTY = EndpointIndex((), (), ())
