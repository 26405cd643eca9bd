"""The devstack's pure parts: rendered config files, scrape targets, state records, failed starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from kubernetes import config

from coalmine_dev.devstack import stack


def test_prometheus_config_scrapes_itself_and_file_targets(tmp_path: Path) -> None:
    rendered = stack.render_prometheus_config(tmp_path, 9999, "2s")
    assert rendered["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    (file_sd,) = jobs["devstack-targets"]["file_sd_configs"]
    assert file_sd == {"files": [str(tmp_path / "targets" / "*.json")], "refresh_interval": "1s"}
    assert yaml.safe_load(yaml.safe_dump(rendered)) == rendered


def test_scrape_targets_are_files_with_a_job_label(tmp_path: Path) -> None:
    stack.add_scrape_target(tmp_path, "meshsim", "127.0.0.1:1234")
    target_file = tmp_path / "targets" / "meshsim.json"
    assert json.loads(target_file.read_text()) == [{"targets": ["127.0.0.1:1234"], "labels": {"job": "meshsim"}}]
    assert [p.name for p in (tmp_path / "targets").iterdir()] == ["meshsim.json"]  # no temp file left
    stack.remove_scrape_target(tmp_path, "meshsim")
    stack.remove_scrape_target(tmp_path, "meshsim")  # idempotent
    assert not target_file.exists()


def test_tokens_file_has_admin_in_system_masters_and_nobody_without_groups() -> None:
    lines = stack.render_tokens_csv("A", "N").splitlines()
    assert lines == ['A,admin,admin-uid,"system:masters"', "N,nobody,nobody-uid"]


def test_kubeconfig_is_read_by_the_kubernetes_client(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked when loading")
    path.write_text(yaml.safe_dump(stack.render_kubeconfig("https://127.0.0.1:6443", ca, "tok")))
    loaded = config.kube_config.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=loaded)
    assert loaded.host == "https://127.0.0.1:6443"
    assert loaded.auth_settings()["BearerToken"]["value"] == "Bearer tok"
    assert loaded.ssl_ca_cert == str(ca)


def test_free_ports_are_distinct() -> None:
    ports = stack.free_ports(5)
    assert len(set(ports)) == 5
    assert all(0 < port < 65536 for port in ports)


def test_state_round_trips_and_dead_pids_are_not_running(tmp_path: Path) -> None:
    info = stack.StackInfo(
        state_dir=tmp_path,
        kubeconfig=tmp_path / "kubeconfig",
        apiserver_url="https://127.0.0.1:1",
        ca_file=tmp_path / "pki" / "apiserver.crt",
        admin_token="a",
        nobody_token="n",
        prometheus_url="http://127.0.0.1:2",
        etcd_url="http://127.0.0.1:3",
        scrape_interval="1s",
        pids={"etcd": 2**22 + 1},  # above the default pid_max: never a live process
        ports={"etcd": 3},
    )
    (tmp_path / stack.STATE_FILE).write_text(info.model_dump_json())
    assert stack.load(tmp_path) == info
    assert stack.status(tmp_path) == {"etcd": False}
    assert not stack.is_running(tmp_path)
    assert stack.down(tmp_path) == []


def test_up_without_binaries_fails_clearly_and_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KUBEBUILDER_ASSETS", "TEST_ASSET_KUBE_APISERVER", "TEST_ASSET_ETCD", "PROMETHEUS_BIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COALMINE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(stack.StackError, match=r"(?s)kube-apiserver not found.*make binaries.*prometheus"):
        stack.up(tmp_path / "state")
    assert stack.load(tmp_path / "state") is None


def test_is_alive_checks_the_command_name() -> None:
    assert not stack.is_alive(os.getpid(), "kube-apiserver")  # alive, but not what we started
    assert not stack.is_alive(2**22 + 1, "etcd")
