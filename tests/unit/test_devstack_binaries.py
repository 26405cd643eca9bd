"""Binary lookup follows the build script's precedence and names the fix when something is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalmine_dev.devstack import binaries

ENV_VARS = ("COALMINE_CACHE", "KUBEBUILDER_ASSETS", "TEST_ASSET_KUBE_APISERVER", "TEST_ASSET_ETCD")
ENV_VARS += ("TEST_ASSET_KUBECTL", "PROMETHEUS_BIN", "XDG_CACHE_HOME")
ENV_VARS += ("TEST_ASSET_KUBE_CONTROLLER_MANAGER", "TEST_ASSET_KUBE_SCHEDULER", "TEST_ASSET_KWOK")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("COALMINE_CACHE", str(cache))
    return cache


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_cache_path_is_version_keyed(clean_env: Path) -> None:
    cached = executable(clean_env / "k8s" / binaries.K8S_VERSION / "kube-apiserver")
    assert binaries.kube_apiserver() == cached
    etcd = executable(clean_env / "etcd" / binaries.ETCD_VERSION / "etcd")
    assert binaries.etcd() == etcd


def test_test_asset_beats_kubebuilder_assets_beats_cache(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(clean_env / "k8s" / binaries.K8S_VERSION / "kubectl")
    assets = executable(tmp_path / "assets" / "kubectl")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets.parent))
    assert binaries.kubectl() == assets
    explicit = executable(tmp_path / "mine" / "kubectl")
    monkeypatch.setenv("TEST_ASSET_KUBECTL", str(explicit))
    assert binaries.kubectl() == explicit


def test_kubebuilder_assets_without_the_binary_falls_back_to_cache(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = executable(clean_env / "etcd" / binaries.ETCD_VERSION / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "empty"))
    assert binaries.etcd() == cached


def test_missing_binary_names_path_and_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ASSET_ETCD", str(tmp_path / "nope"))
    with pytest.raises(binaries.MissingBinaryError, match=r"TEST_ASSET_ETCD.*make binaries"):
        binaries.etcd()


def test_prometheus_from_env_or_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prom = executable(tmp_path / "bin" / "prometheus")
    monkeypatch.setenv("PATH", str(prom.parent))
    assert binaries.prometheus() == prom
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(binaries.MissingBinaryError, match=r"install-prometheus\.sh.*apt-get install prometheus"):
        binaries.prometheus()
    monkeypatch.setenv("PROMETHEUS_BIN", str(prom))
    assert binaries.prometheus() == prom


def test_find_all_reports_every_missing_piece(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(binaries.MissingBinaryError) as caught:
        binaries.find_all()
    message = str(caught.value)
    for name in ("kube-apiserver", "etcd", "kubectl", "prometheus", "Istio CRD file", "Gateway API CRD file"):
        assert name in message


def test_workload_binaries_are_version_keyed_and_overridable(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kcm = executable(clean_env / "k8s" / binaries.K8S_VERSION / "kube-controller-manager")
    scheduler = executable(clean_env / "k8s" / binaries.K8S_VERSION / "kube-scheduler")
    kwok = executable(clean_env / "kwok" / binaries.KWOK_VERSION / "kwok")
    stages = clean_env / "kwok" / binaries.KWOK_VERSION / "stages.yaml"
    stages.write_text("kind: Stage\n")
    assert binaries.find_workloads() == binaries.WorkloadBinaries(kcm, scheduler, kwok, stages)
    mine = executable(tmp_path / "mine" / "kwok")
    monkeypatch.setenv("TEST_ASSET_KWOK", str(mine))
    assert binaries.kwok() == mine


def test_find_workloads_reports_every_missing_piece() -> None:
    with pytest.raises(binaries.MissingBinaryError) as caught:
        binaries.find_workloads()
    message = str(caught.value)
    for name in ("kube-controller-manager", "kube-scheduler", "kwok not found", "kwok's stage file", "make binaries"):
        assert name in message


def test_istio_validation_is_keyed_by_istio_version_and_source(clean_env: Path) -> None:
    with pytest.raises(binaries.MissingBinaryError, match=r"istio-validation not found.*source changed.*make binaries"):
        binaries.istio_validation()
    folder = f"{binaries.ISTIO_VERSION}-{binaries.istio_validation_source_hash()}"
    built = executable(clean_env / "istio-validation" / folder / "istio-validation")
    assert binaries.istio_validation() == built
