"""Shared pytest fixtures: one real devstack per session, a fresh namespace per test, a Prometheus helper.

Integration tests run against a real kube-apiserver, etcd and Prometheus (never mocks). The
stack starts once per session in a temporary state folder and is stopped at the end, also
when tests fail. Missing binaries fail the session with the command that builds them.
"""

from __future__ import annotations

import atexit
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_api_client import PrometheusConnect

from coalmine_dev.devstack import stack as devstack


class Prom:
    """A small PromQL helper over prometheus_api_client for assertions on real scraped data."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api = PrometheusConnect(url=url, disable_ssl=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant vector query; each item has `metric` (labels) and `value` ([ts, "str"])."""
        result: list[dict[str, Any]] = self.api.custom_query(query=promql)
        return result

    def scalar(self, promql: str) -> float | None:
        """The value of the first series (or of a scalar result), None when the result is empty."""
        result = self.query(promql)
        if not result:
            return None
        value = result[1] if isinstance(result[0], (int, float)) else result[0]["value"][1]
        return float(value)

    def wait_for(
        self, promql: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll `promql` until `predicate(result)` holds; return that result or fail with the last one."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"after {timeout:.0f} s, {promql!r} still gives {result!r}")
            time.sleep(0.5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.StackInfo]:
    """A running devstack for the whole session: etcd, kube-apiserver, Prometheus, CRDs installed, Istio's
    validating webhook, kube-controller-manager, kube-scheduler and kwok with one fake node."""
    state_dir = tmp_path_factory.mktemp("devstack")
    # Stop the stack even if pytest is interrupted before fixture teardown: atexit runs on
    # Ctrl-C and, with this handler, on SIGTERM (e.g. from `timeout`), which would skip it.
    atexit.register(devstack.down, state_dir)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        info = devstack.up(state_dir)
    except devstack.StackError as error:
        failure = str(error)
    else:
        failure = ""
    if failure:
        devstack.down(state_dir)
        pytest.fail(f"the devstack did not start (integration tests need it):\n{failure}", pytrace=False)
    try:
        yield info
    finally:
        devstack.down(state_dir)


@pytest.fixture(scope="session")
def stack_info(stack: devstack.StackInfo) -> devstack.StackInfo:
    return stack


@pytest.fixture(scope="session")
def kubeconfig(stack: devstack.StackInfo) -> Iterator[Path]:
    """The stack's admin kubeconfig, also exported as $KUBECONFIG for kopf and subprocesses."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(stack.kubeconfig)
    yield stack.kubeconfig
    if previous is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        yield api


@pytest.fixture
def make_namespace(api_client: client.ApiClient) -> Iterator[Callable[[], str]]:
    """Create fresh namespaces; all are deleted afterwards, without waiting: kube-controller-manager's
    namespace controller then removes their contents and the namespace itself in the background."""
    core = client.CoreV1Api(api_client)
    created: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: Callable[[], str]) -> str:
    """A fresh namespace per test."""
    return make_namespace()


@pytest.fixture(scope="session")
def prom(stack: devstack.StackInfo) -> Prom:
    return Prom(stack.prometheus_url)


ARGOCD_HEALTH_LUA = Path(__file__).resolve().parents[1] / "deploy" / "argocd" / "health.lua"


@pytest.fixture(scope="session")
def argocd_health() -> Callable[[dict[str, Any]], dict[str, str]]:
    """Run deploy/argocd/health.lua as Argo CD does (the object as global `obj`); return {status, message}."""
    lupa = pytest.importorskip("lupa", reason="lupa (a dev dependency) runs the Argo CD health Lua")
    script = ARGOCD_HEALTH_LUA.read_text()

    def health(obj: dict[str, Any]) -> dict[str, str]:
        lua = lupa.LuaRuntime(unpack_returned_tuples=True)
        lua.globals().obj = lua.table_from(obj, recursive=True)
        result = lua.execute(script)
        return {key: str(result[key]) for key in ("status", "message") if result[key] is not None}

    return health
