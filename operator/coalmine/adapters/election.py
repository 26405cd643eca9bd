"""Lease-based leader election (coordination.k8s.io/v1 Lease), so that of two replicas exactly one acts.

kopf has no leader election (its peering pauses on equal priorities and a SIGKILLed peer blocks
takeover for 60 s), and `kubernetes_asyncio.leaderelection` was evaluated and not used: it writes
naive local times with a "Z" suffix (wrong outside UTC), leaves the election for good once it loses
the lease, never releases the lease on shutdown, logs every lost race as an exception, and a leader
whose renew request hangs keeps believing it leads. This elector follows client-go's rules instead:

- A candidate takes the Lease only when the holder has not renewed it for the Lease's
  `leaseDurationSeconds`, measured on the candidate's own monotonic clock from the moment it saw the
  record last change. No one trusts another host's clock. This holds when the Lease names the
  candidate itself, too: a renewal that answered too late may still have been written, and a replica
  that kept renewing a Lease it does not lead on would keep everyone from leading.
- Every write is a replace carrying the resourceVersion just read: of two racing candidates one gets
  409 and stays a follower.
- The leader renews every `retry_period`. It stops leading once it has not renewed for
  `renew_deadline` (< lease duration), counted from *before* the last request that succeeded, so it
  stops acting before anyone else may start. Every request is cut off at that deadline.
- A graceful stop releases the Lease (holder cleared), so a rolling update fails over at once. A
  SIGKILLed leader is replaced after at most lease_duration + 2 x retry_period (+ one request).

Leading is only an optimisation for quiet: correctness with two writers comes from the guarded
writes in adapters/kube.py, which hold even if the election misbehaves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from coalmine.adapters.tasks import cancel_and_wait
from coalmine.core import sharding

log = logging.getLogger("coalmine.election")


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0  # a holder silent this long may be replaced
    renew_deadline: float = 10.0  # a leader that could not renew for this long stops acting
    retry_period: float = 2.0  # how often the leader renews and candidates look

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration}s, {self.renew_deadline}s, {self.retry_period}s"
            )

    @property
    def failover_bound(self) -> float:
        """Longest time from a leader's SIGKILL to a follower taking the Lease (request time aside)."""
        return math.ceil(self.lease_duration) + 2 * self.retry_period


