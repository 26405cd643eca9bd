"""etcd and kube-apiserver can be restarted in place (what bench/chaos.py does to them): same ports, same
data, same certificate, so every client keeps its kubeconfig and a watch resumes where it was."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from rollout_support import private_stack
from urllib3.exceptions import HTTPError

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[devstack.StackInfo]:
    """A stack of its own: this test kills its etcd and API server, which the session's tests share."""
    with private_stack(tmp_path) as info:
        yield info


def _configmap(core: client.CoreV1Api, name: str) -> dict[str, str]:
    data: dict[str, str] = core.read_namespaced_config_map(name, "default").data
    return data


def _retrying(fn: Callable[[], T], timeout: float = 30.0) -> T:
    """The API server answers 5xx for a moment after etcd comes back: retry until it does not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (ApiException, HTTPError) as error:
            if isinstance(error, ApiException) and error.status < 500:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_etcd_and_the_api_server_restart_with_their_data_ports_and_certificate(
    own_stack: devstack.StackInfo,
) -> None:
    info = own_stack
    api = config.new_client_from_config(config_file=str(info.kubeconfig))
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata={"name": "before"}, data={"a": "1"}))
    seen: list[str] = []
    listed = core.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    known = {c.metadata.name: c.metadata.resource_version for c in listed.items}

    def relist() -> None:  # 410 Gone: the API server's watch cache no longer has `rv` (after etcd's restart)
        nonlocal rv
        fresh = core.list_namespaced_config_map("default")
        for c in fresh.items:  # only what changed since the last list or event, as an informer's store tells
            if known.get(c.metadata.name) != c.metadata.resource_version:
                known[c.metadata.name] = c.metadata.resource_version
                seen.append(c.metadata.name)
        rv = fresh.metadata.resource_version

    def follow() -> None:  # a watch that resumes from the last resourceVersion it saw, as an informer does
        nonlocal rv
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "after-apiserver" not in seen:
            try:
                for event in watch.Watch().stream(
                    core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
                ):
                    rv = event["object"].metadata.resource_version
                    known[event["object"].metadata.name] = rv
                    seen.append(event["object"].metadata.name)
            except client.ApiException as exc:
                if exc.status == 410:  # seen in a 4-worker make test: resumed from rv for 90 s and saw nothing
                    with contextlib.suppress(Exception):
                        relist()
                time.sleep(0.2)
            except Exception:  # the API server is down: try again
                time.sleep(0.2)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    pids = dict(info.pids)

    # etcd killed as by a crash, down 2 s, back with its data: nothing lost, the API server serves again.
    restarted = devstack.restart_process(info.state_dir, "etcd", kill=True, down_for=2.0)
    assert restarted.pids["etcd"] != pids["etcd"]
    assert restarted.etcd_url == info.etcd_url
    assert _retrying(lambda: _configmap(core, "before")) == {"a": "1"}
    _retrying(
        lambda: core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata={"name": "after-etcd"}, data={"b": "2"})
        )
    )

    # The API server killed and started again: same URL, same CA (the kubeconfig is unchanged), same data.
    ca_before = info.ca_file.read_bytes()
    restarted = devstack.restart_process(info.state_dir, "kube-apiserver", kill=True)
    assert restarted.pids["kube-apiserver"] != pids["kube-apiserver"]
    assert restarted.apiserver_url == info.apiserver_url
    assert info.ca_file.read_bytes() == ca_before
    fresh = client.CoreV1Api(config.new_client_from_config(config_file=str(info.kubeconfig)))
    assert _retrying(lambda: _configmap(fresh, "after-etcd")) == {"b": "2"}
    _retrying(
        lambda: fresh.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata={"name": "after-apiserver"}, data={"c": "3"})
        )
    )
    watcher.join(timeout=60)
    assert seen.count("after-etcd") == 1, seen
    assert seen.count("after-apiserver") == 1, seen
    assert "before" not in seen, "the watch started after it: resuming must not replay it"
    # The rest of the stack (controllers, kwok, Istio's webhook, Prometheus) is still the same processes.
    alive = devstack.status(info.state_dir)
    assert alive is not None
    assert all(alive.values()), alive
    for name in ("kube-controller-manager", "kube-scheduler", "kwok", "istio-validation", "prometheus"):
        assert restarted.pids[name] == pids[name]

    with pytest.raises(devstack.StackError, match="only etcd, kube-apiserver, prometheus"):
        devstack.restart_process(info.state_dir, "kwok")
