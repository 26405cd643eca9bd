"""A cancelled elector (or scheduler) ends, even when its cancellation arrives in the same loop iteration as the answer to
its request. With asyncio.wait_for around the request (Python 3.11, CPython gh-86296), wait_for returned the
answer and dropped the cancellation: the elector went on renewing its Lease after its replica had stopped
(seen in tests/integration/test_sharding.py: a stopped replica's shard Leases renewed for minutes).

The Lease API is an in-memory fake whose write cancels the elector's task just before it answers, which is
exactly that race, every time."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from coalmine.adapters.election import ElectionConfig, LeaseElector
from coalmine.adapters.tasks import cancel_and_wait
from coalmine.scheduler import Scheduler, utcnow

TIMINGS = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.05}


class _CancellingApi:
    """Answers every Lease write, but first cancels `victim` (the task doing the write) once it is armed."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.writes = 0
        self.victim: asyncio.Task[None] | None = None

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if self.lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.lease)

    async def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return self._write(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return self._write(body)

    def _write(self, body: Any) -> Any:
        self.writes += 1
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(self.writes)
        self.lease = body
        if self.victim is not None:
            self.victim.cancel()  # the answer and the cancellation in the same iteration
            self.victim = None
        return body


async def test_an_elector_cancelled_as_its_renewal_answers_stops_renewing() -> None:
    api = _CancellingApi()
    elector = LeaseElector(
        None,  # type: ignore[arg-type]  # the client is replaced by the fake below
        ElectionConfig("ns", "coalmine", "a", **TIMINGS),
        on_started=lambda: None,
        on_stopped=lambda: None,
    )
    elector._api = api  # type: ignore[assignment]
    task = asyncio.create_task(elector.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if elector.leading and api.writes >= 2:
            break
    assert elector.leading, "the elector never led: the fake is wrong, not the elector"
    api.victim = task  # the next renewal's answer comes with a cancellation
    await asyncio.wait({task}, timeout=1.0)
    assert task.done(), "the elector swallowed its cancellation and went on renewing its Lease"
    written = api.writes
    await asyncio.sleep(5 * TIMINGS["retry_period"])
    assert api.writes == written, "a cancelled elector wrote its Lease again"
    assert api.lease.spec.holder_identity == "", "a cancelled leader releases its Lease"


async def test_cancel_and_wait_cancels_again_a_task_that_survives_once(caplog: pytest.LogCaptureFixture) -> None:
    """The shutdown path does not hang on a task that swallows one cancellation; it names it in the log."""
    survived = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            survived.set()  # swallowed, as wait_for did
        await asyncio.sleep(60)  # the second cancellation ends it

    task = asyncio.create_task(stubborn(), name="stubborn task")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="coalmine.tasks"):
        await asyncio.wait_for(cancel_and_wait(task, patience=0.1), timeout=5)
    assert survived.is_set()
    assert task.cancelled()
    assert "stubborn task did not end" in caplog.text


async def test_a_scheduler_cancelled_as_a_poke_wakes_it_ends() -> None:
    """The same race in the scheduler's wait for the next due time: a poke and a cancellation together."""

    async def tick(key: str) -> None:
        return None

    scheduler = Scheduler(tick)
    scheduler.poke("later", utcnow() + timedelta(hours=1))
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.05)  # now waiting for "later" under a timeout
    scheduler.poke("sooner", utcnow() + timedelta(minutes=30))  # wakes the wait...
    task.cancel()  # ...in the same iteration as the cancellation
    await asyncio.wait({task}, timeout=1.0)
    assert task.done(), "the scheduler swallowed its cancellation and went on scheduling"
