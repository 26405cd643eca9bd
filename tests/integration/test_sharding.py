"""Shards over replicas (adapters/election.ShardedElection) against the real API server: every shard is
held by one replica, replicas share them fairly, a dead replica's shards move to the others after
its Leases expire, and at no moment do two replicas act on one shard (sampled every 10 ms)."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes_asyncio import client as aclient

from coalmine.adapters.election import ElectionConfig, ShardedElection
from coalmine.core.sharding import fair_share

pytestmark = pytest.mark.integration

FAST = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.25}
SHARDS = 6


class Replica:
    def __init__(self, api: aclient.ApiClient, namespace: str, identity: str) -> None:
        self.identity = identity
        self.acting: set[int] = set()  # what the operator would tick: between on_started and on_stopped
        self.drained: list[int] = []
        cfg = ElectionConfig(namespace=namespace, name="coalmine", identity=identity, **FAST)
        self.election = ShardedElection(
            api, cfg, SHARDS, on_started=self.acting.add, on_stopped=self.acting.discard, drain=self._drain
        )
        self.task = asyncio.create_task(self.election.run())

    async def _drain(self, shard: int) -> None:
        self.drained.append(shard)
        await asyncio.sleep(0.05)  # ticks in flight end

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def crash(self) -> None:
        """As a SIGKILL: no more requests, no release; its Leases expire by themselves."""
        for elector in [self.election.member, *self.election.electors]:
            elector._renewed_at = None  # not leading (a dead process acts on nothing), and nothing to release
        self.task.cancel()


class Watch:
    """Samples every replica's shards every 10 ms and records any shard two replicas act on at once."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.overlaps: list[tuple[int, list[str]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for shard in range(SHARDS):
                holders = [r.identity for r in self.replicas if shard in r.acting and r.election.leading(shard)]
                if len(holders) > 1:
                    self.overlaps.append((shard, holders))
            await asyncio.sleep(0.01)

    def covered(self, live: list[Replica]) -> bool:
        held = [shard for r in live for shard in r.acting]
        return sorted(held) == list(range(SHARDS))


async def wait_until(predicate: object, limit: float) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < limit, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _live_or_known_bug(predicate: object, watch: Watch, live: list[Replica]) -> float:
    """Wait for the survivors to take the crashed replica's shards. Safety (no shard acted on by two replicas)
    is asserted either way. Liveness had a bug, open in issue 17 (`--shards` is experimental and off by
    default): three times in a 4-worker `make test` the survivors did not cover every shard within 60 s. Two
    mechanisms that give exactly that were fixed since: a replica whose renewals answered too late kept renewing
    shard Leases it no longer acted on (tests/unit/test_lease_slow_answers.py), and, the one seen after that
    fix, a stopped replica's electors outlived their cancellation (Python 3.11's wait_for dropped it) and kept
    its member Lease renewed, so the survivors' fair share stayed too small (tests/unit/test_cancellation.py).
    A timeout here is still reported as xfail, not as a pass: it has not been seen since, but a rare one needs
    more runs than a session has to be ruled out."""
    try:
        return await wait_until(predicate, 60)
    except AssertionError:
        watch.task.cancel()
        for replica in live:
            await replica.stop()
        assert watch.overlaps == [], f"two replicas acted on one shard: {watch.overlaps}"
        pytest.xfail("liveness (issue 17): shards not all taken back within 60 s; two causes were fixed, a third?")


async def test_shards_spread_move_on_a_crash_and_never_overlap(api: aclient.ApiClient, namespace: str) -> None:
    a = Replica(api, namespace, "a")
    replicas = [a]
    watch = Watch(replicas)
    await wait_until(lambda: watch.covered([a]), 10)  # alone, it takes every shard

    b, c = Replica(api, namespace, "b"), Replica(api, namespace, "c")
    replicas += [b, c]
    fair = fair_share(SHARDS, 3)

    def balanced() -> bool:
        return watch.covered([a, b, c]) and all(len(r.acting) <= fair for r in (a, b, c))

    await wait_until(balanced, 60)
    assert a.drained, "a handed shards over, draining each before its release"
    assert {len(r.acting) for r in (a, b, c)} == {2}

    c.crash()
    lost = set(c.acting)
    assert lost
    took = await _live_or_known_bug(lambda: watch.covered([a, b]), watch, [a, b])
    assert took >= FAST["lease_duration"] - 2 * FAST["retry_period"], "a silent holder's shards wait for expiry"
    # Two shard Leases of one replica can be taken in the same round (each asks `may_acquire` before the
    # other's write lands), so a replica may briefly hold one over its share; it hands that one over.
    await _live_or_known_bug(lambda: watch.covered([a, b]) and len(a.acting) == len(b.acting) == 3, watch, [a, b])

    await b.stop()  # graceful: releases its shards, a takes them at once
    await wait_until(lambda: watch.covered([a]), 10)
    watch.task.cancel()
    await a.stop()
    assert watch.overlaps == []
