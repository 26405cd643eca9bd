"""Start, stop and describe the local stack: a small real cluster on 127.0.0.1.

Tests and the demo need a real API server (CRD schema validation, RBAC, resourceVersion
conflicts), Istio's own validation of what is written, workloads that become Ready, and a real
Prometheus; this machine has no Docker. So the processes run detached under a state folder,
their pids and ports are recorded in `stack.json`, and any later command (`down`, `status`, a
test fixture) works from that record.

Processes: etcd, kube-apiserver, Prometheus and istio-validation (Istio's validating webhook,
registered for VirtualServices and DestinationRules) always; with workloads (the default) also
kube-controller-manager, kube-scheduler and kwok, which runs the fake nodes' kubelets: pods get
scheduled, become Running and Ready (kwok fakes the containers: nothing runs, the pod IPs are
not reachable), Services get EndpointSlices, namespaces and garbage are really deleted.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field

from coalmine_dev.devstack import binaries

ISTIO_CRDS = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io")
GATEWAY_CRDS = (  # Gateway API, standard channel: the routes and what they attach to
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
)
STATE_FILE = "stack.json"
# Everything `up` creates inside the state folder; only these are removed on a fresh start.
_GENERATED = (
    "etcd",
    "pki",
    "prometheus",
    "targets",
    "logs",
    "istio-validation",
    "kwok",
    "tokens.csv",
    "sa.key",
    "kubeconfig",
    STATE_FILE,
)
# Stop order: clients of the API server first, then the API server, its webhook, then etcd.
_STOP_ORDER = (
    "kwok",
    "kube-scheduler",
    "kube-controller-manager",
    "prometheus",
    "kube-apiserver",
    "istio-validation",
    "etcd",
)
START_TIMEOUT = 90.0  # seconds; kube-apiserver on 2 busy cores can be slow
STOP_GRACE = 10.0

# The controllers kube-controller-manager runs: what Deployments, Services, namespace deletion and
# garbage collection need, plus node-lifecycle, which lifts the not-ready taint the API server puts
# on every new Node (without it no pod is ever scheduled), and a few cheap ones a cluster user
# expects. Not run: anything about volumes, certificates, cloud, node IPAM, quotas and autoscaling.
KCM_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
    "ttl-after-finished-controller",
)
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
WEBHOOK_CONFIGURATION = "coalmine-devstack-istio-validation"
WEBHOOK_NAME = "validation.istio.io"  # the name istiod registers its webhook under

# Popen objects of processes this Python process started, so they are reaped (no zombies, no
# "still running" warnings) when `down` runs in the same process, e.g. in a pytest session.
_children: dict[int, subprocess.Popen[bytes]] = {}
# stack.json is read, changed and written back by stop_process and start_process; threads of one process
# (bench/chaos.py restarts the API server while Prometheus is down) must not write back each other's stale pids.
_record_lock = threading.Lock()


class StackError(RuntimeError):
    """The stack could not be started; the message says what failed and how to fix it."""


class AlreadyRunningError(StackError):
    """`up` found a running stack in the state folder; `info` describes it."""

    def __init__(self, info: StackInfo) -> None:
        super().__init__(f"devstack already running in {info.state_dir} (apiserver {info.apiserver_url})")
        self.info = info


class StackInfo(BaseModel):
    """What runs where; persisted as `<state_dir>/stack.json`."""

    model_config = ConfigDict(frozen=True)

    state_dir: Path
    kubeconfig: Path
    apiserver_url: str
    ca_file: Path
    admin_token: str
    nobody_token: str  # a user with no groups and no roles, for RBAC-denial tests
    prometheus_url: str
    etcd_url: str
    scrape_interval: str
    pids: dict[str, int]
    ports: dict[str, int]
    workloads: bool = False  # kube-controller-manager, kube-scheduler and kwok run
    istio_validation: bool = False  # Istio's validating webhook is registered and in force
    nodes: list[str] = Field(default_factory=list)  # the fake nodes kwok runs


def default_state_dir() -> Path:
    return Path(os.environ.get("COALMINE_STATE_DIR") or Path.cwd() / ".state" / "devstack")


def default_crds_dir() -> Path:
    if override := os.environ.get("COALMINE_CRDS_DIR"):
        return Path(override)
    return Path(__file__).resolve().parents[3] / "crds"


def load(state_dir: Path) -> StackInfo | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return StackInfo.model_validate_json(path.read_text())


def _save(info: StackInfo) -> None:
    tmp = info.state_dir / (STATE_FILE + ".tmp")
    tmp.touch(mode=0o600)  # it holds the admin token
    tmp.write_text(info.model_dump_json(indent=2))
    tmp.replace(info.state_dir / STATE_FILE)


def is_alive(pid: int, name: str) -> bool:
    """True when `pid` is a live (non-zombie) process whose command is `name`."""
    if (child := _children.get(pid)) is not None:
        if child.poll() is None:
            # Ours, and running. Its /proc cmdline may still be ours too, between fork and exec,
            # so it is not compared with `name` (a loaded machine once showed that window).
            return True
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and Path(argv0).name == name


def status(state_dir: Path) -> dict[str, bool] | None:
    """Recorded process name -> alive?, or None when no stack was started in `state_dir`."""
    info = load(state_dir)
    if info is None:
        return None
    return {name: is_alive(pid, name) for name, pid in info.pids.items()}


def is_running(state_dir: Path) -> bool:
    return any((status(state_dir) or {}).values())


# --- configuration files ------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (bound together, so never the same twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def render_tokens_csv(admin_token: str, nobody_token: str) -> str:
    return f'{admin_token},admin,admin-uid,"system:masters"\n{nobody_token},nobody,nobody-uid\n'


def render_prometheus_config(state_dir: Path, port: int, scrape_interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            {
                # Targets added with `add_scrape_target`; each file sets its own `job` label.
                "job_name": "devstack-targets",
                "file_sd_configs": [{"files": [str(state_dir / "targets" / "*.json")], "refresh_interval": "1s"}],
            },
        ],
    }


def render_kubeconfig(server: str, ca_file: Path, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devstack", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": "admin"}}],
        "current-context": "devstack",
    }


def _write_sa_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)


def render_node(name: str) -> dict[str, Any]:
    """A Node kwok manages (selected by annotation), sized so scheduling never runs out of room.

    No `kwok.x-k8s.io/node=fake:NoSchedule` taint (kwok's docs add one): pods need no toleration.
    """
    key, value = KWOK_NODE_ANNOTATION
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def render_webhook_configuration(url: str, ca_bundle: bytes) -> dict[str, Any]:
    """Istio's validation for VirtualServices and DestinationRules; refuses writes when it is unreachable."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "rules": [
                    {
                        "apiGroups": ["networking.istio.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["virtualservices", "destinationrules"],
                    }
                ],
                "failurePolicy": "Fail",  # nothing unvalidated slips through
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }


