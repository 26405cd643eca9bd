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

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a Service: whether it takes traffic, its Pod's labels ({} when unknown), and the
    workload that owns the Pod ("" when unknown; see `pod_workload`)."""

    ready: bool
    labels: Mapping[str, str]
    workload: str = ""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


# Labels a ReplicaSet's name ends with ("-<hash>"): Deployments set the first, Argo Rollouts the second.
_TEMPLATE_HASH_LABELS = ("pod-template-hash", "rollouts-pod-template-hash")


def pod_workload(pod: Mapping[str, Any]) -> str:
    """The workload name Istio reports as `destination_workload` for this Pod ("" when unknown).

    Istio names a Pod's workload after its controller: a Pod owned by a ReplicaSet `<name>-<hash>`
    (a Deployment's, or an Argo Rollout's) belongs to workload `<name>`; any other owner gives its own
    name. A Pod without an owner gives "" here (Istio would use the Pod's name): meshsim then keeps
    its older `<host>-<version>` name, which tests with bare Pods rely on. Flagger's built-in Istio
    checks select on this label.
    """
    meta = _meta(pod)
    labels = meta.get("labels") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")] or list(
        meta.get("ownerReferences") or []
    )
    if not owners:
        return ""
    owner = str(owners[0].get("name", ""))
    if owners[0].get("kind") == "ReplicaSet":
        for label in _TEMPLATE_HASH_LABELS:
            suffix = f"-{labels.get(label)}"
            if labels.get(label) and owner.endswith(suffix):
                return owner[: -len(suffix)]
    return owner


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
        pod_labels: dict[tuple[str, str], Mapping[str, str]] = {}
        pod_workloads: dict[tuple[str, str], str] = {}
        for p in pods:
            key = (str(_meta(p).get("namespace", "")), str(_meta(p).get("name", "")))
            pod_labels[key] = _meta(p).get("labels") or {}
            pod_workloads[key] = pod_workload(p)
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
                workload = ""
                if ref.get("kind") == "Pod":
                    pod_key = (str(ref.get("namespace") or namespace), str(ref.get("name")))
                    labels = pod_labels.get(pod_key, {})
                    workload = pod_workloads.get(pod_key, "")
                self._endpoints[key].append(Endpoint(is_ready(endpoint), labels, workload))

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

    def workload(self, namespace: str, host: str, subset_labels: Mapping[str, str] | None) -> str | None:
        """The workload owning most ready endpoints of `host` that match `subset_labels` (ties: the
        first by name); None when the host is not followed or no such endpoint has a known owner."""
        wanted = dict(subset_labels or {})
        owners = Counter(
            e.workload
            for e in self._endpoints.get((namespace, host), ())
            if e.ready and e.workload and all(e.labels.get(k) == str(v) for k, v in wanted.items())
        )
        if not owners:
            return None
        return min(owners, key=lambda name: (-owners[name], name))

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
