"""Integration fixtures for meshsim: a real `coalmine meshsim` process, scraped by the stack's Prometheus.

`meshsim` starts `python -m coalmine meshsim` against the session stack's kubeconfig, watching
only the test's namespace, registers it as a Prometheus scrape target, waits until Prometheus
reports it up, and stops it afterwards. `meshsim_factory` does the same with extra arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes import client
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from rollout_support import OperatorProcess, Shop

from coalmine_dev import processes
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.meshsim.client import MeshsimClient

if TYPE_CHECKING:
    from tests.conftest import Prom

STARTED = "coalmine starting:"  # the operator's first log line, once its imports are done
START_TIMEOUT = 60.0  # a loaded 2-core machine starts Python slowly: generous, never a timing test


@dataclass
class MeshsimHandle:
    """A running meshsim: `.url` (http://127.0.0.1:PORT), `.client`, its scrape `.job` and `.log` file."""

    url: str
    address: str
    client: MeshsimClient
    job: str
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def wait_until_seen(self, kind: str, name: str, resource_version: str, timeout: float = 10.0) -> None:
        """Wait until meshsim's watch has delivered `<kind>` `<ns/name>` at `resource_version`.

        kind is "virtualservices" or "destinationrules"; name is "<namespace>/<name>".
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.client.mesh().get(kind, {}).get(name)
            if seen == resource_version:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"meshsim did not see {kind} {name}@{resource_version} (it has {seen!r})")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    processes.terminate(process)


@pytest.fixture
def meshsim_factory(
    stack: devstack.StackInfo, kubeconfig: Path, prom: Prom, tmp_path: Path
) -> Iterator[Callable[..., MeshsimHandle]]:
    """`start(namespaces=[...], args=[...]) -> MeshsimHandle`; every meshsim started is stopped afterwards."""
    started: list[tuple[MeshsimHandle, subprocess.Popen[bytes]]] = []

    def start(namespaces: Sequence[str] = (), args: Sequence[str] = ()) -> MeshsimHandle:
        index = len(started)
        address_file = tmp_path / f"meshsim-{index}.address"
        log = tmp_path / f"meshsim-{index}.log"
        argv = [sys.executable, "-m", "coalmine", "meshsim", "--kubeconfig", str(kubeconfig)]
        argv += ["--listen", "127.0.0.1:0", "--address-file", str(address_file), "--seed", str(index)]
        for ns in namespaces:
            argv += ["--namespace", ns]
        argv += list(args)
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + START_TIMEOUT
        while not address_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                pytest.fail(f"meshsim did not start: {argv}\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        address = address_file.read_text().strip()
        first_line = log.read_text(errors="replace").splitlines()[0]
        assert first_line == f"meshsim listening on {address}", first_line
        job = f"meshsim-{tmp_path.name}-{index}"[:60]
        handle = MeshsimHandle(f"http://{address}", address, MeshsimClient(f"http://{address}"), job, log, process)
        started.append((handle, process))
        devstack.add_scrape_target(stack.state_dir, job, address)
        prom.wait_for(f'up{{job="{job}"}} == 1', bool, timeout=START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not handle.client.healthz()["synced"]:
            assert time.monotonic() < deadline, f"meshsim never listed the Istio objects:\n{handle.log_tail()}"
            time.sleep(0.1)
        return handle

    yield start
    for handle, process in started:
        devstack.remove_scrape_target(stack.state_dir, handle.job)
        handle.client.close()
        _stop(process)


@pytest.fixture
def shop(api_client: client.ApiClient, namespace: str) -> Shop:
    """The seed scenario's DestinationRule and VirtualService in the test's namespace."""
    s = Shop(api_client, namespace)
    s.apply_istio()
    return s


@pytest.fixture
def meshsim(meshsim_factory: Callable[..., MeshsimHandle], namespace: str) -> MeshsimHandle:
    """A meshsim watching only the test's `namespace`, scraped by Prometheus (no services configured yet:
    add them with `meshsim.client.set_service(...)`)."""
    return meshsim_factory(namespaces=[namespace])


@pytest.fixture
def operator_factory(
    stack: devstack.StackInfo, kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    """`start(namespace, args=[...], env={...})`: `python -m coalmine run` against the session stack, watching
    only `namespace` (or several: pass a list); `env` is added to the environment (e.g. KUBECONFIG of a
    ServiceAccount). Every operator started is stopped afterwards."""

    def start(
        namespace: str | Sequence[str], args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> OperatorProcess:
        argv = [sys.executable, "-m", "coalmine", "run"]
        for ns in [namespace] if isinstance(namespace, str) else namespace:
            argv += ["--namespace", ns]
        argv += ["--prometheus-url", stack.prometheus_url, "--scrape-interval", stack.scrape_interval]
        argv += ["--health-port", "0", "--metrics-port", "0", *args]
        log = tmp_path / f"operator-{len(started)}.log"
        proc = OperatorProcess(f"operator-{len(started)}", argv, log, env=dict(env or {})).start()
        started.append(proc)
        # Past Python's imports before the test's deadlines start: at load 20+ on 2 cores they took > 20 s.
        deadline = time.monotonic() + 120
        while proc.alive() and time.monotonic() < deadline and STARTED not in log.read_text(errors="replace"):
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[aclient.ApiClient]:
    """An asyncio client (kubernetes_asyncio, as the operator uses) of the session stack."""
    configuration = aclient.Configuration()
    await aconfig.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with aclient.ApiClient(configuration) as api_client:
        yield api_client