def write_webhook_tls(directory: Path, host: str = "127.0.0.1") -> bytes:
    """A throw-away CA and a serving certificate for `host` (IP SAN); returns the CA's PEM.

    Writes ca.crt, tls.crt and tls.key into `directory` (the key readable by the owner only).
    """
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=365))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coalmine devstack istio-validation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digitalSignature, keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "tls.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem


def add_scrape_target(state_dir: Path, name: str, address: str) -> None:
    """Have Prometheus scrape `http://<address>/metrics` with `job=<name>` (picked up within ~1 s)."""
    targets = state_dir / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    tmp = targets / f"{name}.json.tmp"  # not matched by *.json, so Prometheus never reads half a file
    tmp.write_text(json.dumps([{"targets": [address], "labels": {"job": name}}]))
    tmp.replace(targets / f"{name}.json")


def remove_scrape_target(state_dir: Path, name: str) -> None:
    (state_dir / "targets" / f"{name}.json").unlink(missing_ok=True)


# --- processes ------------------------------------------------------------------------------


def _log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join("    " + line for line in tail)


def _spawn(state_dir: Path, name: str, argv: list[str]) -> int:
    """Start `argv` detached (own session, output to logs/<name>.log) and return its pid."""
    log = _log_path(state_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _children[proc.pid] = proc
    return proc.pid


def _stop(pid: int, name: str, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group of `pid`, SIGKILL after `grace` seconds (at once with 0), return once it is gone."""
    signals = ((signal.SIGTERM, grace),) if grace > 0 else ()
    for sig, wait in (*signals, (signal.SIGKILL, 5.0)):
        if not is_alive(pid, name):
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not is_alive(pid, name):
                return
            time.sleep(0.05)
    raise StackError(f"{name} (pid {pid}) survived SIGKILL")


class _NotYet(Exception):
    """A readiness check's answer for "not yet", with what it saw (shown if it never gets there)."""


def _wait_ready(state_dir: Path, name: str, pid: int, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if not is_alive(pid, name):
            raise StackError(f"{name} exited during start-up; {_log_tail(_log_path(state_dir, name))}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        except _NotYet as not_yet:
            last = f" (last seen: {not_yet})"
        if time.monotonic() > deadline:
            tail = _log_tail(_log_path(state_dir, name))
            raise StackError(f"{name} not ready after {timeout:.0f} s{last}; {tail}")
        time.sleep(0.1)


def _http_ok(url: str, token: str | None = None) -> Callable[[], bool]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def check() -> bool:
        # verify=False only for this readiness probe: the serving cert is self-signed at start-up.
        return httpx.get(url, headers=headers, verify=False, timeout=2.0).status_code == 200

    return check


def _prometheus_argv(info: StackInfo) -> list[str]:
    prom_dir = info.state_dir / "prometheus"
    return [
        str(binaries.prometheus()),
        f"--config.file={prom_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={prom_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{info.ports['prometheus']}",
        "--storage.tsdb.retention.time=1d",
    ]


# What `start_process` can bring back: the processes whose state is all in the state folder and stack.json.
RESTARTABLE = ("etcd", "kube-apiserver", "prometheus")


def start_process(state_dir: Path, name: str, timeout: float = START_TIMEOUT) -> StackInfo:
    """(Re)start etcd, kube-apiserver or Prometheus with the recorded port, flags and data (etcd's data,
    the API server's certificate, Prometheus's TSDB are kept); wait until it answers. A no-op when it runs.

    Clients keep working across a restart: same URLs, same CA, same tokens."""
    info = _require(state_dir)
    if name not in RESTARTABLE:
        raise StackError(f"cannot restart {name!r}: only {', '.join(RESTARTABLE)}")
    if is_alive(info.pids.get(name, -1), name):
        return info
    if name == "etcd":
        argv, check = etcd_argv(binaries.etcd(), info), _etcd_healthy(info.etcd_url)
    elif name == "kube-apiserver":
        argv = apiserver_argv(binaries.kube_apiserver(), info)
        check = _http_ok(f"{info.apiserver_url}/readyz", info.admin_token)
    else:
        argv, check = _prometheus_argv(info), _http_ok(f"{info.prometheus_url}/-/ready")
    deadline = time.monotonic() + timeout
    while True:
        pid = _spawn(state_dir, name, argv)
        info = _record_pid(state_dir, name, pid)
        try:
            _wait_ready(state_dir, name, pid, check, max(1.0, deadline - time.monotonic()))
            return info
        except StackError as error:
            # The recorded port is in the ephemeral range: while the process was down, a client dialling it
            # (or any outgoing connection) may hold it for a moment. Wait for it, as a restarted pod would.
            if "address already in use" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def start_prometheus(state_dir: Path, timeout: float = START_TIMEOUT) -> StackInfo:
    """(Re)start Prometheus with the recorded port, config and data; wait until it is ready."""
    return start_process(state_dir, "prometheus", timeout)


def stop_process(state_dir: Path, name: str, *, kill: bool = False) -> StackInfo:
    """Stop one of the stack's processes (e.g. to test what happens without it) and forget its pid.

    `kill`: SIGKILL at once, as a crash (default: SIGTERM, then SIGKILL after a grace period)."""
    info = _require(state_dir)
    if (pid := info.pids.get(name)) is not None:
        _stop(pid, name, grace=0.0 if kill else STOP_GRACE)
    return _record_pid(state_dir, name, None)


def _record_pid(state_dir: Path, name: str, pid: int | None) -> StackInfo:
    """Record (or, with None, forget) one process's pid in stack.json, leaving every other entry as it is now."""
    with _record_lock:
        info = _require(state_dir)
        pids = {k: v for k, v in info.pids.items() if k != name}
        if pid is not None:
            pids[name] = pid
        info = info.model_copy(update={"pids": pids})
        _save(info)
        return info


def restart_process(
    state_dir: Path, name: str, *, kill: bool = False, down_for: float = 0.0, timeout: float = START_TIMEOUT
) -> StackInfo:
    """Stop etcd, kube-apiserver or Prometheus (SIGKILL with `kill`), wait `down_for` seconds, start it again
    on the same port with the same data, and wait until it answers."""
    if name not in RESTARTABLE:
        raise StackError(f"cannot restart {name!r}: only {', '.join(RESTARTABLE)}")
    stop_process(state_dir, name, kill=kill)
    time.sleep(down_for)
    return start_process(state_dir, name, timeout)


def stop_prometheus(state_dir: Path) -> StackInfo:
    """Stop only Prometheus (e.g. to test the operator's behaviour when metrics are unavailable)."""
    return stop_process(state_dir, "prometheus")


def _require(state_dir: Path) -> StackInfo:
    info = load(state_dir)
    if info is None:
        raise StackError(f"no devstack in {state_dir}; start one with `coalmine devstack up`")
    return info


# --- the API server: CRDs, the webhook registration, nodes ------------------------------------


def _api(info: StackInfo, timeout: float = 10.0) -> httpx.Client:
    """An httpx client for the stack's API server as admin, verifying its certificate."""
    tls = ssl.create_default_context(cafile=str(info.ca_file))
    headers = {"Authorization": f"Bearer {info.admin_token}"}
    return httpx.Client(base_url=info.apiserver_url, verify=tls, headers=headers, timeout=timeout)


def _crd_documents(crds_dir: Path, istio_file: Path, gateway_file: Path | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(crds_dir.glob("*.yaml")) if crds_dir.is_dir() else []:
        try:
            file_docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as error:
            raise StackError(f"{path} is not valid YAML: {error}") from error
        for doc in file_docs:
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise StackError(f"{path}: only CustomResourceDefinitions belong in {crds_dir}")
            docs.append(doc)
    # libyaml's loader when PyYAML has it: Istio's file holds 15 CRDs (0.9 MB), about 1 s in pure Python.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    istio = [
        d for d in yaml.load_all(istio_file.read_text(), Loader=loader) if d and d["metadata"]["name"] in ISTIO_CRDS
    ]
    if len(istio) != len(ISTIO_CRDS):
        raise StackError(f"{istio_file} lacks one of {ISTIO_CRDS}")
    gateway: list[dict[str, Any]] = []
    if gateway_file is not None:
        gateway = [
            d
            for d in yaml.load_all(gateway_file.read_text(), Loader=loader)
            if d and d.get("kind") == "CustomResourceDefinition" and d["metadata"]["name"] in GATEWAY_CRDS
        ]
        if len(gateway) != len(GATEWAY_CRDS):
            raise StackError(f"{gateway_file} lacks one of {GATEWAY_CRDS}")
    return docs + istio + gateway


def _server_side_apply(http: httpx.Client, path: str, doc: dict[str, Any], what: str) -> None:
    response = http.patch(
        path,
        params={"fieldManager": "coalmine-devstack", "force": "true"},
        content=json.dumps(doc),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    if response.status_code >= 400:
        reason = response.json().get("message", response.text)
        raise StackError(f"the API server rejected {what}: {reason}")


def _apply_crds(info: StackInfo, docs: list[dict[str, Any]], timeout: float) -> None:
    """Server-side apply each CRD (idempotent), then wait until every one is Established."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    # A large CRD with many CEL rules (Gateway API's HTTPRoute) takes the API server seconds to compile;
    # on a loaded machine more than the default 10 s per request.
    with _api(info, timeout=max(10.0, timeout)) as http:
        for doc in docs:
            _server_side_apply(http, f"{base}/{doc['metadata']['name']}", doc, f"CRD {doc['metadata']['name']}")
        deadline = time.monotonic() + timeout
        for doc in docs:
            name = doc["metadata"]["name"]
            while True:
                conditions = (http.get(f"{base}/{name}").json().get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"CRD {name} not Established after {timeout:.0f} s")
                time.sleep(0.1)


# A VirtualService Istio refuses (negative weight), sent with dryRun to see whether the webhook is in force.
_PROBE_VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "devstack-validation-probe", "namespace": "default"},
    "spec": {"hosts": ["probe"], "http": [{"route": [{"destination": {"host": "probe"}, "weight": -1}]}]},
}


def _istio_validation_in_force(info: StackInfo) -> Callable[[], bool]:
    """True once the API server sends VirtualService writes to the webhook and it refuses a bad one."""

    def check() -> bool:
        with _api(info) as http:
            response = http.post(
                "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
                params={"dryRun": "All"},
                json=_PROBE_VS,
            )
        if response.status_code < 300:
            raise _NotYet("a VirtualService with weight -1 was accepted: the webhook is not called yet")
        message = str(response.json().get("message", response.text))
        if f'admission webhook "{WEBHOOK_NAME}" denied the request' in message:
            return True
        raise _NotYet(f"the probe VirtualService got {response.status_code}: {message}")

    return check


def _register_istio_validation(info: StackInfo, ca_pem: bytes) -> None:
    url = f"https://127.0.0.1:{info.ports['istio-validation']}/validate"
    doc = render_webhook_configuration(url, ca_pem)
    with _api(info) as http:
        _server_side_apply(
            http,
            f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}",
            doc,
            f"ValidatingWebhookConfiguration {WEBHOOK_CONFIGURATION}",
        )


def _create_nodes(info: StackInfo) -> None:
    with _api(info) as http:
        for name in info.nodes:
            _server_side_apply(http, f"/api/v1/nodes/{name}", render_node(name), f"Node {name}")


def node_problem(node: dict[str, Any]) -> str | None:
    """None when pods can be scheduled on `node` (Ready, no not-ready taint), else what is missing."""
    conditions = (node.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return "not Ready (kwok has not taken it over)"
    taints = (node.get("spec") or {}).get("taints") or []
    if any(t.get("key") == NOT_READY_TAINT for t in taints):
        return f"still tainted {NOT_READY_TAINT} (kube-controller-manager's node-lifecycle controller lifts it)"
    return None


def _nodes_schedulable(info: StackInfo, problems: dict[str, str]) -> Callable[[], bool]:
    def check() -> bool:
        problems.clear()
        with _api(info) as http:
            for name in info.nodes:
                response = http.get(f"/api/v1/nodes/{name}")
                problem = node_problem(response.json()) if response.status_code == 200 else "not found"
                if problem:
                    problems[name] = problem
        return not problems

    return check


# --- process command lines ---------------------------------------------------------------------


def etcd_argv(binary: Path, info: StackInfo) -> list[str]:
    """etcd on the recorded ports, its data in <state>/etcd (kept across a restart)."""
    peer_url = f"http://127.0.0.1:{info.ports['etcd-peer']}"
    return [
        str(binary),
        "--name=default",
        f"--data-dir={info.state_dir / 'etcd'}",
        f"--listen-client-urls={info.etcd_url}",
        f"--advertise-client-urls={info.etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(binary: Path, info: StackInfo) -> list[str]:
    """kube-apiserver on the recorded port; it self-signs into <state>/pki once and reuses that certificate."""
    state_dir = info.state_dir
    return [
        str(binary),
        f"--etcd-servers={info.etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={info.ports['kube-apiserver']}",
        f"--cert-dir={state_dir / 'pki'}",
        "--service-cluster-ip-range=10.0.0.0/16",  # /24 ran out at 100 of bench/peers.py's Flagger canaries (3 Services each)
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--disable-admission-plugins=ServiceAccount",
        f"--service-account-issuer={info.apiserver_url}",
        f"--service-account-key-file={state_dir / 'sa.key'}",
        f"--service-account-signing-key-file={state_dir / 'sa.key'}",
        f"--token-auth-file={state_dir / 'tokens.csv'}",
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def _kube_component_argv(binary: Path, info: StackInfo, name: str) -> list[str]:
    """Flags kube-controller-manager and kube-scheduler share: admin kubeconfig, loopback, no election."""
    kubeconfig = str(info.kubeconfig)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # The API server has no request-header CA, so there is no extension-apiserver-authentication
        # ConfigMap to read; without this the component logs its absence every few seconds.
        "--authentication-skip-lookup=true",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={info.ports[name]}",
        "--v=1",
    ]


def kcm_argv(binary: Path, info: StackInfo) -> list[str]:
    return [
        *_kube_component_argv(binary, info, "kube-controller-manager"),
        f"--controllers={','.join(KCM_CONTROLLERS)}",
        "--use-service-account-credentials=false",
    ]


def scheduler_argv(binary: Path, info: StackInfo) -> list[str]:
    return _kube_component_argv(binary, info, "kube-scheduler")


def kwok_argv(binary: Path, stages: Path, info: StackInfo) -> list[str]:
    key, value = KWOK_NODE_ANNOTATION
    return [
        str(binary),
        f"--kubeconfig={info.kubeconfig}",
        f"--config={stages}",  # a standalone kwok needs its Stage objects given (kwokctl injects them)
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        "--cidr=10.244.0.0/16",  # pod IPs; nothing listens on them
        "--node-ip=127.0.0.1",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{info.ports['kwok']}",
    ]


def istio_validation_argv(binary: Path, info: StackInfo) -> list[str]:
    tls = info.state_dir / "istio-validation"
    return [
        str(binary),
        f"--listen=127.0.0.1:{info.ports['istio-validation']}",
        f"--tls-cert-file={tls / 'tls.crt'}",
        f"--tls-private-key-file={tls / 'tls.key'}",
    ]


# --- up / down ------------------------------------------------------------------------------


def up(
    state_dir: Path,
    *,
    scrape_interval: str = "1s",
    crds_dir: Path | None = None,
    timeout: float = START_TIMEOUT,
    workloads: bool = True,
    istio_validation: bool = True,
    nodes: int = 1,
) -> StackInfo:
    """Start the stack under `state_dir`, install CRDs and Istio's validation, wait until ready.

    `workloads=False` leaves out kube-controller-manager, kube-scheduler and kwok (the bare API
    server: fastest start, but no pods, endpoints or namespace deletion); `istio_validation=False`
    leaves out Istio's webhook. Raises AlreadyRunningError if a stack already runs there, and
    StackError (after stopping whatever it started) if anything is missing or fails to start;
    the message names the component and shows the end of its log.
    """
    state_dir = state_dir.resolve()
    if (existing := load(state_dir)) is not None and is_running(state_dir):
        raise AlreadyRunningError(existing)
    if workloads and nodes < 1:
        raise StackError(f"a stack with workloads needs at least one node, got {nodes}")
    missing: list[str] = []
    found: binaries.Binaries | None = None
    extra: binaries.WorkloadBinaries | None = None
    validator: Path | None = None
    try:
        found = binaries.find_all()
    except binaries.MissingBinaryError as error:
        missing.append(str(error))
    if workloads:
        try:
            extra = binaries.find_workloads()
        except binaries.MissingBinaryError as error:
            missing.append(str(error))
    if istio_validation:
        try:
            validator = binaries.istio_validation()
        except binaries.MissingBinaryError as error:
            missing.append(str(error))
    if missing or found is None:
        raise StackError("cannot start the devstack:\n" + "\n".join(missing))
    crd_docs = _crd_documents(crds_dir or default_crds_dir(), found.istio_crds, found.gateway_crds)

    state_dir.mkdir(parents=True, exist_ok=True)
    for name in _GENERATED:
        path = state_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for sub in ("etcd", "pki", "prometheus", "targets", "logs"):
        (state_dir / sub).mkdir(mode=0o700)

    port_names = ["etcd", "etcd-peer", "kube-apiserver", "prometheus"]
    if istio_validation:
        port_names.append("istio-validation")
    if workloads:
        port_names += ["kube-controller-manager", "kube-scheduler", "kwok"]
    ports = dict(zip(port_names, free_ports(len(port_names)), strict=True))
    admin_token, nobody_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    (state_dir / "tokens.csv").write_text(render_tokens_csv(admin_token, nobody_token))
    _write_sa_key(state_dir / "sa.key")
    prom_config = render_prometheus_config(state_dir, ports["prometheus"], scrape_interval)
    (state_dir / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(prom_config, sort_keys=False))
    apiserver_url = f"https://127.0.0.1:{ports['kube-apiserver']}"
    # kube-apiserver self-signs <cert-dir>/apiserver.crt (leaf followed by its CA) for 127.0.0.1.
    ca_file = state_dir / "pki" / "apiserver.crt"
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(render_kubeconfig(apiserver_url, ca_file, admin_token), sort_keys=False))
    kubeconfig.chmod(0o600)
    webhook_ca = write_webhook_tls(state_dir / "istio-validation") if istio_validation else b""

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    info = StackInfo(
        state_dir=state_dir,
        kubeconfig=kubeconfig,
        apiserver_url=apiserver_url,
        ca_file=ca_file,
        admin_token=admin_token,
        nobody_token=nobody_token,
        prometheus_url=f"http://127.0.0.1:{ports['prometheus']}",
        etcd_url=etcd_url,
        scrape_interval=scrape_interval,
        pids={},
        ports=ports,
        workloads=workloads,
        istio_validation=istio_validation,
        nodes=[f"kwok-node-{i}" for i in range(nodes)] if workloads else [],
    )
    pids: dict[str, int] = {}

    def spawn(name: str, argv: list[str]) -> None:
        nonlocal info
        pids[name] = _spawn(state_dir, name, argv)
        info = info.model_copy(update={"pids": dict(pids)})
        _save(info)  # recorded at once, so `down` can clean up even if we die here

    try:
        spawn("etcd", etcd_argv(found.etcd, info))
        spawn("kube-apiserver", apiserver_argv(found.kube_apiserver, info))
        spawn("prometheus", _prometheus_argv(info))
        if validator is not None:
            spawn("istio-validation", istio_validation_argv(validator, info))

        _wait_ready(state_dir, "etcd", pids["etcd"], _etcd_healthy(etcd_url), timeout)
        _wait_ready(
            state_dir,
            "kube-apiserver",
            pids["kube-apiserver"],
            _http_ok(f"{apiserver_url}/readyz", admin_token),
            timeout,
        )
        if extra is not None:  # they need the API server: started once it answers
            spawn("kube-controller-manager", kcm_argv(extra.kube_controller_manager, info))
            spawn("kube-scheduler", scheduler_argv(extra.kube_scheduler, info))
            spawn("kwok", kwok_argv(extra.kwok, extra.kwok_stages, info))
            _create_nodes(info)
        _apply_crds(info, crd_docs, timeout)
        if validator is not None:
            url = f"https://127.0.0.1:{ports['istio-validation']}/healthz"
            _wait_ready(state_dir, "istio-validation", pids["istio-validation"], _http_ok(url), timeout)
            _register_istio_validation(info, webhook_ca)
            _wait_ready(
                state_dir, "istio-validation", pids["istio-validation"], _istio_validation_in_force(info), timeout
            )
        _wait_ready(state_dir, "prometheus", pids["prometheus"], _http_ok(f"{info.prometheus_url}/-/ready"), timeout)
        if extra is not None:
            for name in ("kube-controller-manager", "kube-scheduler"):
                _wait_ready(state_dir, name, pids[name], _http_ok(f"https://127.0.0.1:{ports[name]}/healthz"), timeout)
            _wait_ready(state_dir, "kwok", pids["kwok"], _http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"), timeout)
            _wait_nodes(info, pids, timeout)
    except BaseException:
        for name in _STOP_ORDER:
            if name in pids:
                _stop(pids[name], name)
        raise
    return info


def _wait_nodes(info: StackInfo, pids: dict[str, int], timeout: float) -> None:
    """Wait until every fake node takes pods; name kwok or kube-controller-manager when one does not."""
    problems: dict[str, str] = {}
    check = _nodes_schedulable(info, problems)
    deadline = time.monotonic() + timeout
    while not check():
        for name in ("kwok", "kube-controller-manager", "kube-scheduler"):
            if not is_alive(pids[name], name):
                raise StackError(f"{name} exited during start-up; {_log_tail(_log_path(info.state_dir, name))}")
        if time.monotonic() > deadline:
            culprit = "kube-controller-manager" if all("tainted" in p for p in problems.values()) else "kwok"
            details = "; ".join(f"{node}: {problem}" for node, problem in sorted(problems.items()))
            raise StackError(
                f"{culprit}: nodes not schedulable after {timeout:.0f} s ({details}); "
                f"{_log_tail(_log_path(info.state_dir, culprit))}"
            )
        time.sleep(0.1)


def _etcd_healthy(url: str) -> Callable[[], bool]:
    def check() -> bool:
        response = httpx.get(f"{url}/health", timeout=2.0)
        return response.status_code == 200 and response.json().get("health") == "true"

    return check


def down(state_dir: Path) -> list[str]:
    """Stop every recorded process (SIGTERM, then SIGKILL); return the names that were running."""
    info = load(state_dir)
    if info is None:
        return []
    stopped = []
    for name in _STOP_ORDER:
        pid = info.pids.get(name)
        if pid is not None and is_alive(pid, name):
            _stop(pid, name)
            stopped.append(name)
    return stopped
