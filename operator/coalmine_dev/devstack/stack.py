"""Start, stop and describe the local stack: etcd, kube-apiserver and Prometheus on 127.0.0.1.

Tests and the demo need a real API server (CRD schema validation, RBAC, resourceVersion
conflicts) and a real Prometheus, and this machine has no Docker. So the processes run
detached under a state folder, their pids and ports are recorded in `stack.json`, and any
later command (`down`, `status`, a test fixture) works from that record.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict

from coalmine_dev.devstack import binaries

ISTIO_CRDS = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io")
STATE_FILE = "stack.json"
# Everything `up` creates inside the state folder; only these are removed on a fresh start.
_GENERATED = (
    "etcd",
    "pki",
    "prometheus",
    "targets",
    "logs",
    "tokens.csv",
    "sa.key",
    "kubeconfig",
    STATE_FILE,
)
# Stop order: readers of etcd first.
_STOP_ORDER = ("prometheus", "kube-apiserver", "etcd")
START_TIMEOUT = 90.0  # seconds; kube-apiserver on 2 busy cores can be slow
STOP_GRACE = 10.0

# Popen objects of processes this Python process started, so they are reaped (no zombies, no
# "still running" warnings) when `down` runs in the same process, e.g. in a pytest session.
_children: dict[int, subprocess.Popen[bytes]] = {}


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
    if (child := _children.get(pid)) is not None and child.poll() is not None:
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
    """SIGTERM the process group of `pid`, SIGKILL after `grace` seconds, return once it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
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


