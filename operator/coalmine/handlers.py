"""The kopf wiring, the only module that knows kopf: login, watches, probes, and the operator's run loop.

kopf is used for what it is good at (login, watching with reconnects and bookmarks, probes,
logging). It gets no change-detecting handlers, so it writes no annotations and no finalizers on
Rollouts: deleting a Rollout never waits for the operator. Every watch event goes to the
`runtime.Operator`; the rollout logic is in reconcile.py and core/.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kopf._cogs.structs.references import Insights  # kopf.operator(insights=...); kopf is pinned in pyproject
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


@dataclass(frozen=True)
class Watched:
    """A resource the operator watches. A required one must be served; an optional one may be absent."""

    group: str
    version: str
    plural: str
    required: bool = True

    def __str__(self) -> str:
        return f"{self.plural}.{self.version}.{self.group}".removesuffix(".")


ROLLOUTS = Watched(GROUP, VERSION, PLURAL)
VIRTUAL_SERVICES = Watched(ISTIO_GROUP, ISTIO_VERSION, "virtualservices")
DESTINATION_RULES = Watched(ISTIO_GROUP, ISTIO_VERSION, "destinationrules")
# Readiness (spec.readiness): the ready pods of each subset, from Services, EndpointSlices and Pods.
WORKLOADS = (
    Watched("", "v1", "services"),
    Watched("discovery.k8s.io", "v1", "endpointslices"),
    Watched("", "v1", "pods"),
)
# Gateway API's HTTPRoutes (spec.httpRoute): a cluster without their CRD runs the rest.
HTTP_ROUTES = Watched(GATEWAY_GROUP, GATEWAY_VERSION, "httproutes", required=False)
WATCHED = (ROLLOUTS, VIRTUAL_SERVICES, DESTINATION_RULES, *WORKLOADS, HTTP_ROUTES)


def unresolved(watched: Collection[Watched], resolved: Collection[kopf.Resource]) -> list[Watched]:
    """The watched resources kopf found no API resource for (so it watches nothing for them)."""
    found = {(resource.group, resource.version, resource.plural) for resource in resolved}
    return [w for w in watched if (w.group, w.version, w.plural) not in found]


@dataclass
class StartGate:
    """The operator acts only once kopf watches every resource it must.

    kopf resolves the watched resources from API discovery once, at start-up (cluster scanning is off:
    it would need to watch CRDs cluster-wide). An API server that is restarting lists only part of its
    resources for a moment, and a replica started then would watch no Rollouts and still take the Lease:
    it would lead and do nothing while bad canaries kept their traffic (bench/chaos.py --seed 7, issue
    16). So the gate waits for kopf's resolution, then compares: a required resource missing, or an
    optional one that discovery does list now, stops the operator with exit code 1 (the kubelet starts
    it again, and that start resolves them). Only then does the operator campaign for the Lease.
    """

    insights: Insights = field(default_factory=Insights)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    failed: list[Watched] = field(default_factory=list)
    retry_every: float = 2.0
    _task: asyncio.Task[None] | None = None

    def open_when_resolved(self, operator: Operator) -> None:
        self._task = asyncio.create_task(self._open(operator), name="coalmine start gate")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _open(self, operator: Operator) -> None:
        await self.insights.ready_resources.wait()
        missing = unresolved(WATCHED, self.insights.watched_resources)
        fatal = [w for w in missing if w.required or await self._served(operator, w)]
        if fatal:
            self.failed[:] = fatal
            log.error(
                "the watches do not cover %s: the API server did not list them when the operator started "
                "(it was restarting, or their CRDs are not installed); exiting, so that a new start "
                "resolves them",
                ", ".join(map(str, fatal)),
            )
            self.stop.set()
            return
        for w in missing:
            log.warning(
                "%s: not served by the API server, so not watched (installed later, it is watched after a restart)", w
            )
        log.info("watching every resource it needs: acting")
        await operator.act()

    async def _served(self, operator: Operator, watched: Watched) -> bool:
        assert operator.ports is not None, "started before the gate opens"
        while True:
            try:
                return await operator.ports.kube.serves(watched.group, watched.version, watched.plural)
            except Exception as error:  # the API server restarting: ask again
                log.info("API discovery of %s failed (%s); asking again in %.0f s", watched, error, self.retry_every)
                await asyncio.sleep(self.retry_every)


def register(registry: kopf.OperatorRegistry, operator: Operator, gate: StartGate) -> None:
    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events carry the rollout's story
        settings.scanning.disabled = True
        settings.persistence.diffbase_storage = _NoDiffBase()
        await operator.start()
        gate.open_when_resolved(operator)

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
        await gate.close()
        await operator.stop()

    @kopf.on.event(group=ROLLOUTS.group, version=ROLLOUTS.version, plural=ROLLOUTS.plural, registry=registry)
    async def rollout_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe(event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.event(
        group=VIRTUAL_SERVICES.group,
        version=VIRTUAL_SERVICES.version,
        plural=VIRTUAL_SERVICES.plural,
        registry=registry,
    )
    async def virtual_service_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("virtualservices", event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.event(
        group=DESTINATION_RULES.group,
        version=DESTINATION_RULES.version,
        plural=DESTINATION_RULES.plural,
        registry=registry,
    )
    async def destination_rule_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("destinationrules", event.get("type"), cast(dict[str, Any], obj))

    # Read-only watches; the cache keeps only selectors, endpoints and pod labels.
    for watched in WORKLOADS:
        _watch_workload(registry, operator, watched)

    @kopf.on.event(group=HTTP_ROUTES.group, version=HTTP_ROUTES.version, plural=HTTP_ROUTES.plural, registry=registry)
    async def http_route_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_istio("httproutes", event.get("type"), cast(dict[str, Any], obj))

    @kopf.on.probe(id="rollouts", registry=registry)
    async def rollouts_known(**_: Any) -> int:
        return len(operator.bodies)


def _watch_workload(registry: kopf.OperatorRegistry, operator: Operator, watched: Watched) -> None:
    @kopf.on.event(group=watched.group, version=watched.version, plural=watched.plural, registry=registry)
    async def workload_event(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if isinstance(obj, dict):
            operator.observe_workload(watched.plural, event.get("type"), cast(dict[str, Any], obj))


def run(config: OperatorConfig) -> None:
    """Serve /metrics, then run kopf with the operator's handlers until it is stopped."""
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.listen_address)
    registry = kopf.OperatorRegistry()
    gate = StartGate()
    register(registry, Operator(config), gate)
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
            insights=gate.insights,
            stop_flag=gate.stop,
        )
    )
    if gate.failed:
        raise SystemExit(1)
