"""bench/chaos.py's schedule with --each-once (the short form in `make test`): every fault kind is injected once,
also one skipped for now (nobody leads during a failover) and retried after the fault window closes."""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos


class Scripted(chaos.Run):
    """Faults that take no time, except the first kill-follower: skipped, and only once the window closed."""

    skip_until: float = 0.0

    def fault(self, kind: str) -> tuple[float, float, str]:
        if kind == "kill-follower" and self.counts["kill-follower skipped"] == 0:
            time.sleep(max(0.0, self.skip_until - time.time()))
            raise chaos.Skipped("nobody leads at the moment (a failover is under way)")
        now = time.time()
        return now, now, "scripted"


def test_a_kind_skipped_as_the_window_closes_is_still_injected_once() -> None:
    args = argparse.Namespace(each_once=True, kinds=list(chaos.KINDS), fault_gap=0.01)
    run = Scripted(args=args, info=Any, workdir=Path("."), procs=Any, rng=random.Random(7))  # type: ignore[arg-type]
    until = time.time() + 0.5
    run.skip_until = until + 0.3
    scheduler = threading.Thread(target=run.schedule, args=(until,), daemon=True)
    scheduler.start()
    scheduler.join(timeout=30)
    assert not scheduler.is_alive()
    assert run.counts["kill-follower skipped"] == 1
    injected = sorted(f.kind for f in run.faults)
    assert injected == sorted(chaos.KINDS), "every kind once, kill-follower after the window"
    assert next(f.start for f in run.faults if f.kind == "kill-follower") > until