def _wait_ready(state_dir: Path, name: str, pid: int, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not is_alive(pid, name):
            raise StackError(f"{name} exited during start-up; {_log_tail(_log_path(state_dir, name))}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{name} not ready after {timeout:.0f} s; {_log_tail(_log_path(state_dir, name))}")
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


def start_prometheus(state_dir: Path, timeout: float = START_TIMEOUT) -> StackInfo:
    """(Re)start Prometheus with the recorded port, config and data; wait until it is ready."""
    info = _require(state_dir)
    if is_alive(info.pids.get("prometheus", -1), "prometheus"):
        return info
    pid = _spawn(state_dir, "prometheus", _prometheus_argv(info))
    info = info.model_copy(update={"pids": {**info.pids, "prometheus": pid}})
    _save(info)
    _wait_ready(state_dir, "prometheus", pid, _http_ok(f"{info.prometheus_url}/-/ready"), timeout)
    return info


def stop_prometheus(state_dir: Path) -> StackInfo:
    """Stop only Prometheus (e.g. to test the operator's behaviour when metrics are unavailable)."""
    info = _require(state_dir)
    if (pid := info.pids.get("prometheus")) is not None:
        _stop(pid, "prometheus")
    info = info.model_copy(update={"pids": {k: v for k, v in info.pids.items() if k != "prometheus"}})
    _save(info)
    return info


def _require(state_dir: Path) -> StackInfo:
    info = load(state_dir)
    if info is None:
        raise StackError(f"no devstack in {state_dir}; start one with `coalmine devstack up`")
    return info


# --- CRDs -----------------------------------------------------------------------------------


def _crd_documents(crds_dir: Path, istio_file: Path) -> list[dict[str, Any]]:
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
    istio = [d for d in yaml.safe_load_all(istio_file.read_text()) if d and d["metadata"]["name"] in ISTIO_CRDS]
    if len(istio) != len(ISTIO_CRDS):
        raise StackError(f"{istio_file} lacks one of {ISTIO_CRDS}")
    return docs + istio


def _apply_crds(info: StackInfo, docs: list[dict[str, Any]], timeout: float) -> None:
    """Server-side apply each CRD (idempotent), then wait until every one is Established."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    headers = {"Authorization": f"Bearer {info.admin_token}"}
    tls = ssl.create_default_context(cafile=str(info.ca_file))
    with httpx.Client(base_url=info.apiserver_url, verify=tls, headers=headers) as http:
        for doc in docs:
            response = http.patch(
                f"{base}/{doc['metadata']['name']}",
                params={"fieldManager": "coalmine-devstack", "force": "true"},
                content=json.dumps(doc),
                headers={"Content-Type": "application/apply-patch+yaml"},
            )
            if response.status_code >= 400:
                reason = response.json().get("message", response.text)
                raise StackError(f"the API server rejected CRD {doc['metadata']['name']}: {reason}")
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


# --- up / down ------------------------------------------------------------------------------


def up(
    state_dir: Path,
    *,
    scrape_interval: str = "1s",
    crds_dir: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> StackInfo:
    """Start etcd, kube-apiserver and Prometheus under `state_dir`, install CRDs, wait until ready.

    Raises AlreadyRunningError if a stack already runs there, and StackError (after stopping
    whatever it started) if anything is missing or fails to start.
    """
    state_dir = state_dir.resolve()
    if (existing := load(state_dir)) is not None and is_running(state_dir):
        raise AlreadyRunningError(existing)
    try:
        found = binaries.find_all()
    except binaries.MissingBinaryError as error:
        raise StackError(f"cannot start the devstack:\n{error}") from error
    crd_docs = _crd_documents(crds_dir or default_crds_dir(), found.istio_crds)

    state_dir.mkdir(parents=True, exist_ok=True)
    for name in _GENERATED:
        path = state_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for sub in ("etcd", "pki", "prometheus", "targets", "logs"):
        (state_dir / sub).mkdir(mode=0o700)

    etcd_port, peer_port, api_port, prom_port = free_ports(4)
    admin_token, nobody_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    (state_dir / "tokens.csv").write_text(render_tokens_csv(admin_token, nobody_token))
    _write_sa_key(state_dir / "sa.key")
    prom_config = render_prometheus_config(state_dir, prom_port, scrape_interval)
    (state_dir / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(prom_config, sort_keys=False))
    apiserver_url = f"https://127.0.0.1:{api_port}"
    # kube-apiserver self-signs <cert-dir>/apiserver.crt (leaf followed by its CA) for 127.0.0.1.
    ca_file = state_dir / "pki" / "apiserver.crt"
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(render_kubeconfig(apiserver_url, ca_file, admin_token), sort_keys=False))
    kubeconfig.chmod(0o600)

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    info = StackInfo(
        state_dir=state_dir,
        kubeconfig=kubeconfig,
        apiserver_url=apiserver_url,
        ca_file=ca_file,
        admin_token=admin_token,
        nobody_token=nobody_token,
        prometheus_url=f"http://127.0.0.1:{prom_port}",
        etcd_url=etcd_url,
        scrape_interval=scrape_interval,
        pids={},
        ports={
            "etcd": etcd_port,
            "etcd-peer": peer_port,
            "kube-apiserver": api_port,
            "prometheus": prom_port,
        },
    )
    pids: dict[str, int] = {}
    try:
        pids["etcd"] = _spawn(
            state_dir,
            "etcd",
            [
                str(found.etcd),
                "--name=default",
                f"--data-dir={state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        pids["kube-apiserver"] = _spawn(
            state_dir,
            "kube-apiserver",
            [
                str(found.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={state_dir / 'pki'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={apiserver_url}",
                f"--service-account-key-file={state_dir / 'sa.key'}",
                f"--service-account-signing-key-file={state_dir / 'sa.key'}",
                f"--token-auth-file={state_dir / 'tokens.csv'}",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        info = info.model_copy(update={"pids": dict(pids)})
        _save(info)  # recorded before waiting, so `down` can clean up even if we die here
        pids["prometheus"] = _spawn(state_dir, "prometheus", _prometheus_argv(info))
        info = info.model_copy(update={"pids": dict(pids)})
        _save(info)

        _wait_ready(state_dir, "etcd", pids["etcd"], _etcd_healthy(etcd_url), timeout)
        _wait_ready(
            state_dir,
            "kube-apiserver",
            pids["kube-apiserver"],
            _http_ok(f"{apiserver_url}/readyz", admin_token),
            timeout,
        )
        _apply_crds(info, crd_docs, timeout)
        _wait_ready(state_dir, "prometheus", pids["prometheus"], _http_ok(f"{info.prometheus_url}/-/ready"), timeout)
    except BaseException:
        for name in _STOP_ORDER:
            if name in pids:
                _stop(pids[name], name)
        raise
    return info


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
