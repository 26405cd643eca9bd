"""When each Rollout ticks next: one asyncio task for all of them, not a thread or a timer each.

The scheduler keeps a heap of (due time, key). A watch event or a tick's own `wake_at` pokes a
key; when a key is due, its tick runs as a task under a concurrency limit, never two at once for
one key (a poke while it runs makes it run again right after). Due times are derived from each
Rollout's status, so this heap holds no truth: a restarted operator rebuilds it from the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger("coalmine.scheduler")

Tick = Callable[[str], Awaitable[datetime | None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self,
        tick: Tick,
        *,
        concurrency: int = 64,
        granularity: timedelta = timedelta(milliseconds=100),
        error_backoff: timedelta = timedelta(seconds=5),
        min_gap: timedelta = timedelta(seconds=1),
        clock: Callable[[], datetime] = utcnow,
        observe: Callable[[str, float], None] = lambda phase, seconds: None,
    ) -> None:
        self._tick = tick
        self._observe = observe  # ("late", due -> started) and ("queued", started -> got a slot), seconds
        self._limit = asyncio.Semaphore(concurrency)
        self._granularity = granularity
        self._error_backoff = error_backoff
        self._min_gap = min_gap
        self._clock = clock
        self._started: dict[str, datetime] = {}  # when each key's last tick started, for poke_soon
        self._heap: list[tuple[datetime, int, str]] = []
        self._due: dict[str, datetime] = {}
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def poke(self, key: str, at: datetime | None = None) -> None:
        """Tick `key` at `at` (now by default), or earlier if it is already due earlier."""
        when = at or self._clock()
        if key in self._running and when <= self._clock():
            self._again.add(key)
            return
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        self._changed.set()

    def poke_soon(self, key: str) -> None:
        """Tick `key` now, but no sooner than `min_gap` after its last tick began: a burst of changes to
        objects a Rollout reads (or another controller fighting over them) costs at most one tick a gap."""
        last = self._started.get(key)
        now = self._clock()
        self.poke(key, max(now, last + self._min_gap) if last is not None else now)

    def forget(self, key: str) -> None:
        self._due.pop(key, None)
        self._again.discard(key)
        self._started.pop(key, None)

    async def run(self) -> None:
        try:
            while True:
                await self._wait_for_due()
                # Late by up to `granularity`, never early: ticks due close together start together.
                await asyncio.sleep(self._granularity.total_seconds())
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    when, _, key = heapq.heappop(self._heap)
                    if self._due.get(key) != when:
                        continue  # superseded by an earlier poke, or forgotten
                    del self._due[key]
                    if key in self._running:  # poked for later while it ran, and it still runs
                        self._again.add(key)
                        continue
                    self._start(key, when)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _wait_for_due(self) -> None:
        self._changed.clear()
        if self._heap:
            delay = (self._heap[0][0] - self._clock()).total_seconds()
            if delay <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for, which may lose a cancellation (adapters/tasks.py)
                    await self._changed.wait()
        else:
            await self._changed.wait()

    def _start(self, key: str, due: datetime) -> None:
        self._running.add(key)
        now = self._started[key] = self._clock()
        self._observe("late", max(0.0, (now - due).total_seconds()))
        task = asyncio.create_task(self._run_one(key), name=f"tick {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, key: str) -> None:
        wake: datetime | None
        try:
            queued = time.perf_counter()
            async with self._limit:
                self._observe("queued", time.perf_counter() - queued)
                wake = await self._tick(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("tick of %s failed; retrying in %s", key, self._error_backoff)
            wake = self._clock() + self._error_backoff
        finally:
            self._running.discard(key)
        if key in self._again:
            self._again.discard(key)
            wake = self._clock()
        if wake is not None:
            self.poke(key, wake)
