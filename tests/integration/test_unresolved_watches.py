"""A replica that starts while the API server does not list a resource it watches exits, instead of leading
with a watch missing (issue 16: bench/chaos.py --seed 7 found a replica started during kube-apiserver restarts
that resolved no Rollouts, took the Lease, and did nothing for 5 minutes while bad canaries kept traffic).

The API server here does not serve VirtualServices when the operator starts (their CRD is deleted), as a
restarting one did not list them; the operator must exit with code 1 naming them, and a start after the CRD
is back must act."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from rollout_support import OperatorProcess, private_stack

from coalmine.adapters.kube import KubeApi
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import wait_until

pytestmark = pytest.mark.integration
CRD = "virtualservices.networking.istio.io"
ACTING = "watching every resource it needs: acting"


@pytest.fixture
def bare_stack(tmp_path: Path) -> Iterator[devstack.StackInfo]:
    """A stack of its own (this test deletes a CRD, which the session's tests share): the API server alone."""
    with private_stack(tmp_path / "stack", workloads=False, istio_validation=False) as info:
        yield info


def _served(api: client.ApiClient) -> bool:
    try:
        found = client.CustomObjectsApi(api).get_api_resources("networking.istio.io", "v1")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return any(resource.name == "virtualservices" for resource in found.resources)


def _serves(info: devstack.StackInfo, group: str, version: str, plural: str) -> bool:
    """What the operator's own discovery check (KubeApi.serves) answers, on kubernetes_asyncio as it runs."""

    async def ask() -> bool:
        configuration = aclient.Configuration()
        await aconfig.load_kube_config(config_file=str(info.kubeconfig), client_configuration=configuration)
        async with aclient.ApiClient(configuration) as api_client:
            return await KubeApi(api_client).serves(group, version, plural)

    return asyncio.run(ask())


def _operator(info: devstack.StackInfo, log: Path) -> OperatorProcess:
    argv = [sys.executable, "-m", "coalmine", "run", "--namespace", "default"]
    argv += ["--prometheus-url", info.prometheus_url, "--health-port", "0", "--metrics-port", "0"]
    return OperatorProcess("operator", argv, log, env={"KUBECONFIG": str(info.kubeconfig)}).start()


def test_a_replica_started_without_a_watched_resource_exits_and_the_next_start_acts(
    bare_stack: devstack.StackInfo, tmp_path: Path
) -> None:
    api = config.new_client_from_config(str(bare_stack.kubeconfig))
    extensions = client.ApiextensionsV1Api(api)
    crd: dict[str, Any] = api.sanitize_for_serialization(extensions.read_custom_resource_definition(CRD))
    extensions.delete_custom_resource_definition(CRD)
    wait_until("VirtualServices gone from API discovery", lambda: not _served(api), 60)
    assert not _serves(bare_stack, "networking.istio.io", "v1", "virtualservices")
    assert _serves(bare_stack, "networking.istio.io", "v1", "destinationrules")
    assert _serves(bare_stack, "", "v1", "pods")
    assert not _serves(bare_stack, "no-such.example.com", "v1", "things"), "a group/version not served: 404"

    first = _operator(bare_stack, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while first.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not first.alive(), f"the operator ran on without watching VirtualServices:\n{first.tail()}"
        assert first.process is not None
        assert first.process.returncode == 1, first.tail()
        log = first.log.read_text(errors="replace")
        assert f"the watches do not cover {CRD.replace('.networking', '.v1.networking')}" in log, first.tail()
        assert ACTING not in log, "it exited before acting, not after"
    finally:
        first.stop()

    crd["metadata"] = {"name": CRD, "labels": crd["metadata"].get("labels") or {}}
    crd.pop("status", None)
    extensions.create_custom_resource_definition(crd)
    wait_until("VirtualServices back in API discovery", lambda: _served(api), 60)
    assert _serves(bare_stack, "networking.istio.io", "v1", "virtualservices")

    second = _operator(bare_stack, tmp_path / "second.log")
    try:
        wait_until("the second start to act", lambda: ACTING in second.log.read_text(errors="replace"), 120, second)
        time.sleep(2)
        assert second.alive(), second.tail()
        assert "the watches do not cover" not in second.log.read_text(errors="replace")
    finally:
        second.stop()
