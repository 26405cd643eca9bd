"""Prove the devstack is the real thing: schema validation, conflicts, RBAC, versions, lifecycle."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import kopf
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack

if TYPE_CHECKING:
    from tests.conftest import Prom

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1")


def virtual_service(name: str, weight: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": ["app"],
            "http": [{"route": [{"destination": {"host": "app", "subset": "stable"}, "weight": weight}]}],
        },
    }


def test_istio_schema_rejects_wrong_weight_type(api_client: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", virtual_service("bad", "ten"))
    assert caught.value.status == 422
    assert "spec.http[0].route[0].weight" in caught.value.body
    # ...while the same object with an integer weight is accepted.
    created = custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", virtual_service("good", 100))
    assert created["spec"]["http"][0]["route"][0]["weight"] == 100


def test_custom_resource_round_trip_and_stale_update_conflict(api_client: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "app"},
        "spec": {"host": "app", "subsets": [{"name": "stable", "labels": {"version": "v1"}}]},
    }
    custom.create_namespaced_custom_object(*ISTIO, namespace, "destinationrules", rule)
    stored = custom.get_namespaced_custom_object(*ISTIO, namespace, "destinationrules", "app")
    assert stored["spec"] == rule["spec"]
    old_version = stored["metadata"]["resourceVersion"]

    stored["spec"]["subsets"].append({"name": "canary", "labels": {"version": "v2"}})
    updated = custom.replace_namespaced_custom_object(*ISTIO, namespace, "destinationrules", "app", stored)
    assert updated["metadata"]["resourceVersion"] != old_version
    assert [s["name"] for s in updated["spec"]["subsets"]] == ["stable", "canary"]

    stale = {**updated, "metadata": {**updated["metadata"], "resourceVersion": old_version}}
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(*ISTIO, namespace, "destinationrules", "app", stale)
    assert caught.value.status == 409


def test_rbac_denies_user_without_roles(
    stack_info: devstack.StackInfo, api_client: client.ApiClient, namespace: str
) -> None:
    nobody_config = client.Configuration()
    nobody_config.host = stack_info.apiserver_url
    nobody_config.ssl_ca_cert = str(stack_info.ca_file)
    nobody_config.api_key = {"authorization": f"Bearer {stack_info.nobody_token}"}
    with client.ApiClient(nobody_config) as nobody:
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(nobody).list_namespaced_secret(namespace)
        assert caught.value.status == 403
        assert 'User "nobody" cannot list resource "secrets"' in json.loads(caught.value.body)["message"]
        with pytest.raises(ApiException) as caught:
            client.CustomObjectsApi(nobody).list_namespaced_custom_object(*ISTIO, namespace, "virtualservices")
        assert caught.value.status == 403

    assert client.CoreV1Api(api_client).list_namespaced_secret(namespace).items == []
    listed = client.CustomObjectsApi(api_client).list_namespaced_custom_object(*ISTIO, namespace, "virtualservices")
    assert listed["items"] == []


def our_crd_names() -> set[str]:
    names = set()
    for path in devstack.default_crds_dir().glob("*.yaml"):
        names |= {doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text()) if doc}
    return names


def test_kubectl_lists_our_istio_and_gateway_api_crds(stack_info: devstack.StackInfo) -> None:
    out = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(stack_info.kubeconfig), "get", "crd", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    listed = {line.removeprefix("customresourcedefinition.apiextensions.k8s.io/") for line in out}
    assert set(devstack.ISTIO_CRDS) | set(devstack.GATEWAY_CRDS) | our_crd_names() <= listed


def test_versions_are_stamped(stack_info: devstack.StackInfo, api_client: client.ApiClient) -> None:
    assert client.VersionApi(api_client).get_code().git_version == binaries.K8S_VERSION
    out = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(stack_info.kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    versions = json.loads(out)
    assert versions["clientVersion"]["gitVersion"] == binaries.K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == binaries.K8S_VERSION


def coalmine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coalmine", "devstack", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


ALL = {"etcd", "kube-apiserver", "prometheus", "istio-validation", "kube-controller-manager", "kube-scheduler", "kwok"}


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    """A second stack in its own state folder, so the session stack is not disturbed."""
    state = ["--state-dir", str(tmp_path)]
    try:
        first = coalmine("up", *state, "--nodes", "2")
        assert first.returncode == 0, first.stderr
        info = devstack.load(tmp_path)
        assert info is not None
        assert f"export KUBECONFIG={info.kubeconfig}" in first.stdout
        assert f"export PROMETHEUS_URL={info.prometheus_url}" in first.stdout
        assert set(info.pids) == ALL
        assert info.nodes == ["kwok-node-0", "kwok-node-1"]

        second = coalmine("up", *state)
        assert second.returncode == 0
        assert "already running" in second.stderr
        assert devstack.load(tmp_path) == info  # nothing new was started

        status = coalmine("status", *state)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" running ") == len(ALL)
        assert "kwok-node-0, kwok-node-1" in status.stdout

        # Prometheus can be stopped and brought back on the same port (operator tests need this).
        devstack.stop_prometheus(tmp_path)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{info.prometheus_url}/-/ready")
        restarted = devstack.start_prometheus(tmp_path)
        assert restarted.prometheus_url == info.prometheus_url
        assert httpx.get(f"{info.prometheus_url}/-/ready").status_code == 200
        pids = devstack.load(tmp_path).pids  # type: ignore[union-attr]

        # Istio's webhook fails closed: with it gone, no VirtualService can be written unvalidated.
        devstack.stop_process(tmp_path, "istio-validation")
        with client.ApiClient(devstack_client_config(info)) as api, pytest.raises(ApiException) as caught:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                *ISTIO, "default", "virtualservices", virtual_service("unchecked", 100)
            )
        assert caught.value.status == 500
        assert 'failed calling webhook "validation.istio.io"' in json.loads(caught.value.body)["message"]
    finally:
        down = coalmine("down", *state)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not devstack.is_alive(pid, name), f"{name} (pid {pid}) still running after down"
    assert coalmine("status", *state).returncode == 1


def devstack_client_config(info: devstack.StackInfo) -> client.Configuration:
    config = client.Configuration()
    config.host = info.apiserver_url
    config.ssl_ca_cert = str(info.ca_file)
    config.api_key = {"authorization": f"Bearer {info.admin_token}"}
    return config


def test_no_workloads_starts_the_bare_api_server_with_istio_validation(tmp_path: Path) -> None:
    started = time.monotonic()
    try:
        up = coalmine("up", "--state-dir", str(tmp_path), "--no-workloads")
        assert up.returncode == 0, up.stderr
        info = devstack.load(tmp_path)
        assert info is not None
        assert set(info.pids) == {"etcd", "kube-apiserver", "prometheus", "istio-validation"}
        assert (info.workloads, info.istio_validation, info.nodes) == (False, True, [])
        with client.ApiClient(devstack_client_config(info)) as api:
            assert client.CoreV1Api(api).list_node().items == []
    finally:
        down = coalmine("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert time.monotonic() - started < 120


def test_scrape_targets_are_picked_up(stack_info: devstack.StackInfo, prom: Prom) -> None:
    """file_sd: a target added at run time is scraped with its name as `job` label, and removed again."""
    address = stack_info.prometheus_url.removeprefix("http://")
    devstack.add_scrape_target(stack_info.state_dir, "self-again", address)
    try:
        prom.wait_for('up{job="self-again"}', lambda result: bool(result) and result[0]["value"][1] == "1")
    finally:
        devstack.remove_scrape_target(stack_info.state_dir, "self-again")
    # Once dropped from the target files, Prometheus stops scraping it within a few seconds.
    deadline = time.monotonic() + 15
    while any(t["labels"].get("job") == "self-again" for t in active_targets(stack_info)):
        assert time.monotonic() < deadline, "removed scrape target still active"
        time.sleep(0.5)


def active_targets(info: devstack.StackInfo) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = httpx.get(f"{info.prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
    return targets


def test_failed_start_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API server that dies at start-up: `up` says why (its log) and leaves etcd/Prometheus stopped."""
    fake = tmp_path / "kube-apiserver"
    fake.write_text("#!/bin/sh\necho 'bind: address already in use' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TEST_ASSET_KUBE_APISERVER", str(fake))
    state_dir = tmp_path / "state"
    with pytest.raises(devstack.StackError, match=r"(?s)kube-apiserver exited during start-up.*already in use"):
        devstack.up(state_dir)
    info = devstack.load(state_dir)
    assert info is not None
    assert set(info.pids) == {"etcd", "kube-apiserver", "prometheus", "istio-validation"}
    assert devstack.status(state_dir) == dict.fromkeys(info.pids, False)


