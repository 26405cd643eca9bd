"""deploy/ on the real API server: `kubectl apply -k deploy/ --server-side` works, and the operator,
running with a token of deploy/'s ServiceAccount and nothing else, does a full rollout and a rollback;
that token cannot read Secrets or change Deployments, and a Rollout never reaches another namespace.

The RBAC under test is exactly what deploy/rbac.yaml grants: the tests apply the same kustomization
the README's Install section applies (the Deployment itself does not run here: there is no kubelet).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_support import (
    REPO,
    kubectl,
    pod_env,
    service_account_kubeconfig,
    stack_settings,
    the_container,
    wait_http,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rollout_support import ISTIO, OperatorProcess, Shop

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

SA_NAMESPACE, SA_NAME = "coalmine-system", "coalmine"
ELECTION = ["--leader-election", "--lease-namespace", SA_NAMESPACE]
ELECTION += ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"]
STEPS = [{"weight": 10, "hold": "3s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}]


@pytest.fixture(scope="session")
def deployed(kubeconfig: Path) -> str:
    """`kubectl apply -k deploy/ --server-side`, as the README says. The stack already installed the CRD
    by server-side apply with the same content, so the two field managers share its fields and no
    --force-conflicts is needed."""
    done = kubectl(kubeconfig, "apply", "-k", str(REPO / "deploy"), "--server-side")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def sa_kubeconfig(
    deployed: str, stack: devstack.StackInfo, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig holding a TokenRequest token of deploy/'s ServiceAccount: the operator's identity in a pod."""
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    return service_account_kubeconfig(api_client, stack, SA_NAMESPACE, SA_NAME, path)


@pytest.fixture(scope="session")
def sa_client(sa_kubeconfig: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(sa_kubeconfig)) as api:
        yield api


@pytest.fixture
def other_namespace(make_namespace: Callable[[], str]) -> str:
    return make_namespace()


def test_apply_is_idempotent_and_creates_the_base(deployed: str, kubeconfig: Path) -> None:
    for kind_name in (
        "namespace/coalmine-system",
        "customresourcedefinition.apiextensions.k8s.io/rollouts.coalmine.dev",
        "serviceaccount/coalmine",
        "clusterrole.rbac.authorization.k8s.io/coalmine",
        "role.rbac.authorization.k8s.io/coalmine-leader-election",
        "deployment.apps/coalmine",
        "service/coalmine-metrics",
    ):
        assert kind_name in deployed
    again = kubectl(kubeconfig, "apply", "-k", str(REPO / "deploy"), "--server-side")
    assert again.returncode == 0, again.stderr
    dry = kubectl(kubeconfig, "diff", "-k", str(REPO / "deploy"), "--server-side")
    assert dry.returncode == 0, f"re-applying deploy/ changes something:\n{dry.stdout}{dry.stderr}"


def _allowed(sa_client: client.ApiClient, verb: str, group: str, resource: str, namespace: str, **extra: str) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, namespace=namespace, **extra
            )
        )
    )
    result = client.AuthorizationV1Api(sa_client).create_self_subject_access_review(review)
    return bool(result.status.allowed)


ALLOWED = [
    ("list", "coalmine.dev", "rollouts", {}),
    ("watch", "coalmine.dev", "rollouts", {}),
    ("patch", "coalmine.dev", "rollouts", {"subresource": "status"}),
    ("get", "networking.istio.io", "virtualservices", {}),
    ("patch", "networking.istio.io", "virtualservices", {}),
    ("list", "networking.istio.io", "destinationrules", {}),
    ("watch", "networking.istio.io", "destinationrules", {}),
    ("list", "networking.istio.io", "virtualservices", {}),
    ("watch", "networking.istio.io", "virtualservices", {}),
    ("create", "", "events", {}),
    # readiness (spec.readiness): read only
    ("list", "", "pods", {}),
    ("watch", "", "pods", {}),
    ("list", "", "services", {}),
    ("watch", "", "services", {}),
    ("list", "discovery.k8s.io", "endpointslices", {}),
    ("watch", "discovery.k8s.io", "endpointslices", {}),
]
DENIED = [
    ("patch", "", "pods", {}),
    ("delete", "", "pods", {}),
    ("patch", "", "services", {}),
    ("patch", "discovery.k8s.io", "endpointslices", {}),
    ("get", "", "secrets", {}),
    ("list", "", "secrets", {}),
    ("watch", "", "secrets", {}),
    ("patch", "apps", "deployments", {}),
    ("update", "apps", "deployments", {}),
    ("create", "apps", "deployments", {}),
    ("delete", "apps", "deployments", {}),
    ("list", "apps", "deployments", {}),
    ("patch", "coalmine.dev", "rollouts", {}),  # the spec is the user's
    ("update", "coalmine.dev", "rollouts", {}),
    ("delete", "coalmine.dev", "rollouts", {}),
    ("update", "coalmine.dev", "rollouts", {"subresource": "status"}),
    ("update", "networking.istio.io", "virtualservices", {}),
    ("create", "networking.istio.io", "virtualservices", {}),
    ("delete", "networking.istio.io", "virtualservices", {}),
    ("patch", "networking.istio.io", "destinationrules", {}),
    ("get", "", "configmaps", {}),
    ("create", "coordination.k8s.io", "leases", {}),  # only in coalmine-system
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", {}),
    ("create", "rbac.authorization.k8s.io", "rolebindings", {}),
]


