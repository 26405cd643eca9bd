"""Smoke test of bench/peers.py's harness: Flagger and Argo Rollouts run on the devstack and meshsim feeds
their checks. Skipped (with the reason) when `make peers` has not put their binaries in the cache.

Not a measurement: it checks the pieces the benchmark relies on, in about 30 s:
- the peers' CRDs install; Argo Rollouts takes a Rollout to Healthy on kwok's pods, and on a release
  moves the VirtualService to the first step (canary weight 10) with its background analysis running;
- Flagger initialises a Canary (generates web-primary, the web/-primary/-canary Services, the VS), and
  the series its built-in Istio checks select exist: meshsim reports `destination_workload="web-primary"`
  with `destination_workload_namespace` for the primary's pods.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes import client

from coalmine_dev import processes
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import Child

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import peers  # bench/peers.py

if TYPE_CHECKING:
    from tests.conftest import Prom
    from tests.integration.conftest import MeshsimHandle

MISSING = peers.peers_built()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@contextmanager
def controller(tool: peers.Tool, stack: devstack.StackInfo, log: Path) -> Iterator[Child]:
    child = Child(tool.name, tool.argv(), log, env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)}).start()
    try:
        yield child
    finally:
        child.stop()


def test_flagger_and_argo_rollouts_run_on_the_devstack(
    stack: devstack.StackInfo,
    api_client: client.ApiClient,
    make_namespace: Callable[[], str],
    meshsim_factory: Callable[..., MeshsimHandle],
    prom: Prom,
    tmp_path: Path,
) -> None:
    peers.install_peer_crds(stack)
    argo_ns, flagger_ns = make_namespace(), make_namespace()
    mesh = meshsim_factory(namespaces=[argo_ns, flagger_ns])
    profile = peers.PROFILES["tight"]

    argo = peers.Argo(api_client, stack, profile)
    with controller(argo, stack, tmp_path / "argo.log") as child:
        argo.prepare(argo_ns, peers.Scenario({10: 60, 30: 60, 50: 60}))
        argo.release(argo_ns)
        processes.wait_until("Argo Rollouts: VS canary weight 10", lambda: argo.canary_weight(argo_ns) == 10, 30, child)
        assert argo.phase(argo_ns) in ("Progressing", "Paused"), argo.status(argo_ns)

    flagger = peers.Flagger(api_client, stack, profile)
    mesh.client.set_service(flagger_ns, "web", rps=50)
    with controller(flagger, stack, tmp_path / "flagger.log"):
        flagger.prepare(flagger_ns, peers.Scenario({10: 10, 30: 10, 50: 10}))  # waits for Initialized
        assert flagger.canary_weight(flagger_ns) == 0
    selector = (
        f'reporter="destination",destination_workload_namespace="{flagger_ns}",destination_workload="web-primary"'
    )
    prom.wait_for(f"sum(istio_requests_total{{{selector}}})", bool, timeout=20)
