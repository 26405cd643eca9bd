"""charts/coalmine with the real helm (tools/build-helm.sh builds it from its Go module and caches it):
`helm lint`, and `helm template` compared object by object with `kubectl kustomize deploy/`, so the
chart and deploy/ stay one set of objects; every `coalmine run` setting has a value that reaches its
flag. (tests/integration/test_helm.py installs the chart on the local stack.)"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine import run as coalmine_run
from coalmine_dev.devstack import binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "coalmine"
NAMESPACE = "coalmine-system"
# Helm's own bookkeeping labels: on the chart's objects (and its selectors) only.
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}

Objects = dict[tuple[str, str], dict[str, Any]]


def helm_binary() -> Path:
    """tools/build-helm.sh prints the cached helm's path (and builds it first on a fresh machine)."""
    done = subprocess.run([str(REPO / "tools" / "build-helm.sh")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def kubectl() -> Path:
    try:
        return binaries.kubectl()
    except binaries.MissingBinaryError as exc:  # built by `make binaries`
        pytest.skip(f"kubectl not built yet, cannot render deploy/ ({exc})")


def by_name(docs: Iterator[Any]) -> Objects:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


@pytest.fixture(scope="module")
def template(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Objects]:
    """`template(values, release=..., namespace=...)`: `helm template` with those values, as objects."""
    home = tmp_path_factory.mktemp("helm-home")

    def render(
        values: Mapping[str, Any] | None = None, release: str = "coalmine", namespace: str = NAMESPACE
    ) -> Objects:
        values_file = home / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values or {})))
        argv = [str(helm), "template", release, str(CHART), "--namespace", namespace, "--include-crds"]
        done = subprocess.run(
            [*argv, "--values", str(values_file)], capture_output=True, text=True, check=False, env=helm_env(home)
        )
        if done.returncode != 0:
            raise RenderError(done.stderr)
        return by_name(yaml.safe_load_all(done.stdout))

    return render


class RenderError(Exception):
    pass


def helm_env(home: Path) -> dict[str, str]:
    """helm keeps its config, cache and data under these; keep them out of the user's home."""
    return os.environ | {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CONFIG", "CACHE", "DATA")}


def kustomize(kubectl: Path, path: Path) -> Objects:
    out = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True, check=True)
    return by_name(yaml.safe_load_all(out.stdout))


def without_helm_labels(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_helm_labels(v) for k, v in value.items() if k not in HELM_LABELS}
    if isinstance(value, list):
        return [without_helm_labels(v) for v in value]
    return value


def kustomize_common_labels() -> set[str]:
    kustomization = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())
    return {key for entry in kustomization["labels"] for key in entry["pairs"]}


def env_of(objects: Objects, name: str = "coalmine") -> dict[str, str]:
    (container,) = objects["Deployment", name]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_helm_lint(helm: Path, tmp_path: Path) -> None:
    for extra in (
        [],
        ["--set", "metrics.serviceMonitor.enabled=true"],
        ["--set", "replicas=1,leaderElection.enabled=false"],
    ):
        done = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), *extra],
            capture_output=True,
            text=True,
            check=False,
            env=helm_env(tmp_path),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


def test_the_defaults_render_exactly_what_deploy_renders(template: Callable[..., Objects], kubectl: Path) -> None:
    """Same kinds, names, namespaces and contents, Helm's bookkeeping labels aside. The Namespace is
    deploy/'s alone (helm install --create-namespace), and kustomize's common labels on the CRD too
    (the chart's crds/ is plain YAML that Helm does not template)."""
    chart = {key: without_helm_labels(obj) for key, obj in template().items()}
    deploy = kustomize(kubectl, REPO / "deploy")
    assert deploy.pop(("Namespace", NAMESPACE))["kind"] == "Namespace"
    crd_key = ("CustomResourceDefinition", "rollouts.coalmine.dev")
    crd_labels = deploy[crd_key]["metadata"].pop("labels")
    assert set(crd_labels) == kustomize_common_labels()
    assert sorted(chart) == sorted(deploy)
    for key, obj in deploy.items():
        assert chart[key] == obj, f"{key}: helm template and kubectl kustomize deploy/ differ"


