"""Kubernetes reads and writes the operator makes, on kubernetes_asyncio (one event loop, no threads).

Writes are guarded: the Rollout status patch carries the resourceVersion it was decided on (a stale
writer gets 409), and VirtualService patches carry `test` ops (a concurrent edit gets 422). Both
surface as `Conflict`, after which the caller re-reads and decides again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from coalmine.core.models import Ref
from coalmine.core.validation import Workloads, short_host

GROUP, VERSION, PLURAL = "coalmine.dev", "v1alpha1", "rollouts"
ISTIO_GROUP, ISTIO_VERSION = "networking.istio.io", "v1"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
ROUTE_PLURALS = ("virtualservices", "httproutes")
# Every write the operator makes names it, so `kubectl get -o yaml --show-managed-fields` says who moved the
# weights. (Not a key for Argo CD's managedFieldsManagers on VirtualServices: `http` is an atomic list, so
# this manager owns all of it; README, GitOps.)
FIELD_MANAGER = "coalmine"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def cached(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the caches keep it: without `metadata.managedFields`, which nothing here reads and which
    is a quarter of a Rollout's memory (9 of 33 KB for one in progress)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class IstioCache:
    """The VirtualServices and DestinationRules the watch delivered: an informer-style cache, never truth.

    Reads go through it so a tick costs no GET or LIST; a miss reads the API server once. Staleness
    is safe: VirtualService writes are guarded by `test` ops, so a write computed from an old copy is
    refused and the caller re-reads.
    """

    def __init__(self) -> None:
        self.virtual_services: dict[tuple[str, str], dict[str, Any]] = {}
        self.http_routes: dict[tuple[str, str], dict[str, Any]] = {}
        self.rules: dict[str, dict[str, dict[str, Any]]] = {}
        self.rules_by_host: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # (namespace, short host)
        self.listed: set[str] = set()  # namespaces whose DestinationRules were listed once
        self.changes: dict[str, int] = {}  # namespace -> how many times what the cache holds of it changed

    def observe(self, plural: str, event_type: str | None, obj: dict[str, Any]) -> bool:
        """Keep the newest copy; True when this is news (not an echo of a write the cache already has)."""
        news = self._observe(plural, event_type, obj)
        if news:
            namespace = str(obj.get("metadata", {}).get("namespace", ""))
            self.changes[namespace] = self.changes.get(namespace, 0) + 1
        return news

    def _observe(self, plural: str, event_type: str | None, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if plural == "virtualservices":
            return self._store(self.virtual_services, (namespace, name), event_type, obj)
        if plural == "httproutes":
            return self._store(self.http_routes, (namespace, name), event_type, obj)
        table = self.rules.setdefault(namespace, {})
        before = table.get(name)
        news = self._store(table, name, event_type, obj)
        if news:
            if before is not None:
                self.rules_by_host.get((namespace, _short_host(before)), {}).pop(name, None)
            if name in table:
                self.rules_by_host.setdefault((namespace, _short_host(table[name])), {})[name] = table[name]
        return news

    def rules_for(self, namespace: str, hosts: Collection[str] | None) -> list[dict[str, Any]]:
        """The namespace's DestinationRules; with `hosts` (short names), only those whose host starts so."""
        if hosts is None:
            return list(self.rules.get(namespace, {}).values())
        return [rule for host in sorted(hosts) for rule in self.rules_by_host.get((namespace, host), {}).values()]

    @staticmethod
    def _store(table: dict[Any, dict[str, Any]], key: Any, event_type: str | None, obj: dict[str, Any]) -> bool:
        if event_type == "DELETED":
            return table.pop(key, None) is not None
        known = table.get(key)
        if known is None or resource_version(known) < resource_version(obj):
            table[key] = cached(obj)
            return True
        return False


def _short_host(rule: dict[str, Any]) -> str:
    return short_host(str((rule.get("spec") or {}).get("host", "")))


WORKLOAD_KINDS = ("services", "endpointslices", "pods")