def test_the_token_has_exactly_the_documented_rights(sa_client: client.ApiClient, namespace: str) -> None:
    wrong = [
        (verb, group, resource, extra)
        for verb, group, resource, extra in ALLOWED
        if not _allowed(sa_client, verb, group, resource, namespace, **extra)
    ]
    wrong += [
        ("NOT DENIED", verb, group, resource, extra)  # type: ignore[misc]
        for verb, group, resource, extra in DENIED
        if _allowed(sa_client, verb, group, resource, namespace, **extra)
    ]
    assert wrong == []
    # Leases: only its own, only in its own namespace.
    assert _allowed(sa_client, "create", "coordination.k8s.io", "leases", SA_NAMESPACE)
    assert _allowed(sa_client, "update", "coordination.k8s.io", "leases", SA_NAMESPACE, name="coalmine")
    assert not _allowed(sa_client, "update", "coordination.k8s.io", "leases", SA_NAMESPACE, name="other")
    assert not _allowed(sa_client, "delete", "coordination.k8s.io", "leases", SA_NAMESPACE, name="coalmine")
    assert not _allowed(sa_client, "get", "", "secrets", SA_NAMESPACE)


def test_the_token_cannot_read_secrets_or_modify_deployments(
    sa_client: client.ApiClient, api_client: client.ApiClient, namespace: str
) -> None:
    """Actual calls, not only reviews: each is refused with 403 and changes nothing."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata={"name": "db"}, string_data={"pw": "x"}))
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="order-v2"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "order"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "order"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="order:2")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)
    sa_core, sa_apps = client.CoreV1Api(sa_client), client.AppsV1Api(sa_client)
    calls: list[Callable[[], Any]] = [
        lambda: sa_core.read_namespaced_secret("db", namespace),
        lambda: sa_core.list_namespaced_secret(namespace),
        lambda: sa_core.list_secret_for_all_namespaces(),
        lambda: sa_apps.patch_namespaced_deployment("order-v2", namespace, {"spec": {"replicas": 5}}),
        lambda: sa_apps.delete_namespaced_deployment("order-v2", namespace),
        lambda: sa_apps.create_namespaced_deployment(namespace, {**deployment.to_dict(), "metadata": {"name": "x"}}),
    ]
    for call in calls:
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403, refused.value
    assert apps.read_namespaced_deployment("order-v2", namespace).spec.replicas == 1


def wait_for_weights(shop: Shop, weights: dict[str, int], timeout: float = 5.0) -> None:
    """The status is written first, the VirtualService right after it."""
    deadline = time.monotonic() + timeout
    while shop.primary_weights() != weights:
        assert time.monotonic() < deadline, f"VS weights {shop.primary_weights()}, expected {weights}"
        time.sleep(0.05)


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def deployed_operator(
    sa_kubeconfig: Path, stack: devstack.StackInfo, log: Path
) -> tuple[OperatorProcess, dict[str, str]]:
    """The operator exactly as deploy/deployment.yaml runs it (its args and every env var: all namespaces,
    leader election, JSON logs, /healthz and /metrics on), on the ServiceAccount's token. Overridden, and
    only these: install_support.stack_settings (where Prometheus is, how often it scrapes, free loopback
    ports) and the downward-API pod name."""
    deployment = yaml.safe_load((REPO / "deploy" / "deployment.yaml").read_text())
    env, urls = stack_settings(stack)
    env = pod_env(deployment, pod_name="coalmine-test-0") | env | {"KUBECONFIG": str(sa_kubeconfig)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_")}
    argv = [sys.executable, "-m", "coalmine", *the_container(deployment)["args"]]
    process = OperatorProcess("operator", argv, log, env={**clean, **env}, inherit_env=False)
    return process.start(), urls


def test_the_operator_as_deployed_does_a_rollout_and_a_rollback(
    sa_kubeconfig: Path,
    stack: devstack.StackInfo,
    api_client: client.ApiClient,
    namespace: str,
    meshsim: Any,
    tmp_path: Path,
    argocd_health: Callable[[dict[str, Any]], dict[str, str]],
) -> None:
    shop = Shop(api_client, namespace)
    shop.apply_istio()
    meshsim.client.set_service(namespace, "order", rps=150.0)
    op, urls = deployed_operator(sa_kubeconfig, stack, tmp_path / "operator.log")
    try:
        assert wait_http(urls["health"]).status_code == 200, "the liveness and readiness probes' endpoint"
        shop.create_rollout(steps=STEPS)
        shop.wait_for(lambda s: s.get("phase") == "Progressing", 30, "Progressing", op)
        assert argocd_health(shop.get_rollout())["status"] == "Progressing"  # Argo CD's view of the live object
        status = shop.wait_for_phase("Succeeded", 90, op)
        assert argocd_health(shop.get_rollout())["status"] == "Healthy"
        assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
        wait_for_weights(shop, {"v1": 0, "v2": 100})

        # The next release (v2 -> v3) whose canary fails: rolled back to 0 with the same rights.
        dr = shop.get_dr()
        dr["spec"]["subsets"].append({"name": "v3", "labels": {"app": "order", "version": "v3"}})
        shop.custom.replace_namespaced_custom_object(*ISTIO, namespace, "destinationrules", "order", dr)
        meshsim.client.set_destination(namespace, "order", "v3", error_ratio=0.5)
        shop.patch_rollout_spec(
            {
                "stable": {"host": "order", "subset": "v2"},
                "canary": {"host": "order", "subset": "v3"},
                "steps": [{"weight": 20, "hold": "30s"}, {"weight": 100}],
            }
        )
        status = shop.wait_for_phase("RolledBack", 60, op)
        assert status["observedGeneration"] == 2
        assert argocd_health(shop.get_rollout())["status"] == "Degraded"
        wait_for_weights(shop, {"v2": 100, "v3": 0})  # the release replaced v1 with v3 on the route
        shop.wait_for_event("RolledBack")
        assert "Succeeded" in [e.reason for e in shop.events()]

        # A Prometheus scrape of /metrics: what the status says, and this replica leads.
        text = wait_http(urls["metrics"]).text
        assert "coalmine_leader 1.0" in text
        assert f'coalmine_rollout_phase{{name="order",namespace="{namespace}",phase="RolledBack"}} 1.0' in text
        assert f'coalmine_rollout_canary_weight{{name="order",namespace="{namespace}"}} 0.0' in text
        reason = shop.status()["rollback"]["reason"]
        assert reason in ("FailFast", "FailureLimit")
        assert f'coalmine_rollbacks_total{{namespace="{namespace}",reason="{reason}"}} 1.0' in text
    finally:
        op.stop()

    text = op.log.read_text()
    denied = 'User "system:serviceaccount:coalmine-system:coalmine" cannot'
    assert denied not in text, op.tail()
    # JSON logs: every line parses, and every line about a Rollout names it.
    lines = _json_lines(op.log)
    about = [line for line in lines if line["logger"].startswith("coalmine.reconcile")]
    assert about, "the operator logged nothing about the rollout"
    assert all(line.get("rollout") for line in about)
    assert f"{namespace}/order" in {line["rollout"] for line in about}
    assert any("now leads" in line["message"] for line in lines)
    assert any("namespaces=*" in line["message"] for line in lines), "it watched every namespace"


def test_a_rollout_cannot_change_a_virtual_service_in_another_namespace(
    sa_kubeconfig: Path,
    api_client: client.ApiClient,
    namespace: str,
    other_namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    argocd_health: Callable[[dict[str, Any]], dict[str, str]],
) -> None:
    """A Rollout in A naming `order`, which exists only in B, waits for A's `order` and never touches B's."""
    Shop(api_client, other_namespace).apply_istio()
    custom = client.CustomObjectsApi(api_client)
    before = custom.get_namespaced_custom_object(*ISTIO, other_namespace, "virtualservices", "order")
    op = operator_factory([namespace, other_namespace], args=ELECTION, env={"KUBECONFIG": str(sa_kubeconfig)})
    shop = Shop(api_client, namespace)
    shop.create_rollout(steps=STEPS)
    status = shop.wait_for_phase("Pending", 30, op)
    assert namespace in status.get("message", "") or "order" in status.get("message", "")
    time.sleep(5)  # several ticks later, still waiting, still untouched
    assert shop.status()["phase"] == "Pending"
    assert argocd_health(shop.get_rollout())["status"] == "Progressing"
    after = custom.get_namespaced_custom_object(*ISTIO, other_namespace, "virtualservices", "order")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"] == before["spec"]
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "order")
    assert missing.value.status == 404
