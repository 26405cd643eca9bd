"""The kopf wiring, the only module that knows kopf: login, watches, probes, and the operator's run loop.

kopf is used for what it is good at (login, watching with reconnects and bookmarks, probes,
logging). It gets no change-detecting handlers, so it writes no annotations and no finalizers on
Rollouts: deleting a Rollout never waits for the operator. Every watch event goes to the
`runtime.Operator`; the rollout logic is in reconcile.py and core/.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from coalmine.adapters.kube import GATEWAY_GROUP, GATEWAY_VERSION, GROUP, ISTIO_GROUP, ISTIO_VERSION, PLURAL, VERSION
from coalmine.runtime import Operator, OperatorConfig

log = logging.getLogger("coalmine.operator")


class _NoDiffBase(kopf.DiffBaseStorage):
    """No change-detecting handlers read kopf's diffs, so none is built: kopf's default storage deep-copies
    every watched object (a Rollout with its whole status, every Pod and EndpointSlice) on every event to
    compute a diff nobody reads, 9 % of the operator's CPU at 1,000 Rollouts (bench/README.md, issue 17)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events carry the rollout's story
        settings.scanning.disabled = True
        settings.persistence.diffbase_storage = _NoDiffBase()
        await operator.start()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A custom registry has none of kopf's default login handlers: in a pod use the
        # ServiceAccount, elsewhere the kubeconfig ($KUBECONFIG or ~/.kube/config).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        return info

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await operator.stop()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def rollout_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe(event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.event(ISTIO_GROUP, ISTIO_VERSION, "virtualservices", registry=registry)
    async def virtual_service_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("virtualservices", event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.event(ISTIO_GROUP, ISTIO_VERSION, "destinationrules", registry=registry)
    async def destination_rule_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("destinationrules", event.get("type"), cast(dict[str, Any], obj))

    # Readiness (spec.readiness): the ready pods of each subset, from Services, EndpointSlices and Pods.
    # Read-only watches; the cache keeps only selectors, endpoints and pod labels.
    for group_version, plural in (("v1", "services"), ("discovery.k8s.io/v1", "endpointslices"), ("v1", "pods")):
        _watch_workload(registry, operator, group_version, plural)

    # Gateway API's HTTPRoutes (spec.httpRoute); on a cluster without their CRD kopf warns and serves the rest.
    @kopf.on.event(GATEWAY_GROUP, GATEWAY_VERSION, "httproutes", registry=registry)
    async def http_route_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("httproutes", event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.probe(id="rollouts", registry=registry)
    async def rollouts_known(**_: Any) -> int:
        return len(operator.bodies)


def _watch_workload(registry: kopf.OperatorRegistry, operator: Operator, group_version: str, plural: str) -> None:
    @kopf.on.event(group_version, plural, registry=registry)
    async def workload_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_workload(plural, event.get("type"), cast(dict[str, Any], obj))


def run(config: OperatorConfig) -> None:
    """Serve /metrics, then run kopf with the operator's handlers until it is stopped."""
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.listen_address)
    registry = kopf.OperatorRegistry()
    register(registry, Operator(config))
    liveness = f"http://{config.listen_address}:{config.health_port}/healthz" if config.health_port else None
    election = config.election
    log.info(
        "coalmine starting: namespaces=%s prometheus=%s leader election=%s",
        ",".join(config.namespaces) or "*",
        config.prometheus_url,
        f"Lease {election.namespace}/{election.name} as {election.identity}" if election else "off",
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
        )
    )
