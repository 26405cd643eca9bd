"""The running operator, and its composition root: caches fed by the watch, the scheduler, leader
election, and one tick per Rollout.

The caches (the latest watch event per Rollout, the route claims of each namespace, and the
VirtualServices and DestinationRules in adapters/kube.IstioCache) save reads; they are never truth.
A change to a VirtualService or DestinationRule ticks the Rollouts that read it; a Rollout's own
status echo does not. With leader election on, every replica watches (the cache stays warm, so a
takeover ticks at once) but only the Lease holder runs the scheduler; it is cancelled the moment the
lease is lost. kopf feeds `observe` and `observe_istio` (handlers.py); nothing here knows kopf.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from coalmine import __version__, metrics, reconcile
from coalmine.adapters.election import ElectionConfig, LeaseElector, ShardedElection
from coalmine.adapters.kube import FIELD_MANAGER, IstioCache, KubeApi, WorkloadCache, cached, resource_version
from coalmine.adapters.prometheus import PrometheusClient
from coalmine.adapters.tasks import cancel_and_wait
from coalmine.adapters.webhooks import Allowlist, Dispatcher, NotificationsConfig
from coalmine.core.models import REQUEST_ANNOTATION
from coalmine.core.sharding import shard_of
from coalmine.core.validation import Claim
from coalmine.scheduler import Scheduler, utcnow

log = logging.getLogger("coalmine.operator")


@dataclass(frozen=True)
class OperatorConfig:
    """Every operator setting, with its default: `coalmine run`'s flags take their defaults from here."""

    prometheus_url: str = "http://prometheus.istio-system:9090"
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    scrape_interval: timedelta = timedelta(seconds=15)
    resync: timedelta = timedelta(seconds=60)
    granularity: timedelta = timedelta(milliseconds=100)
    tick_concurrency: int = 128
    prometheus_concurrency: int = 16
    prometheus_timeout: float = 5.0
    listen_address: str = "0.0.0.0"
    health_port: int = 8080  # 0: no /healthz
    metrics_port: int = 9090  # 0: no /metrics
    identity: str = "coalmine"  # the Event source component
    election: ElectionConfig | None = None  # None: act at once, alone (local runs, tests)
    shards: int = 1  # > 1 (with election): one Lease per shard, replicas share them (core/sharding.py)
    webhook_allow: Allowlist = field(default_factory=Allowlist)  # what Rollouts' webhooks may call
    webhook_concurrency: int = 16  # webhook calls and notification deliveries in flight at once
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)  # channels, default

    @property
    def settings(self) -> reconcile.Settings:
        return reconcile.Settings(
            prometheus_url=self.prometheus_url, scrape_interval=self.scrape_interval, resync=self.resync
        )


