"""The devstack is a small real cluster: kube-controller-manager, kube-scheduler and kwok's fake nodes turn
Deployments into Ready pods, Services into EndpointSlices, and deletions into completed deletions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

DEADLINE = 90.0  # generous: the machine is shared; on an idle one each wait takes about a second
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout: float = DEADLINE) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s, {what}: still {result!r}")
        time.sleep(0.2)


def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    """A Deployment whose image is never pulled: kwok's nodes run no containers."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.invalid/app:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def slice_endpoints(discovery: client.DiscoveryV1Api, namespace: str, svc: str) -> list[client.V1Endpoint]:
    slices = discovery.list_namespaced_endpoint_slice(namespace, label_selector=f"kubernetes.io/service-name={svc}")
    return [e for s in slices.items for e in s.endpoints or []]


def test_deployment_gets_ready_pods_and_ready_endpoints_then_scales_to_zero(
    stack: devstack.StackInfo, api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    discovery = client.DiscoveryV1Api(api_client)
    labels = {"app": "web"}
    core.create_namespaced_service(namespace, service("web", labels))
    apps.create_namespaced_deployment(namespace, deployment("web", 2, labels))

    pods = wait_for("2 Ready pods", lambda: ready_pods(core, namespace, "app=web"), lambda p: len(p) == 2)
    assert {p.spec.node_name for p in pods} <= set(stack.nodes)
    assert len({p.status.pod_ip for p in pods}) == 2, "kwok gives each pod its own IP"
    endpoints = wait_for(
        "an EndpointSlice with 2 ready endpoints",
        lambda: slice_endpoints(discovery, namespace, "web"),
        lambda eps: len(eps) == 2 and all(e.conditions.ready for e in eps),
    )
    assert {e.target_ref.name for e in endpoints} == {p.metadata.name for p in pods}
    assert {e.addresses[0] for e in endpoints} == {p.status.pod_ip for p in pods}
    # The deployment controller writes its status on its own schedule, after the pods are Ready.
    wait_for(
        "the Deployment's status to count 2 ready, 2 available replicas",
        lambda: apps.read_namespaced_deployment_status("web", namespace).status,
        lambda st: (st.ready_replicas, st.available_replicas) == (2, 2),
    )

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_for("no pods", lambda: core.list_namespaced_pod(namespace, label_selector="app=web").items, lambda p: not p)
    wait_for("an empty EndpointSlice", lambda: slice_endpoints(discovery, namespace, "web"), lambda eps: not eps)


def test_deleting_a_deployment_collects_its_replica_sets_and_pods(api_client: client.ApiClient, namespace: str) -> None:
    """The garbage collector follows ownerReferences: Deployment -> ReplicaSet -> Pods."""
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, deployment("gc", 1, {"app": "gc"}))
    wait_for("a Ready pod", lambda: ready_pods(core, namespace, "app=gc"), lambda p: len(p) == 1)
    owners = apps.list_namespaced_replica_set(namespace).items[0].metadata.owner_references
    assert [(o.kind, o.name) for o in owners] == [("Deployment", "gc")]

    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    wait_for("no ReplicaSets", lambda: apps.list_namespaced_replica_set(namespace).items, lambda r: not r)
    wait_for("no pods", lambda: core.list_namespaced_pod(namespace).items, lambda p: not p)


def test_a_deleted_namespace_is_gone_with_everything_in_it(api_client: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    name = f"t-gone-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        apps.create_namespaced_deployment(name, deployment("app", 2, {"app": "app"}))
        core.create_namespaced_config_map(name, client.V1ConfigMap(metadata={"name": "settings"}, data={"a": "1"}))
        rule = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "app"},
            "spec": {"host": "app", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
        }
        custom.create_namespaced_custom_object("networking.istio.io", "v1", name, "destinationrules", rule)
        wait_for("2 Ready pods", lambda: ready_pods(core, name, "app=app"), lambda p: len(p) == 2)
    finally:
        core.delete_namespace(name)

    def phase() -> str:
        try:
            return str(core.read_namespace(name).status.phase)
        except ApiException as error:
            if error.status == 404:
                return "gone"
            raise

    wait_for(f"namespace {name} deleted", phase, lambda p: p == "gone", timeout=120.0)
