"""Child processes of the demo, the benchmarks and the tests: start one with its output in a log, wait for
something while watching it, read its log, stop it politely (SIGTERM, a grace period, then SIGKILL).

devstack keeps its own pid-based helpers: its processes outlive the command that started them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop `process` (a no-op when it has exited): SIGTERM, wait `grace` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class Child:
    """A process with its output in `log` (a fresh log on the first start; a restart appends to it)."""

    name: str
    argv: Sequence[str]
    log: Path
    env: Mapping[str, str] | None = None  # on top of os.environ, unless `inherit_env` is False
    inherit_env: bool = True
    own_session: bool = False  # True: Ctrl-C in the terminal reaches the parent only, which stops us in order
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})} if self.inherit_env else dict(self.env or {})
        with self.log.open("ab" if self.process is not None else "wb") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=self.own_session,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        if self.process is not None:
            terminate(self.process, grace)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a crashed or evicted pod."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"(no log at {self.log})"


class WaitTimeout(RuntimeError):
    """What was awaited did not happen in time, or the watched child exited first; the message says which."""


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, child: Child | None = None) -> None:
    """Poll `predicate` every 0.1 s until it holds; fail early if `child` exits, with its log."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if child is not None and not child.alive():
            raise WaitTimeout(f"{child.name} exited while waiting for {what}:\n{child.tail()}")
        if time.monotonic() > deadline:
            logs = f"\n{child.name} log:\n{child.tail()}" if child else ""
            raise WaitTimeout(f"after {timeout:.0f} s, still no {what}{logs}")
        time.sleep(0.1)
