"""The Helm chart on the real API server: `helm install` as the README's Install section says (with the
settings a user of this cluster would give: where Prometheus is, how often it scrapes), then the operator
run exactly as the installed Deployment configures it, on a token of the chart's ServiceAccount and nothing
else, does a rollout; `helm uninstall` removes what it installed and leaves the CRD and the Rollouts.

No pod runs (the stack has no kubelet, so no --wait): the test runs the installed Deployment's container
as a process, as test_deploy.py does for deploy/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from install_support import REPO, pod_env, service_account_kubeconfig, the_container, wait_http
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rollout_support import COALMINE, OperatorProcess, Shop

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

RELEASE, NAMESPACE = "cm", "coalmine-helm"
FULLNAME = "cm-coalmine"  # the chart's <release>-<chart> for a release whose name does not contain the chart's
STEPS = [{"weight": 10, "hold": "3s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}]


class Helm:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary, self.kubeconfig, self.home = binary, kubeconfig, home

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            **{f"HELM_{kind}_HOME": str(self.home / kind.lower()) for kind in ("CONFIG", "CACHE", "DATA")},
        }
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, check=False, env=env, timeout=120
        )


@pytest.fixture(scope="module")
def helm(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    done = subprocess.run([str(REPO / "tools" / "build-helm.sh")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return Helm(Path(done.stdout.strip().splitlines()[-1]), kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def release(helm: Helm, stack: devstack.StackInfo, api_client: client.ApiClient) -> Iterator[str]:
    health, metrics = devstack.free_ports(2)  # the process runs on this host, where 8080 and 9090 may be taken
    settings = {
        "prometheus.url": stack.prometheus_url,
        "prometheus.scrapeInterval": stack.scrape_interval,
        "health.port": str(health),
        "metrics.port": str(metrics),
        "listenAddress": "127.0.0.1",
    }
    install = helm(
        "install",
        RELEASE,
        str(REPO / "charts" / "coalmine"),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        ",".join(f"{k}={v}" for k, v in settings.items()),
    )
    assert install.returncode == 0, install.stderr
    yield install.stdout
    helm("uninstall", RELEASE, "--namespace", NAMESPACE)  # a no-op when the last test uninstalled it


def test_helm_install_creates_the_release(release: str, helm: Helm, api_client: client.ApiClient) -> None:
    assert "STATUS: deployed" in release
    assert f"Lease {NAMESPACE}/coalmine" in release, "NOTES.txt"
    listed = helm("list", "--namespace", NAMESPACE, "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert '"status":"deployed"' in listed.stdout
    core, apps, rbac = (
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.RbacAuthorizationV1Api(api_client),
    )
    assert core.read_namespaced_service_account(FULLNAME, NAMESPACE)
    assert apps.read_namespaced_deployment(FULLNAME, NAMESPACE).spec.replicas == 2
    assert core.read_namespaced_service(f"{FULLNAME}-metrics", NAMESPACE)
    assert rbac.read_cluster_role_binding(FULLNAME).subjects[0].namespace == NAMESPACE
    assert rbac.read_namespaced_role(f"{FULLNAME}-leader-election", NAMESPACE).rules[1].resource_names == ["coalmine"]
    # The CRD was already there (the stack installs it): Helm leaves an existing CRD as it is.
    crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition("rollouts.coalmine.dev")
    assert "meta.helm.sh/release-name" not in (crd.metadata.annotations or {})
    # Installed again with the same values, nothing changes.
    again = helm("upgrade", RELEASE, str(REPO / "charts" / "coalmine"), "--namespace", NAMESPACE, "--reuse-values")
    assert again.returncode == 0, again.stderr


def test_the_chart_service_account_runs_a_rollout(
    release: str,
    stack: devstack.StackInfo,
    api_client: client.ApiClient,
    namespace: str,
    meshsim: Any,
    tmp_path: Path,
) -> None:
    """The operator as the installed Deployment runs it: its args and every env var as the API server has
    them, with the downward API's pod name and namespace, on a token of the chart's ServiceAccount."""
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(FULLNAME, NAMESPACE)
    deployment_dict: dict[str, Any] = api_client.sanitize_for_serialization(deployment)
    env = pod_env(deployment_dict, pod_name=f"{FULLNAME}-test-0")
    assert env["COALMINE_PROMETHEUS_URL"] == stack.prometheus_url
    assert env["POD_NAMESPACE"] == NAMESPACE
    kubeconfig = service_account_kubeconfig(api_client, stack, NAMESPACE, FULLNAME, tmp_path / "sa-kubeconfig")
    argv = [sys.executable, "-m", "coalmine", *the_container(deployment_dict)["args"]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_")}
    env_of_pod = {**clean, **env, "KUBECONFIG": str(kubeconfig)}
    process = OperatorProcess("operator", argv, tmp_path / "operator.log", env=env_of_pod, inherit_env=False).start()
    shop = Shop(api_client, namespace)
    shop.apply_istio()
    meshsim.client.set_service(namespace, "order", rps=150.0)
    try:
        wait_http(f"http://127.0.0.1:{env['COALMINE_HEALTH_PORT']}/healthz")
        shop.create_rollout(steps=STEPS)
        status = shop.wait_for_phase("Succeeded", 90, process)
        assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
        assert shop.primary_weights() == {"v1": 0, "v2": 100}
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease("coalmine", NAMESPACE)
        assert lease.spec.holder_identity == f"{FULLNAME}-test-0"
        metrics = wait_http(f"http://127.0.0.1:{env['COALMINE_METRICS_PORT']}/metrics").text
        assert "coalmine_leader 1.0" in metrics
    finally:
        process.stop()
    log = process.log.read_text()
    assert f'User "system:serviceaccount:{NAMESPACE}:{FULLNAME}" cannot' not in log, process.tail()


def test_helm_uninstall_leaves_the_crd_and_the_rollouts(
    release: str, helm: Helm, api_client: client.ApiClient, namespace: str
) -> None:
    shop = Shop(api_client, namespace)
    shop.apply_istio()
    shop.create_rollout(steps=STEPS)
    done = helm("uninstall", RELEASE, "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ApiException) as gone:
        client.AppsV1Api(api_client).read_namespaced_deployment(FULLNAME, NAMESPACE)
    assert gone.value.status == 404
    with pytest.raises(ApiException) as gone:
        client.RbacAuthorizationV1Api(api_client).read_cluster_role(FULLNAME)
    assert gone.value.status == 404
    assert client.ApiextensionsV1Api(api_client).read_custom_resource_definition("rollouts.coalmine.dev")
    custom = client.CustomObjectsApi(api_client)
    assert custom.get_namespaced_custom_object(*COALMINE, namespace, "rollouts", "order")["metadata"]["name"] == "order"
