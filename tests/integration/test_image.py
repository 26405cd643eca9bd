"""The operator image, built from the Dockerfile with podman (tools/build-image.sh: a debootstrapped Debian
bookworm base here, where no registry is reachable) and run as deploy/'s Deployment runs it in a pod:
user 10001, read-only root filesystem with a tmpfs on /tmp, no capabilities, the ServiceAccount's token,
CA and namespace mounted where the kubelet mounts them and KUBERNETES_SERVICE_HOST/PORT set, so the
operator logs in exactly as in a cluster. The container shares the host's network to reach the stack's
loopback API server and Prometheus. It completes a rollout.

kopf's ServiceAccount login always connects to https://kubernetes.default.svc (port 443, the cluster's
DNS name, whatever KUBERNETES_SERVICE_HOST says), while the operator's own client uses
KUBERNETES_SERVICE_HOST/PORT. Here that name resolves (`--add-host`) to a loopback address where the test
forwards port 443 to the API server, whose certificate names kubernetes.default.svc: both clients reach
it as they would in a pod.

Skipped, with the reason, only where podman, buildah, runc and debootstrap cannot be installed.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from install_support import REPO, kubectl, pod_env, service_account_token, stack_settings, the_container, wait_http
from kubernetes import client
from rollout_support import OperatorProcess, Shop

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

PODMAN = str(REPO / "tools" / "podman.sh")
NOT_INSTALLABLE = 3  # tools/install-container-tools.sh: the container tools cannot be installed here
STEPS = [{"weight": 10, "hold": "3s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}]
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`tools/build-image.sh` (what `make image` runs): cached base and layers make a warm build a few seconds."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("w") as err:
        done = subprocess.run(
            [str(REPO / "tools" / "build-image.sh")], stdout=subprocess.PIPE, stderr=err, text=True, timeout=1200
        )
    text = log.read_text()
    if done.returncode == NOT_INSTALLABLE:
        pytest.skip(f"the container tools cannot be installed here: {text.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"tools/build-image.sh failed:\n{text[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


class Forwarder:
    """TCP from `listen` to `target`, a thread per direction, for as long as the `with` block runs."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen)
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Forwarder:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                incoming, _ = self.server.accept()
            except TimeoutError:
                continue
            outgoing = socket.create_connection(self.target, timeout=10)
            outgoing.settimeout(None)
            incoming.settimeout(None)
            for a, b in ((incoming, outgoing), (outgoing, incoming)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def cluster_dns_name(stack: devstack.StackInfo) -> Iterator[str]:
    """A loopback address whose port 443 is the API server: what kubernetes.default.svc is in a cluster."""
    api = urlsplit(stack.apiserver_url)
    for _ in range(5):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        try:
            forwarder = Forwarder((address, 443), (str(api.hostname), int(api.port or 443)))
        except OSError as error:  # in use (or not root: then podman could not run either)
            last = error
            continue
        with forwarder:
            yield address
        return
    pytest.fail(f"could not listen on port 443 of a loopback address: {last}")


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture
def service_account_dir(
    kubeconfig: Path, api_client: client.ApiClient, stack: devstack.StackInfo, tmp_path: Path
) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount for deploy/'s ServiceAccount
    (files 0644, as a projected volume's default mode)."""
    applied = kubectl(kubeconfig, "apply", "-k", str(REPO / "deploy"), "--server-side")
    assert applied.returncode == 0, applied.stderr
    folder = tmp_path / "serviceaccount"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "token").write_text(service_account_token(api_client, "coalmine-system", "coalmine"))
    (folder / "ca.crt").write_bytes(stack.ca_file.read_bytes())
    (folder / "namespace").write_text("coalmine-system")
    for file in folder.iterdir():
        file.chmod(0o644)
    return folder


def test_the_image_runs_as_user_10001_on_a_read_only_root(image: str) -> None:
    probe = "import os; print(os.getuid(), os.getgid()); open('/opt/coalmine/probe', 'w')"
    done = podman("run", "--rm", "--read-only", "--entrypoint", "python3", image, "-c", probe)
    assert done.returncode != 0
    assert done.stdout.split() == ["10001", "10001"], "the image's USER"
    assert "Read-only file system" in done.stderr
    helped = podman("run", "--rm", "--read-only", image, "run", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--prometheus-url" in helped.stdout
    installed = podman("run", "--rm", "--entrypoint", "/opt/coalmine/bin/pip", image, "list", "--format", "json")
    names = {re.sub(r"[-_.]+", "-", p["name"]).lower() for p in json.loads(installed.stdout)}
    assert {"coalmine", "kopf", "kubernetes-asyncio"} <= names
    assert not names & {"rich", "kubernetes", "matplotlib", "coalmine-dev", "pytest"}, names


def test_the_image_completes_a_rollout_as_deploy_runs_it(
    image: str,
    service_account_dir: Path,
    cluster_dns_name: str,
    stack: devstack.StackInfo,
    api_client: client.ApiClient,
    namespace: str,
    meshsim: Any,
    tmp_path: Path,
    argocd_health: Callable[[dict[str, Any]], dict[str, str]],
) -> None:
    deployment = yaml.safe_load((REPO / "deploy" / "deployment.yaml").read_text())
    container = the_container(deployment)
    name = f"coalmine-test-{uuid.uuid4().hex[:8]}"
    env = pod_env(deployment, pod_name=name)
    settings, urls = stack_settings(stack)
    env |= settings
    api = urlsplit(stack.apiserver_url)
    env |= {"KUBERNETES_SERVICE_HOST": str(api.hostname), "KUBERNETES_SERVICE_PORT": str(api.port)}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    argv = [PODMAN, "run", "--rm", "--name", name, "--network", "host"]
    argv += ["--add-host", f"kubernetes.default.svc:{cluster_dns_name}"]
    argv += ["--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    argv += ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m"]  # the emptyDir on /tmp
    argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    argv += ["--volume", f"{service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    argv += [image, *container["args"]]
    operator = OperatorProcess("operator-image", argv, tmp_path / "operator.log").start()
    shop = Shop(api_client, namespace)
    shop.apply_istio()
    meshsim.client.set_service(namespace, "order", rps=150.0)
    try:
        wait_http(urls["health"], timeout=60)
        inspected = json.loads(podman("inspect", name).stdout)[0]
        assert inspected["Config"]["User"] == "10001:10001"
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        shop.create_rollout(steps=STEPS)
        status = shop.wait_for_phase("Succeeded", 90, operator)
        assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
        assert shop.primary_weights() == {"v1": 0, "v2": 100}
        assert argocd_health(shop.get_rollout())["status"] == "Healthy"
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease("coalmine", "coalmine-system")
        assert lease.spec.holder_identity == name
        text = wait_http(urls["metrics"]).text
        assert f'coalmine_rollout_phase{{name="order",namespace="{namespace}",phase="Succeeded"}} 1.0' in text
    finally:
        operator.stop()
        podman("rm", "--force", "--ignore", name)
    log = operator.log.read_text()
    assert 'User "system:serviceaccount:coalmine-system:coalmine" cannot' not in log, operator.tail()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("now leads" in line["message"] for line in lines), operator.tail()