class WorkloadCache:
    """What readiness needs of each namespace's Services, EndpointSlices and Pods, fed by the watch:
    whether a Service has a selector, each slice's endpoints (ready, Pod), each Pod's labels. Only
    these few fields are kept, so watching every pod costs little memory.

    A namespace is listed from the API server the first time a tick asks for it (a tick must not
    count pods the watch has not delivered yet); after that the watch keeps it current.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, tuple[int, Any]]]] = {kind: {} for kind in WORKLOAD_KINDS}
        self.listed: set[str] = set()
        self.changes: dict[str, int] = {}  # namespace -> how many times what the cache holds of it changed

    @staticmethod
    def essence(kind: str, obj: dict[str, Any]) -> Any:
        if kind == "services":
            return bool((obj.get("spec") or {}).get("selector"))
        if kind == "pods":
            return dict((obj.get("metadata") or {}).get("labels") or {})
        service = ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name", "")
        endpoints = []
        for endpoint in obj.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready")
            ref = endpoint.get("targetRef") or endpoint.get("target_ref") or {}
            pod = ref.get("name") if ref.get("kind") == "Pod" else None
            endpoints.append((ready is None or bool(ready), pod))
        return (service, tuple(endpoints))

    def observe(self, kind: str, event_type: str | None, obj: dict[str, Any]) -> bool:
        """Keep what readiness needs of the object; True when that changed."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        table = self.tables[kind].setdefault(namespace, {})
        name = str(meta.get("name", ""))
        if event_type == "DELETED":
            changed = table.pop(name, None) is not None
        else:
            known = table.get(name)
            version = resource_version(obj)
            if known is not None and known[0] >= version:
                return False
            essence = self.essence(kind, obj)
            table[name] = (version, essence)
            changed = known is None or known[1] != essence
        if changed:
            self.changes[namespace] = self.changes.get(namespace, 0) + 1
        return changed

    def workloads(self, namespace: str) -> Workloads:
        services, slices, pods = (self.tables[kind].get(namespace, {}) for kind in WORKLOAD_KINDS)
        endpoints: dict[str, list[tuple[bool, str | None]]] = {}
        for _, (service, items) in slices.values():
            endpoints.setdefault(service, []).extend(items)
        return Workloads(
            selectors={name: selector for name, (_, selector) in services.items()},
            endpoints=endpoints,
            pod_labels={name: labels for name, (_, labels) in pods.items()},
        )


def _group_version(plural: str) -> tuple[str, str]:
    return (GATEWAY_GROUP, GATEWAY_VERSION) if plural == "httproutes" else (ISTIO_GROUP, ISTIO_VERSION)


def resource_version(obj: dict[str, Any]) -> int:
    """The object's resourceVersion as a number, to tell newer copies from older (0 when absent)."""
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


class Conflict(Exception):
    """Someone else changed the object since it was read; re-read and decide again."""


class Gone(Conflict):
    """The object no longer exists (deleted while its tick ran): nothing to record, forget it."""


class Refused(Exception):
    """The API server (schema, admission, RBAC) refused the write for what it is, not for a concurrent
    edit; the message is the server's own. Retrying the same write will not help soon."""


class Unavailable(Exception):
    """The API server could not take the write now (5xx: an admission webhook down, a timeout); the
    message is the server's own. The same write may succeed in a moment."""


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _server_message(exc: ApiException) -> str:
    return str(_status_body(exc).get("message") or f"{exc.status} {exc.reason}")


def _is_failed_test(exc: ApiException) -> bool:
    """A JSON patch that no longer applies (a `test` op fails, a path is gone): the object changed since
    it was read. kube-apiserver answers it with a bare 422 Status; a 422 from schema validation or an
    admission webhook names the object (details.kind/name) and usually the fields (details.causes)."""
    details = _status_body(exc).get("details") or {}
    return exc.status == 422 and not details.get("kind") and not details.get("causes")


