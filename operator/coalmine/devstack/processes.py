"""Stopping a child process politely: SIGTERM, a grace period, then SIGKILL.

Shared by the demo, the tests and the benchmarks, which all start meshsim and operator processes.
"""

from __future__ import annotations

import signal
import subprocess


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