@dataclass
class Operator:
    config: OperatorConfig
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Claim]] = field(default_factory=dict)  # namespace -> name -> what it claims
    # (namespace, kind, route object) -> the names claiming it: a tick gets those, not the whole namespace's
    claimants: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    checked: dict[str, datetime] = field(default_factory=dict)  # key -> its last check here (reconcile.tick)
    # key -> what a finished Rollout's last tick read, when that tick found nothing to do (Outcome.settled)
    settled: dict[str, tuple[int, ...]] = field(default_factory=dict)
    rollout_changes: dict[str, int] = field(default_factory=dict)  # namespace -> Rollout events seen in it
    istio: IstioCache = field(default_factory=IstioCache)
    workloads: WorkloadCache = field(default_factory=WorkloadCache)
    schedulers: dict[int, Scheduler] = field(default_factory=dict)  # shard -> its scheduler, while acting on it
    ports: reconcile.Ports | None = None
    dispatcher: Dispatcher | None = None  # webhook calls and notifications, off the ticks
    _api: k8s_client.ApiClient | None = None
    _election_api: k8s_client.ApiClient | None = None  # its own connections: renewals never queue behind ticks
    _tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    elector: LeaseElector | None = None
    sharded: ShardedElection | None = None
    _election_task: asyncio.Task[None] | None = None
    _loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config()
        self._api = _api_client()
        self.dispatcher = Dispatcher(
            allow=self.config.webhook_allow,
            concurrency=self.config.webhook_concurrency,
            config=self.config.notifications,
            clock=utcnow,
            poke=self._poke,
            report=metrics.delivery,
        )
        self.ports = reconcile.Ports(
            kube=KubeApi(self._api, component=self.config.identity, cache=self.istio, workloads=self.workloads),
            prometheus=PrometheusClient(
                concurrency=self.config.prometheus_concurrency, timeout=self.config.prometheus_timeout
            ),
            settings=self.config.settings,
            clock=utcnow,
            observe=metrics.observe,
            dispatcher=self.dispatcher,
        )
        self._loop_task = asyncio.create_task(_watch_loop_lag(), name="coalmine event loop lag")

    async def act(self) -> None:
        """Start acting: at once when alone, else campaign for the Lease (or the shards' Leases).

        Called once the watches cover every watched resource (handlers.py): a replica that leads with
        a watch missing would hold the Lease and do nothing."""
        election = self.config.election
        if election is None:
            self._lead(0)
            return
        metrics.LEADER.set(0)
        # A renewal that waits behind a hundred status PATCHes in the shared connection pool misses its
        # deadline and the replica stops acting (seen at 300 Rollouts on a starved API server).
        self._election_api = _api_client()
        if self.config.shards > 1:
            self.sharded = ShardedElection(
                self._election_api,
                election,
                self.config.shards,
                on_started=self._lead,
                on_stopped=self._follow,
                drain=self._drain,
            )
            self._election_task = asyncio.create_task(self.sharded.run(), name="coalmine shards")
            return
        self.elector = LeaseElector(
            self._election_api, election, on_started=lambda: self._lead(0), on_stopped=lambda: self._follow(0)
        )
        self._election_task = asyncio.create_task(self.elector.run(), name="coalmine leader election")

    def shard(self, key: str) -> int:
        namespace, _, name = key.partition("/")
        return shard_of(namespace, name, self.config.shards if self.sharded is not None else 1)

    def acting_on(self, key: str) -> bool:
        """Whether this replica may tick `key` now: alone, as the leader, or holding the key's shard."""
        if self.sharded is not None:
            return self.sharded.leading(self.shard(key))
        return self.elector is None or self.elector.leading

    def _lead(self, shard: int) -> None:
        """Start ticking every known Rollout of `shard` (their deadlines come from their status)."""
        scheduler = Scheduler(
            self.tick,
            concurrency=self.config.tick_concurrency,
            granularity=self.config.granularity,
            observe=metrics.observe,
        )
        self.schedulers[shard] = scheduler
        for key in [k for k in self.settled if self.shard(k) == shard]:
            del self.settled[key]  # a shard taken (back) starts from what it reads now
        for key in self.bodies:
            if self.shard(key) == shard:
                scheduler.poke(key)
        self._tasks[shard] = asyncio.create_task(scheduler.run(), name=f"coalmine scheduler {shard}")
        metrics.LEADER.set(1)
        if self.sharded is not None:
            log.info("acting on shard %d; shards held: %s", shard, sorted(self.schedulers))

    def _follow(self, shard: int) -> None:
        """Stop ticking the shard at once: cancel its scheduler and its ticks in flight; keep watching."""
        self.schedulers.pop(shard, None)
        task = self._tasks.get(shard)
        if task is not None:
            task.cancel()  # _drain or stop() awaits it
        metrics.LEADER.set(1 if self.schedulers else 0)
        if self.sharded is not None:
            log.info("stopped acting on shard %d; shards held: %s", shard, sorted(self.schedulers))

    async def _drain(self, shard: int) -> None:
        """Wait until the shard's cancelled scheduler and ticks have ended (before its Lease is released)."""
        task = self._tasks.pop(shard, None)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _scheduler_for(self, key: str) -> Scheduler | None:
        return self.schedulers.get(self.shard(key)) if self.schedulers else None

    def _owed(self, uid: str) -> bool:
        """Whether a webhook answer or a delivery outcome waits to be recorded in the Rollout's status."""
        if self.dispatcher is None:
            return False
        results, outcomes = self.dispatcher.observed(uid)
        return bool(results or outcomes)

    def _poke(self, key: str) -> None:
        """A webhook answered or a notification went out: the Rollout records it now."""
        scheduler = self._scheduler_for(key)
        if scheduler is not None and key in self.bodies:
            scheduler.poke(key)

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._election_task is not None:  # releases the Lease, so a peer takes over at once
            await cancel_and_wait(self._election_task)
        await asyncio.gather(*(cancel_and_wait(task) for task in self._tasks.values()))
        if self.ports is not None:
            await self.ports.prometheus.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self._api is not None:
            await self._api.close()
        if self._election_api is not None:
            await self._election_api.close()

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event: remember the newest body; tick it when it is new, its spec changed, or a person
        made a request (the annotation `coalmine.dev/request`: an abort must not wait for the next check).

        Status-only changes (above all our own writes echoing back) wait for the Rollout's next
        scheduled tick, which reads this newest body.
        """
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        key = f"{namespace}/{name}"
        if event_type == "DELETED":
            gone = self.bodies.pop(key, None)
            self._set_claim(namespace, name, None)
            self.checked.pop(key, None)
            self.settled.pop(key, None)
            self._changed(namespace)
            if gone is not None and self.dispatcher is not None:
                self.dispatcher.forget(str(gone["metadata"].get("uid", "")))
            metrics.forget(namespace, name)
            scheduler = self._scheduler_for(key)
            if scheduler is not None:
                scheduler.forget(key)
            self._poke_namespace(namespace)  # a Rollout waiting for this one's route may start
            return
        known = self.bodies.get(key)
        if known is not None and resource_version(known) >= resource_version(body):
            return
        self.bodies[key] = cached(body)
        self._set_claim(namespace, name, Claim.from_body(body))
        self._changed(namespace)
        changed = known is None or known["metadata"].get("generation") != meta.get("generation")
        changed = changed or _request(known) != _request(body)  # a person's request: look now
        scheduler = self._scheduler_for(key)
        if changed and scheduler is not None:
            scheduler.poke(key)

    def _changed(self, namespace: str) -> None:
        self.rollout_changes[namespace] = self.rollout_changes.get(namespace, 0) + 1

    def _reads(self, namespace: str, body: dict[str, Any]) -> tuple[int, ...]:
        """A fingerprint of everything a tick of `body` reads: its own version, and how often the
        namespace's Rollouts (claims), VirtualServices, HTTPRoutes, DestinationRules and workloads
        changed. Coarse on purpose: any change in the namespace counts."""
        return (
            resource_version(body),
            self.rollout_changes.get(namespace, 0),
            self.istio.changes.get(namespace, 0),
            self.workloads.changes.get(namespace, 0),
        )

    def _set_claim(self, namespace: str, name: str, claim: Claim | None) -> None:
        old = self.claims.get(namespace, {}).pop(name, None)
        if old is not None:
            names = self.claimants.get((namespace, old.kind, old.virtual_service))
            if names is not None:
                names.discard(name)
                if not names:
                    del self.claimants[namespace, old.kind, old.virtual_service]
        if claim is not None:
            self.claims.setdefault(namespace, {})[name] = claim
            self.claimants.setdefault((namespace, claim.kind, claim.virtual_service), set()).add(name)

    def _claims_for(self, namespace: str, name: str) -> tuple[Claim, ...]:
        """The claims on the route object this Rollout names (its own included): route ownership is
        decided among those alone. A Rollout naming none (a broken spec) gets the namespace's."""
        in_namespace = self.claims.get(namespace, {})
        mine = in_namespace.get(name)
        if mine is None:
            return tuple(in_namespace.values())
        names = self.claimants.get((namespace, mine.kind, mine.virtual_service), ())
        return tuple(in_namespace[n] for n in sorted(names))

    def observe_istio(self, plural: str, event_type: str | None, obj: dict[str, Any]) -> None:
        """A VirtualService or DestinationRule changed: the Rollouts that read it look again soon, so a
        vanished subset or route is acted on (and the status made true) now, not at the next check."""
        if not self.istio.observe(plural, event_type, obj):
            return  # an echo of our own write, already in the cache
        meta = obj.get("metadata", {})
        only = meta.get("name") if plural in ("virtualservices", "httproutes") else None
        self._poke_namespace(str(meta.get("namespace")), virtual_service=only)

    def observe_workload(self, kind: str, event_type: str | None, obj: dict[str, Any]) -> None:
        """A Service, EndpointSlice or Pod changed: when its ready pods or labels did, the namespace's
        Rollouts look again soon (a shift waiting for the canary goes on, a canary that lost its pods
        is checked)."""
        if self.workloads.observe(kind, event_type, obj):
            self._poke_namespace(str((obj.get("metadata") or {}).get("namespace")))

    def _poke_namespace(self, namespace: str, virtual_service: str | None = None) -> None:
        if not self.schedulers:
            return
        for name, claim in self.claims.get(namespace, {}).items():
            if virtual_service is None or claim.virtual_service == virtual_service:
                scheduler = self._scheduler_for(f"{namespace}/{name}")
                if scheduler is not None:
                    scheduler.poke_soon(f"{namespace}/{name}")

    async def tick(self, key: str) -> Any:
        body = self.bodies.get(key)
        if body is None or self.ports is None:
            return None
        if not self.acting_on(key):
            return None  # the Lease lapsed and the scheduler is being cancelled: write nothing
        namespace = str(body["metadata"].get("namespace"))
        reads = self._reads(namespace, body)
        uid = str(body["metadata"].get("uid", ""))
        if self.settled.get(key) == reads and not self._owed(uid):
            # Finished, and nothing it reads changed since a tick that found nothing to do: this one
            # would decide the same (no decision of a finished Rollout waits for time alone).
            metrics.SETTLED_TICKS.inc()
            return utcnow() + self.config.resync
        claims = self._claims_for(namespace, str(body["metadata"].get("name")))
        with metrics.TICK_SECONDS.time():
            try:
                outcome = await reconcile.tick(body, self.ports, claims, checked=self.checked.get(key))
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                raise
        known = self.bodies.get(key)
        if outcome.gone and known is not None and known["metadata"].get("uid") == body["metadata"].get("uid"):
            self.observe("DELETED", known)  # its DELETED event may have been missed (a watch gap)
            return None
        # Only a Rollout still known: one deleted while its tick ran must not come back from the tick's write.
        if known is not None and outcome.body is not None and resource_version(outcome.body) > resource_version(known):
            self.bodies[key] = outcome.body
        if outcome.checked_at is not None and key in self.bodies:
            self.checked[key] = outcome.checked_at
        if outcome.settled and key in self.bodies:
            self.settled[key] = reads
        else:
            self.settled.pop(key, None)
        if outcome.status is not None:
            metrics.record(namespace, str(body["metadata"].get("name")), outcome.status, outcome.events)
        return outcome.wake_at


def _api_client() -> k8s_client.ApiClient:
    """A client whose requests name the operator (User-Agent, so also the field manager of its writes)."""
    api = k8s_client.ApiClient()
    api.user_agent = f"{FIELD_MANAGER}/{__version__}"
    return api


async def _watch_loop_lag(period: float = 0.1) -> None:
    """Measure how late the event loop runs a sleep: time the loop spends on other work (JSON, pydantic,
    kopf's watch) delays every tick by as much."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(period)
        metrics.LOOP_LAG_SECONDS.observe(max(0.0, loop.time() - started - period))


def _request(body: dict[str, Any] | None) -> Any:
    """The steering request annotation of a Rollout body, as written (None when absent)."""
    return ((body or {}).get("metadata", {}).get("annotations") or {}).get(REQUEST_ANNOTATION)
