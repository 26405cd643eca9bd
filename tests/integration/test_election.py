"""The Lease elector (adapters/election.py) against the real API server: one leader, takeover only
after the holder went silent for the lease duration, release on a graceful stop, stop on a stolen lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes_asyncio import client as aclient

from coalmine.adapters.election import ElectionConfig, LeaseElector

pytestmark = pytest.mark.integration

FAST = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.25}


class Candidate:
    def __init__(self, api: aclient.ApiClient, namespace: str, identity: str) -> None:
        self.log: list[tuple[str, float]] = []
        cfg = ElectionConfig(namespace=namespace, name="lock", identity=identity, **FAST)
        self.elector = LeaseElector(
            api,
            cfg,
            on_started=lambda: self.log.append(("started", time.monotonic())),
            on_stopped=lambda: self.log.append(("stopped", time.monotonic())),
        )
        self.task = asyncio.create_task(self.elector.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def wait_until(predicate: Callable[[], bool], limit: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < limit, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_one_leader_and_graceful_handover(api: aclient.ApiClient, namespace: str) -> None:
    a = Candidate(api, namespace, "a")
    await wait_until(lambda: a.elector.leading, 5)
    b = Candidate(api, namespace, "b")
    await asyncio.sleep(3 * FAST["lease_duration"])  # b looks many times and never takes a renewed lease
    assert a.elector.leading
    assert not b.elector.leading
    assert b.log == []
    await a.stop()  # releases the Lease
    handover = await wait_until(lambda: b.elector.leading, 5)
    assert handover < 2 * FAST["retry_period"] + 0.5, "a released Lease is taken within a retry period"
    assert a.log[-1][0] == "stopped"
    assert not a.elector.leading
    lease = await aclient.CoordinationV1Api(api).read_namespaced_lease("lock", namespace)
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 0  # a released lease is not a takeover
    await b.stop()


async def test_silent_holder_is_replaced_only_after_the_lease_duration(api: aclient.ApiClient, namespace: str) -> None:
    """A holder that stops renewing (as a SIGKILLed pod) keeps the Lease for its duration, then loses it."""
    now = datetime.now(UTC)
    leases = aclient.CoordinationV1Api(api)
    await leases.create_namespaced_lease(
        namespace,
        aclient.V1Lease(
            metadata=aclient.V1ObjectMeta(name="lock"),
            spec=aclient.V1LeaseSpec(
                holder_identity="ghost", lease_duration_seconds=2, acquire_time=now, renew_time=now
            ),
        ),
    )
    b = Candidate(api, namespace, "b")
    took = await wait_until(lambda: b.elector.leading, 10)
    cfg = b.elector.config
    assert 2.0 <= took <= cfg.failover_bound + 0.5, took
    lease = await leases.read_namespaced_lease("lock", namespace)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("b", 1)
    await b.stop()


async def test_leader_stops_at_once_when_the_lease_is_taken(api: aclient.ApiClient, namespace: str) -> None:
    a = Candidate(api, namespace, "a")
    await wait_until(lambda: a.elector.leading, 5)
    leases = aclient.CoordinationV1Api(api)
    lease = await leases.read_namespaced_lease("lock", namespace)
    lease.spec.holder_identity = "thief"
    await leases.replace_namespaced_lease("lock", namespace, lease)
    stopped = await wait_until(lambda: bool(a.log) and a.log[-1][0] == "stopped", 5)
    assert stopped <= FAST["retry_period"] + 0.5
    assert not a.elector.leading
    await a.stop()
    lease = await leases.read_namespaced_lease("lock", namespace)
    assert lease.spec.holder_identity == "thief", "a follower does not release someone else's Lease"


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        ElectionConfig(namespace="n", name="l", identity="i", lease_duration=5, renew_deadline=5, retry_period=1)
    assert ElectionConfig(namespace="n", name="l", identity="i").failover_bound == 19
