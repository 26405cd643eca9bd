"""The scheduler: never two ticks of one Rollout at once, whatever pokes it while its tick runs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from coalmine.scheduler import Scheduler


async def test_a_poke_for_later_that_falls_due_while_the_tick_runs_waits_for_it() -> None:
    """A watch event during a slow tick pokes the Rollout for its min_gap later (poke_soon). When that moment
    comes while the first tick still runs (a status PATCH taking seconds on a loaded API server), the
    second tick starts after the first, not beside it: both would decide on the same body and one of their
    writes would conflict."""
    running: set[str] = set()
    overlaps: list[str] = []
    started: list[float] = []
    release, first, second = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def tick(key: str) -> datetime | None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        started.append(asyncio.get_running_loop().time())
        (first if len(started) == 1 else second).set()
        try:
            if len(started) == 1:
                await release.wait()
        finally:
            running.discard(key)
        return None

    scheduler = Scheduler(tick, min_gap=timedelta(milliseconds=50), granularity=timedelta(milliseconds=10))
    task = asyncio.create_task(scheduler.run())
    try:
        scheduler.poke("shop/order")
        async with asyncio.timeout(5):
            await first.wait()
        scheduler.poke_soon("shop/order")  # a VirtualService changed: look again, one min_gap after the last start
        await asyncio.sleep(0.3)  # well past the min_gap: the poke is due while the first tick still runs
        assert len(started) == 1, "a second tick of the same Rollout started while the first ran"
        release.set()
        async with asyncio.timeout(5):
            await second.wait()
        assert overlaps == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