def test_a_workload_component_that_fails_is_named_and_everything_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kwok dies at start-up: `up` names it with its log, and stops the API server and the rest it started."""
    fake = tmp_path / "kwok"
    fake.write_text("#!/bin/sh\necho 'kwok: no stages found' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TEST_ASSET_KWOK", str(fake))
    state_dir = tmp_path / "state"
    with pytest.raises(devstack.StackError, match=r"(?s)^kwok exited during start-up.*no stages found"):
        devstack.up(state_dir)
    info = devstack.load(state_dir)
    assert info is not None
    assert set(info.pids) == ALL
    assert devstack.status(state_dir) == dict.fromkeys(info.pids, False)


def test_kopf_reads_the_kubeconfig(kubeconfig: Path, stack_info: devstack.StackInfo) -> None:
    """kopf (which the operator runs on) finds the stack through $KUBECONFIG, with TLS verification."""
    login = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert login is not None
    assert login.server == stack_info.apiserver_url
    assert login.ca_path == str(stack_info.ca_file)
    assert login.token == stack_info.admin_token
    tls = ssl.create_default_context(cafile=login.ca_path)
    headers = {"Authorization": f"Bearer {login.token}"}
    assert httpx.get(f"{login.server}/readyz", verify=tls, headers=headers).text == "ok"


def test_service_account_tokens_can_be_minted_and_used(
    stack_info: devstack.StackInfo, api_client: client.ApiClient, namespace: str
) -> None:
    """TokenRequest works (SA signing key and issuer are configured), so tests can act as the operator's SA."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata={"name": "robot"}))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    token = core.create_namespaced_service_account_token("robot", namespace, request).status.token
    tls = ssl.create_default_context(cafile=str(stack_info.ca_file))
    review = httpx.post(
        f"{stack_info.apiserver_url}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers={"Authorization": f"Bearer {token}"},
        verify=tls,
    )
    assert review.status_code == 201, review.text
    assert review.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"
