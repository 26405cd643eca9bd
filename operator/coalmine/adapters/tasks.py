"""Ending the shell's background tasks, and saying which one did not end."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("coalmine.tasks")


async def cancel_and_wait(task: asyncio.Task[object], *, patience: float = 5.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `patience` seconds.

    A task can survive one cancellation when code under it swallows the CancelledError (asyncio.wait_for
    on Python 3.11 does, CPython gh-86296): once is not enough to stop a loop that renews a Lease. Each
    repeat is logged with the task's name, so a task that does not end is named in the log rather than
    hanging a shutdown in silence."""
    while True:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=patience)
        if done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s ended with %r", task.get_name(), task.exception())
            return
        log.error("%s did not end %.0fs after it was cancelled; cancelling it again", task.get_name(), patience)