def test_the_chart_ships_the_crd_file_byte_for_byte() -> None:
    ours = (CHART / "crds" / "rollout.yaml").read_bytes()
    assert ours == (REPO / "crds" / "rollout.yaml").read_bytes(), (
        "charts/coalmine/crds/rollout.yaml is a copy of crds/rollout.yaml: cp crds/rollout.yaml charts/coalmine/crds/"
    )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["rollout.yaml"]


def test_the_service_monitor_is_the_kustomize_component(
    template: Callable[..., Objects], kubectl: Path, tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(REPO / "deploy", overlay)  # kustomize takes directories outside the root, by relative path
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/servicemonitor"]})
    )
    key = ("ServiceMonitor", "coalmine")
    expected = kustomize(kubectl, overlay)[key]
    assert key not in template()
    assert without_helm_labels(template({"metrics": {"serviceMonitor": {"enabled": True}}})[key]) == expected
    labelled = template({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})[key]
    assert labelled["metadata"]["labels"]["release"] == "kps"


def env_names_coalmine_run_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every COALMINE_* variable `coalmine run` looks up while it declares its flags (recorded, not listed)."""
    seen: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            seen.add(key)
            return super().get(key, default)

    monkeypatch.setattr(os, "environ", Recording())
    coalmine_run.add_arguments(argparse.ArgumentParser())
    monkeypatch.undo()
    return {name for name in seen if name.startswith("COALMINE_")}


EVERY_SETTING: dict[str, Any] = {
    "leaderElection": {
        "enabled": True,
        "leaseName": "lease-x",
        "leaseNamespace": "lease-ns",
        "leaseDuration": "21s",
        "renewDeadline": "13s",
        "retryPeriod": "3s",
        "shards": 4,
    },
    "prometheus": {"url": "http://prom.example:9091", "scrapeInterval": "7s", "concurrency": 5},
    "watchNamespaces": ["shop", "pay"],
    "checkGranularity": "250ms",
    "tickConcurrency": 300,
    "resync": "90s",
    "logFormat": "text",
    "verbose": True,
    "listenAddress": "0.0.0.0",
    "health": {"port": 8181},
    "metrics": {"port": 9191},
    "webhooks": {"allow": "*.svc,10.0.0.0/8", "concurrency": 4},
    "notifications": {"secretName": "coalmine-notifications", "key": "n.json"},
}
# What each variable above becomes in `coalmine run`'s parsed arguments.
EXPECTED_ARGS = {
    "leader_election": True,
    "lease_name": "lease-x",
    "lease_namespace": "lease-ns",
    "lease_duration": "21s",
    "renew_deadline": "13s",
    "retry_period": "3s",
    "shards": 4,
    "prometheus_url": "http://prom.example:9091",
    "scrape_interval": "7s",
    "prometheus_concurrency": 5,
    "namespace": ["shop", "pay"],
    "check_granularity": "250ms",
    "tick_concurrency": 300,
    "resync": "90s",
    "log_format": "text",
    "verbose": True,
    "listen_address": "0.0.0.0",
    "health_port": 8181,
    "metrics_port": 9191,
    "webhook_allow": "*.svc,10.0.0.0/8",
    "webhook_concurrency": 4,
    "notifications_config": "/etc/coalmine/notifications/n.json",
}


def test_every_coalmine_run_setting_is_a_value_that_reaches_its_flag(
    template: Callable[..., Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(template(EVERY_SETTING))
    settings = {name: value for name, value in env.items() if name.startswith("COALMINE_")}
    assert set(settings) == env_names_coalmine_run_reads(monkeypatch), "a COALMINE_ variable without a chart value"
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("COALMINE_")]:
            patch.delenv(name)
        for name, value in settings.items():
            patch.setenv(name, value)
        parser = argparse.ArgumentParser()
        coalmine_run.add_arguments(parser)
        parsed = vars(parser.parse_args([]))
    assert {key: parsed[key] for key in EXPECTED_ARGS} == EXPECTED_ARGS
    assert set(parsed) == set(EXPECTED_ARGS), "a flag this test does not set"
    # and the settings that rename things follow through the objects
    objects = template(EVERY_SETTING)
    role = objects["Role", "coalmine-leader-election"]
    assert role["metadata"]["namespace"] == "lease-ns"
    assert role["rules"][1]["resourceNames"] == ["lease-x"]
    (container,) = objects["Deployment", "coalmine"]["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8181, "metrics": 9191}
    assert objects["Service", "coalmine-metrics"]["spec"]["ports"][0]["port"] == 9191
    pod = objects["Deployment", "coalmine"]["spec"]["template"]["metadata"]
    assert pod["annotations"]["prometheus.io/port"] == "9191"
    # the notifications Secret is mounted read-only where COALMINE_NOTIFICATIONS_CONFIG points
    volumes = objects["Deployment", "coalmine"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "notifications", "secret": {"secretName": "coalmine-notifications"}} in volumes
    mount = next(m for m in container["volumeMounts"] if m["name"] == "notifications")
    assert mount == {"name": "notifications", "mountPath": "/etc/coalmine/notifications", "readOnly": True}


def test_one_replica_without_leader_election(template: Callable[..., Objects]) -> None:
    objects = template({"replicas": 1, "leaderElection": {"enabled": False}})
    assert objects["Deployment", "coalmine"]["spec"]["replicas"] == 1
    env = env_of(objects)
    assert env["COALMINE_LEADER_ELECTION"] == "0"
    assert not [name for name in env if name.startswith("COALMINE_LEASE") or name.endswith("_DEADLINE")]
    assert not [key for key in objects if key[0] in ("Role", "RoleBinding")]
    with pytest.raises(RenderError, match=r"replicas > 1 needs leaderElection\.enabled"):
        template({"replicas": 2, "leaderElection": {"enabled": False}})


def test_ports_set_to_zero_turn_off_the_probes_and_the_metrics_objects(template: Callable[..., Objects]) -> None:
    objects = template({"health": {"port": 0}, "metrics": {"port": 0, "serviceMonitor": {"enabled": True}}})
    deployment = objects["Deployment", "coalmine"]["spec"]["template"]
    (container,) = deployment["spec"]["containers"]
    for absent in ("ports", "livenessProbe", "readinessProbe"):
        assert absent not in container
    assert "annotations" not in deployment["metadata"]
    env = env_of(objects)
    assert (env["COALMINE_HEALTH_PORT"], env["COALMINE_METRICS_PORT"]) == ("0", "0")
    assert not [key for key in objects if key[0] in ("Service", "ServiceMonitor")]


def test_another_release_name_and_namespace(template: Callable[..., Objects]) -> None:
    """Names follow the release, and every reference between the objects follows the names."""
    objects = template(
        {
            "image": {"repository": "registry.example/coalmine", "tag": "0.1.1"},
            "extraEnv": [{"name": "A", "value": "b"}],
        },
        release="cm",
        namespace="ops",
    )
    assert {name for _, name in objects} == {
        "rollouts.coalmine.dev",
        "cm-coalmine",
        "cm-coalmine-leader-election",
        "cm-coalmine-metrics",
    }
    for (kind, name), obj in objects.items():
        if kind not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert obj["metadata"]["namespace"] == "ops", (kind, name)
    deployment = objects["Deployment", "cm-coalmine"]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "cm-coalmine"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert objects["Service", "cm-coalmine-metrics"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    for binding in (
        objects["ClusterRoleBinding", "cm-coalmine"],
        objects["RoleBinding", "cm-coalmine-leader-election"],
    ):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cm-coalmine", "namespace": "ops"}]
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in objects
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/coalmine:0.1.1"
    assert container["env"][-1] == {"name": "A", "value": "b"}
    digest = "sha256:" + "0" * 64
    pinned = template({"image": {"digest": digest}})["Deployment", "coalmine"]["spec"]["template"]["spec"]
    assert pinned["containers"][0]["image"] == f"coalmine@{digest}"


def test_values_yaml_parses_and_names_each_variable() -> None:
    """Each COALMINE_ variable the Deployment can set is named in a comment of values.yaml."""
    text = (CHART / "values.yaml").read_text()
    for dest in EXPECTED_ARGS:
        variable = "COALMINE_" + ("NAMESPACES" if dest == "namespace" else dest.upper())
        assert variable in text, f"values.yaml does not say which value sets {variable}"
