"""Cases tests/integration/test_fuzz.py found, kept as plain tests against the real API server."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from rollout_support import COALMINE, Shop

from coalmine.adapters.kube import Conflict, KubeApi

pytestmark = pytest.mark.integration


async def test_a_status_write_to_a_rollout_deleted_meanwhile_is_a_conflict_not_an_error(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    """The fuzzer deletes each case's Rollout once judged; a tick of it still in flight wrote its status, got 404,
    and the operator logged a traceback and counted a reconcile error ("tick of ... failed"). A Rollout deleted
    while its tick runs is a Rollout someone deleted: the write is refused like a concurrent change (the
    caller re-reads, and the watch has dropped it)."""
    shop = Shop(api_client, namespace)
    shop.apply_istio()
    created = shop.create_rollout()
    version = created["metadata"]["resourceVersion"]
    shop.custom.delete_namespaced_custom_object(*COALMINE, namespace, "rollouts", "order")

    await aconfig.load_kube_config(config_file=str(kubeconfig))
    async with aclient.ApiClient() as api:
        kube = KubeApi(api)
        with pytest.raises(Conflict, match="deleted"):
            await kube.patch_rollout_status(namespace, "order", version, {"phase": "Progressing"})
