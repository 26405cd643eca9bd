"""Support for the install-path tests (deploy/, the Helm chart, the image): a ServiceAccount's token, and
the operator run exactly as a Deployment configures it (its args and every env var).

There is no kubelet in the local stack, so no pod runs: the tests run the Deployment's container
themselves, as a process (test_deploy.py, test_helm.py) or from the image (test_image.py), with a
TokenRequest token of the Deployment's ServiceAccount as the only credential.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack

REPO = Path(__file__).resolve().parents[2]


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def service_account_token(api_client: client.ApiClient, namespace: str, name: str) -> str:
    """A TokenRequest token of the ServiceAccount: what the kubelet mounts into the operator's pod."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(name, namespace, request)
    return str(token.status.token)


def service_account_kubeconfig(
    api_client: client.ApiClient, stack: devstack.StackInfo, namespace: str, name: str, path: Path
) -> Path:
    token = service_account_token(api_client, namespace, name)
    path.write_text(yaml.safe_dump(devstack.render_kubeconfig(stack.apiserver_url, stack.ca_file, token)))
    path.chmod(0o600)
    return path


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def pod_env(deployment: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet sets it: plain values, and the downward API's pod name
    and namespace."""
    namespace = deployment["metadata"]["namespace"]
    env: dict[str, str] = {}
    for item in the_container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}[field]
    return env


def stack_settings(stack: devstack.StackInfo) -> tuple[dict[str, str], dict[str, str]]:
    """What the tests override of a Deployment's env, and only this: where Prometheus is and how often it
    scrapes (facts of this stack), and the health and metrics ports (free ones, loopback only: the process
    or container shares this host's network, where the pod's 8080 and 9090 may be taken).
    Returns the variables and the two endpoints' URLs ("health", "metrics")."""
    health, metrics = devstack.free_ports(2)
    env = {
        "COALMINE_PROMETHEUS_URL": stack.prometheus_url,
        "COALMINE_SCRAPE_INTERVAL": stack.scrape_interval,
        "COALMINE_HEALTH_PORT": str(health),
        "COALMINE_METRICS_PORT": str(metrics),
        "COALMINE_LISTEN_ADDRESS": "127.0.0.1",
    }
    return env, {"health": f"http://127.0.0.1:{health}/healthz", "metrics": f"http://127.0.0.1:{metrics}/metrics"}


def wait_http(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout:.0f} s"
        time.sleep(0.2)
