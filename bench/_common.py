"""Shared pieces of the benchmarks: an own devstack, meshsim and operator processes, /proc readings.

Everything a benchmark starts is recorded here and stopped on the way out, also on Ctrl-C and
SIGTERM. Child processes run in their own session, so a Ctrl-C reaches only the benchmark, which
then stops them in order (operator, meshsim, then the devstack).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from coalmine_dev import processes
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.meshsim.client import MeshsimClient
from coalmine_dev.processes import Child

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Processes:
    """Child processes a benchmark started, stopped in reverse order by `stop_all`."""

    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Child:
        # Their own session: Ctrl-C reaches the benchmark only, and it stops them in order.
        child = Child(name, argv, log, env=env, own_session=True).start()
        self.started.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        self.started.remove(child)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


@contextmanager
def bench_stack(
    prefix: str, state_dir: Path | None = None, scrape_interval: str = "1s", nodes: int = 1
) -> Iterator[tuple[devstack.StackInfo, Path, Processes]]:
    """A work folder, a devstack (own unless `state_dir` names a running one) and a process list.

    On the way out (normal, exception, Ctrl-C, SIGTERM) the processes are stopped, then the own stack.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        own = state_dir is None
        stack_dir = workdir / "devstack" if state_dir is None else state_dir
        try:
            if own:
                info = devstack.up(stack_dir, scrape_interval=scrape_interval, nodes=nodes)
            else:
                loaded = devstack.load(stack_dir)
                assert loaded is not None, f"no devstack in {stack_dir}"
                info = loaded
            yield info, workdir, procs
        finally:
            procs.stop_all()
            if own:
                devstack.down(stack_dir)
            signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    return devstack.free_ports(1)[0]


@dataclass
class Meshsim:
    pid: int
    address: str
    client: MeshsimClient
    job: str


def start_meshsim(
    procs: Processes,
    info: devstack.StackInfo,
    workdir: Path,
    name: str,
    namespaces: Sequence[str] = (),
    args: Sequence[str] = (),
    seed: int = 0,
    timeout: float = 60.0,
) -> Meshsim:
    """`python -m coalmine meshsim` on the stack, registered as a Prometheus scrape target `name`."""
    address_file = workdir / f"{name}.address"
    argv = [sys.executable, "-m", "coalmine", "meshsim", "--kubeconfig", str(info.kubeconfig)]
    argv += ["--listen", "127.0.0.1:0", "--address-file", str(address_file), "--seed", str(seed)]
    for ns in namespaces:
        argv += ["--namespace", ns]
    child = procs.start(name, [*argv, *args], workdir / f"{name}.log")
    processes.wait_until(f"meshsim {name}'s address", address_file.exists, timeout, child)
    deadline = time.monotonic() + timeout
    address = address_file.read_text().strip()
    client = MeshsimClient(f"http://{address}", timeout=30.0)
    while not client.healthz()["synced"]:
        assert time.monotonic() < deadline, f"meshsim {name} never listed the Istio objects"
        time.sleep(0.1)
    devstack.add_scrape_target(info.state_dir, name, address)
    return Meshsim(child.pid, address, client, name)


def wait_scraped(info: devstack.StackInfo, jobs: Sequence[str], timeout: float = 60.0) -> None:
    """Wait until Prometheus reports every job in `jobs` up."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{info.prometheus_url}/api/v1/query", params={"query": "up == 1"}, timeout=10)
        up = {r["metric"].get("job") for r in response.json()["data"]["result"]}
        missing = set(jobs) - up
        if not missing:
            return
        assert time.monotonic() < deadline, f"Prometheus does not scrape {sorted(missing)}"
        time.sleep(0.5)


def operator_argv(info: devstack.StackInfo, namespaces: Sequence[str], *args: str) -> list[str]:
    argv = [sys.executable, "-m", "coalmine", "run"]
    for ns in namespaces:
        argv += ["--namespace", ns]
    argv += ["--prometheus-url", info.prometheus_url, "--scrape-interval", info.scrape_interval]
    return [*argv, *args]


def kube_env(info: devstack.StackInfo) -> dict[str, str]:
    return {"KUBECONFIG": str(info.kubeconfig)}


# --- /proc ----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads from /proc/PID/status; empty when the process is gone."""
    result: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return result
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            result[key] = int(value.split()[0])
    return result


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