class KubeApi:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        component: str = "coalmine",
        cache: IstioCache | None = None,
        workloads: WorkloadCache | None = None,
    ) -> None:
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._component = component
        self._cache = cache
        self.workload_cache = workloads

    async def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether API discovery lists `plural` in `group`/`version` now (a 404: the group/version is not
        served). Raises Unavailable when the API server answers an error, and the client's own errors when
        it cannot be reached."""
        try:
            if group:
                found = await self._custom.get_api_resources(group, version)
            else:
                found = await self._core.get_api_resources()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise Unavailable(_server_message(exc)) from exc
        return any(resource.name == plural for resource in found.resources or ())

    async def get_workloads(self, namespace: str) -> Workloads | None:
        """The namespace's Services, EndpointSlices and Pods as readiness needs them (None: not watched)."""
        cache = self.workload_cache
        if cache is None:
            return None
        if namespace not in cache.listed:
            calls = (
                self._core.list_namespaced_service,
                self._discovery.list_namespaced_endpoint_slice,
                self._core.list_namespaced_pod,
            )
            for kind, call in zip(WORKLOAD_KINDS, calls, strict=True):
                result = await call(namespace)
                for item in self._api_client.sanitize_for_serialization(result)["items"]:
                    cache.observe(kind, "MODIFIED", item)
            cache.listed.add(namespace)
        return cache.workloads(namespace)

    def _table(self, plural: str) -> dict[tuple[str, str], dict[str, Any]] | None:
        if self._cache is None:
            return None
        return self._cache.http_routes if plural == "httproutes" else self._cache.virtual_services

    async def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_route("virtualservices", namespace, name)

    async def read_virtual_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.read_route("virtualservices", namespace, name)

    async def patch_virtual_service(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.patch_route("virtualservices", namespace, name, ops)

    async def get_route(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A VirtualService or HTTPRoute (`plural`), from the cache when the watch delivered it."""
        table = self._table(plural)
        if table is not None and (namespace, name) in table:
            return table[namespace, name]
        return await self.read_route(plural, namespace, name)

    async def read_route(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """From the API server, not the cache (on a miss, or after a refused write). None when it does not
        exist, or when its kind is not served (Gateway API's CRDs not installed)."""
        group, version = _group_version(plural)
        try:
            result: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                group, version, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if self._cache is not None:
            self._cache.observe(plural, "MODIFIED", result)
        return result

    async def get_labels(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """The labels of a Namespace (`kind` "Namespace", `namespace` ignored) or a Service; None when it does
        not exist. For the ambient preflight, read once when a generation starts."""
        try:
            if kind == "Namespace":
                meta = (await self._core.read_namespace(name)).metadata
            else:
                meta = (await self._core.read_namespaced_service(name, namespace)).metadata
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:  # an install whose RBAC predates the preflight
                raise Refused(_server_message(exc)) from exc
            raise
        return dict((meta.labels if meta is not None else None) or {})

    async def list_destination_rules(
        self, namespace: str, hosts: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """The namespace's DestinationRules; with `hosts` (short names: `order` for `order.shop.svc...`),
        only those whose host is one of them, from an index: a tick in a namespace of 1,000 services does
        not copy and scan 1,000 rules."""
        if self._cache is not None and namespace in self._cache.listed:
            return self._cache.rules_for(namespace, hosts)
        result = await self._custom.list_namespaced_custom_object(
            ISTIO_GROUP, ISTIO_VERSION, namespace, "destinationrules"
        )
        items: list[dict[str, Any]] = result.get("items", [])
        if self._cache is not None:
            for item in items:
                self._cache.observe("destinationrules", "MODIFIED", item)
            self._cache.listed.add(namespace)
        return items if hosts is None else [r for r in items if _short_host(r) in hosts]

    async def patch_route(self, plural: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        group, version = _group_version(plural)
        kind = "HTTPRoute" if plural == "httproutes" else "VirtualService"
        try:
            result: dict[str, Any] = await self._custom.patch_namespaced_custom_object(
                group,
                version,
                namespace,
                plural,
                name,
                ops,
                field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH,  # type: ignore[call-arg]  # kwarg the stubs miss
            )
        except ApiException as exc:
            if exc.status == 409 or _is_failed_test(exc):
                raise Conflict(f"{kind} {namespace}/{name} changed concurrently: {_server_message(exc)}") from exc
            if exc.status in (400, 403, 404, 422):
                raise Refused(_server_message(exc)) from exc
            if exc.status >= 500:
                raise Unavailable(_server_message(exc)) from exc
            raise
        if self._cache is not None:
            self._cache.observe(plural, "MODIFIED", result)
        return result

    async def patch_rollout_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            result: dict[str, Any] = await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"Rollout {namespace}/{name} changed since resourceVersion {resource_version}") from exc
            if exc.status == 404:  # deleted while its tick ran: nothing to record
                raise Gone(f"Rollout {namespace}/{name} was deleted since resourceVersion {resource_version}") from exc
            raise
        return result

    async def post_event(self, ref: Ref, *, type_: str, reason: str, message: str, now: datetime) -> None:
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ref.namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="Rollout",
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid or None,
                resource_version=ref.resource_version or None,
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=self._component),
            reporting_component=self._component,
            reporting_instance=self._component,
        )
        await self._core.create_namespaced_event(ref.namespace, event, field_manager=FIELD_MANAGER)
