"""Cases tests/integration/test_fuzz.py found, kept as plain tests against the real API server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from rollout_support import COALMINE, ISTIO, OperatorProcess, Shop, destination_rule

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


def test_waiting_for_a_destination_rule_names_the_field(
    api_client: client.ApiClient, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """The fuzzer's case: a VirtualService for host `other` routing to `order`, a Rollout naming no host (so the
    canary's host is the VirtualService's, `other`), and no DestinationRule for `other`. Pending is right (one
    may appear), but the message named no field: 'waiting: no DestinationRule in namespace ... has host other'."""
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(*ISTIO, namespace, "destinationrules", destination_rule(namespace))
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "order"},
        "spec": {"hosts": ["other"], "http": [{"route": [{"destination": {"host": "order", "subset": "v1"}}]}]},
    }
    custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", vs)
    rollout = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order"},
        "spec": {"virtualService": {"name": "order"}, "canary": {"subset": "v1"}},
    }
    custom.create_namespaced_custom_object(*COALMINE, namespace, "rollouts", rollout)
    op = operator_factory(namespace)
    status = Shop(api_client, namespace).wait_for_phase("Pending", 30, op)
    assert "spec.destinationRule" in status["message"], status["message"]
    assert "has host other" in status["message"]