class LeaseElector:
    """Campaign for the Lease forever; call `on_started` when leading starts and `on_stopped` when it ends."""

    def __init__(
        self,
        api_client: client.ApiClient,
        config: ElectionConfig,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        may_acquire: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._api = client.CoordinationV1Api(api_client)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._may_acquire = may_acquire  # asked before taking a Lease this replica does not lead on
        self._clock = clock
        self._lock = asyncio.Lock()  # a round and a step_down never interleave
        self._renewed_at: float | None = None  # set while leading: start of the last successful renew
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    @property
    def leading(self) -> bool:
        """True while this replica holds a Lease it renewed less than renew_deadline ago."""
        return self._renewed_at is not None and self._clock() - self._renewed_at < self.config.renew_deadline

    async def run(self) -> None:
        try:
            while True:
                await self._round()
                await asyncio.sleep(self.config.retry_period)
        finally:
            if self._renewed_at is not None:
                self._stop_leading("shutting down")
                await self._release_within_retry_period()

    async def step_down(self, why: str, drain: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop leading now, wait for the work to end (`drain`), then release the Lease, so another
        replica may take it at once and never while this one still acts."""
        async with self._lock:
            if self._renewed_at is None:
                return
            self._stop_leading(why)
            if drain is not None:
                await drain()
            await self._release_within_retry_period()

    async def _round(self) -> None:
        async with self._lock:
            await self._round_locked()

    async def _round_locked(self) -> None:
        started = self._clock()
        if self._renewed_at is not None:
            budget = max(0.0, self._renewed_at + self.config.renew_deadline - started)
        else:
            budget = self.config.renew_deadline
        try:
            async with asyncio.timeout(budget):  # not wait_for: see _release_within_retry_period
                held = await self._try_acquire_or_renew(started)
        except Exception as exc:  # timeouts, API errors, connection errors: unknown, not lost
            log.warning("Lease %s: %s", self._lease_ref, str(exc) or type(exc).__name__)
            held = None  # a leader keeps leading until its renew deadline passes
        if held is True:
            if self._renewed_at is None:
                log.info("%s now leads (Lease %s)", self.config.identity, self._lease_ref)
                self._renewed_at = started
                self._on_started()
            else:
                self._renewed_at = started
        elif self._renewed_at is not None and (held is False or not self.leading):
            self._stop_leading("lost the Lease" if held is False else "could not renew the Lease in time")

    def _stop_leading(self, why: str) -> None:
        self._renewed_at = None
        log.warning("%s stops leading: %s", self.config.identity, why)
        self._on_stopped()

    @property
    def _lease_ref(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    async def _try_acquire_or_renew(self, now: float) -> bool:
        cfg = self.config
        wall = datetime.now(UTC)
        try:
            lease = await self._api.read_namespaced_lease(cfg.name, cfg.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if not self._may_acquire():
                return False
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=cfg.identity,
                    lease_duration_seconds=math.ceil(cfg.lease_duration),
                    acquire_time=wall,
                    renew_time=wall,
                    lease_transitions=0,
                ),
            )
            try:
                await self._api.create_namespaced_lease(cfg.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.holder_identity or ""
        if holder and holder != cfg.identity and self._renewed_at is not None:
            return False  # someone else holds it: we lost it
        if holder and self._renewed_at is None:
            # Held, by another or by us without our knowing it: a renewal whose answer came too late to count
            # may still have been written, so the Lease names us while we do not lead. Renewing it again at
            # once would keep it ours and nobody leading, as long as our answers are slow (a slow link to
            # the API server). So our own Lease, like another's, is taken only once nobody renewed it for
            # its duration; a healthy peer takes it first.
            duration = spec.lease_duration_seconds or math.ceil(cfg.lease_duration)
            if now - self._observed_at < duration:
                return False  # held, and renewed recently enough
        if self._renewed_at is None and not self._may_acquire():
            return False  # free (or expired), but this replica holds its share already
        if holder != cfg.identity:
            spec.acquire_time = wall
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
        spec.holder_identity = cfg.identity
        spec.renew_time = wall
        spec.lease_duration_seconds = math.ceil(cfg.lease_duration)
        lease.spec = spec
        try:
            await self._api.replace_namespaced_lease(cfg.name, cfg.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False  # the Lease changed since we read it: someone else wrote first
            raise
        return True

    async def _release_within_retry_period(self) -> None:
        # asyncio.timeout, never asyncio.wait_for: on Python 3.11 wait_for returns the inner result when the
        # inner call ends in the same loop iteration as a cancellation of the caller (CPython gh-86296), and
        # the cancellation is lost: a cancelled elector renewed its Lease forever after its replica stopped.
        try:
            async with asyncio.timeout(self.config.retry_period):
                await self._release()
        except Exception as exc:  # best effort: the Lease expires by itself
            log.warning("could not release Lease %s: %s", self._lease_ref, exc)

    async def _release(self) -> None:
        cfg = self.config
        lease = await self._api.read_namespaced_lease(cfg.name, cfg.namespace)
        if lease.spec is None or lease.spec.holder_identity != cfg.identity:
            return
        lease.spec.holder_identity = ""
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = datetime.now(UTC)
        await self._api.replace_namespaced_lease(cfg.name, cfg.namespace, lease)
        log.info("%s released Lease %s", cfg.identity, self._lease_ref)


class ShardedElection:
    """One Lease per shard (`<name>-shard-<k>`), and one per replica (`<name>-member-<identity>`) so the
    replicas can count each other; core/sharding.py says which Rollouts are in which shard.

    Each shard Lease is won, renewed and lost exactly as the single leader Lease (a LeaseElector
    each), so a shard is acted on by one replica at a time. A replica takes a free shard only while
    it holds fewer than its fair share (shards / live replicas, rounded up), and hands the excess
    over when more replicas appear: it stops acting on the shard, waits for its ticks to end
    (`drain`), and only then releases the Lease. A replica that dies keeps its shards until their
    Leases expire (lease duration), then the others take them.

    Live replicas are the member Leases whose record changed within the lease duration, measured on
    this replica's own clock from when it saw the change (no one trusts another host's clock).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        config: ElectionConfig,
        shards: int,
        *,
        on_started: Callable[[int], None],
        on_stopped: Callable[[int], None],
        drain: Callable[[int], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.shards = shards
        self._api = client.CoordinationV1Api(api_client)
        self._clock = clock
        self._drain = drain
        self.member = LeaseElector(
            api_client,
            replace(config, name=f"{config.name}-member-{config.identity}"),
            on_started=lambda: None,
            on_stopped=lambda: None,
            clock=clock,
        )
        self.electors = [
            LeaseElector(
                api_client,
                replace(config, name=f"{config.name}-shard-{k}"),
                on_started=functools.partial(on_started, k),
                on_stopped=functools.partial(on_stopped, k),
                may_acquire=self._may_acquire,
                clock=clock,
            )
            for k in range(shards)
        ]
        self.replicas = 1  # live member Leases seen, this one included
        self._seen: dict[str, tuple[tuple[Any, ...], float]] = {}

    def leading(self, shard: int) -> bool:
        return self.electors[shard].leading

    def held(self) -> set[int]:
        return {k for k, e in enumerate(self.electors) if e.leading}

    def _may_acquire(self) -> bool:
        return self.member.leading and len(self.held()) < sharding.fair_share(self.shards, self.replicas)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.member.run(), name="coalmine member Lease")]
        try:
            await asyncio.sleep(0)  # the member Lease first: it counts this replica
            tasks += [asyncio.create_task(e.run(), name=f"coalmine shard {k}") for k, e in enumerate(self.electors)]
            while True:
                try:
                    self.replicas = max(1, await self._count_replicas())
                    for shard in sharding.to_hand_over(self.held(), self.shards, self.replicas):
                        await self.electors[shard].step_down(
                            "handing over to another replica", functools.partial(self._drain, shard)
                        )
                except Exception as exc:  # API errors: count again next round; the shards stay as they are
                    log.warning("shard rebalancing: %s", str(exc) or type(exc).__name__)
                await asyncio.sleep(self.config.retry_period)
        finally:
            for task in reversed(tasks):  # shards first (each releases its Lease), the member Lease last
                await cancel_and_wait(task)

    async def _count_replicas(self) -> int:
        prefix = f"{self.config.name}-member-"
        leases = await self._api.list_namespaced_lease(self.config.namespace)
        now = self._clock()
        alive = 1  # this replica
        names = set()
        for lease in leases.items or []:
            name = lease.metadata.name or ""
            if not name.startswith(prefix):
                continue
            names.add(name)
            spec = lease.spec or client.V1LeaseSpec()
            record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
            seen = self._seen.get(name)
            if seen is None or seen[0] != record:
                self._seen[name] = seen = (record, now)
            duration = spec.lease_duration_seconds or math.ceil(self.config.lease_duration)
            if name != self.member.config.name and spec.holder_identity and now - seen[1] < duration:
                alive += 1
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return alive
