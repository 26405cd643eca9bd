"""deploy/ rendered by the real `kubectl kustomize`: least-privilege rules exactly as documented, the
Deployment's hardening and settings, and a Dockerfile whose paths exist, whose base is a build argument
defaulting to python:3.11 slim, and whose entrypoint is the command the tests run.
(tests/integration/test_deploy.py applies the same base to an API server; test_image.py builds and runs the image.)"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine import run as coalmine_run
from coalmine_dev.devstack import binaries

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    try:
        kubectl = binaries.kubectl()
    except Exception as exc:  # the binary is built by `make binaries`
        pytest.skip(f"kubectl not built yet, cannot render deploy/ ({exc})")
    out = subprocess.run([str(kubectl), "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=True)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def rules(doc: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, ",".join(rule.get("resourceNames", [])))
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_cluster_role_is_exactly_what_the_operator_uses(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert rules(rendered["ClusterRole", "coalmine"]) == {
        ("coalmine.dev", "rollouts", "get", ""),
        ("coalmine.dev", "rollouts", "list", ""),
        ("coalmine.dev", "rollouts", "watch", ""),
        ("coalmine.dev", "rollouts/status", "get", ""),
        ("coalmine.dev", "rollouts/status", "patch", ""),
        ("gateway.networking.k8s.io", "httproutes", "get", ""),
        ("gateway.networking.k8s.io", "httproutes", "list", ""),
        ("gateway.networking.k8s.io", "httproutes", "watch", ""),
        ("gateway.networking.k8s.io", "httproutes", "patch", ""),
        ("", "namespaces", "get", ""),
        ("", "services", "get", ""),
        ("networking.istio.io", "virtualservices", "get", ""),
        ("networking.istio.io", "virtualservices", "list", ""),
        ("networking.istio.io", "virtualservices", "watch", ""),
        ("networking.istio.io", "virtualservices", "patch", ""),
        ("networking.istio.io", "destinationrules", "get", ""),
        ("networking.istio.io", "destinationrules", "list", ""),
        ("networking.istio.io", "destinationrules", "watch", ""),
        # readiness (spec.readiness): read only
        ("", "services", "list", ""),
        ("", "services", "watch", ""),
        ("", "pods", "list", ""),
        ("", "pods", "watch", ""),
        ("discovery.k8s.io", "endpointslices", "get", ""),
        ("discovery.k8s.io", "endpointslices", "list", ""),
        ("discovery.k8s.io", "endpointslices", "watch", ""),
        ("", "events", "create", ""),
    }
    role = rendered["Role", "coalmine-leader-election"]
    assert role["metadata"]["namespace"] == "coalmine-system"
    assert rules(role) == {
        ("coordination.k8s.io", "leases", "create", ""),
        ("coordination.k8s.io", "leases", "get", "coalmine"),
        ("coordination.k8s.io", "leases", "update", "coalmine"),
    }
    assert not any(kind == "ClusterRole" and name != "coalmine" for kind, name in rendered)


def test_deployment_is_hardened_and_elects_a_leader(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = rendered["Deployment", "coalmine"]
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["serviceAccountName"] == "coalmine"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["args"] == ["run"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COALMINE_LEADER_ELECTION"] == "1"
    assert {"POD_NAME", "POD_NAMESPACE"} <= env.keys()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": int(env["COALMINE_HEALTH_PORT"]), "metrics": int(env["COALMINE_METRICS_PORT"])}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    # every COALMINE_* variable is one `coalmine run` reads: set each, and its flag takes the value
    for name, value in env.items():
        if name.startswith("COALMINE_") and isinstance(value, str):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(name, value)
                parser = argparse.ArgumentParser()
                coalmine_run.add_arguments(parser)
                parsed = vars(parser.parse_args([]))
            expected: object = value
            if name == "COALMINE_LEADER_ELECTION":
                expected = True
            elif name == "COALMINE_NAMESPACES":
                expected = value.split(",")
            elif value.isdigit():
                expected = int(value)
            assert expected in parsed.values(), f"{name}={value} reaches no flag: {parsed}"


def test_service_selects_the_pods(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    service = rendered["Service", "coalmine-metrics"]
    labels = rendered["Deployment", "coalmine"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_dockerfile_copies_paths_that_exist_and_runs_coalmine_run() -> None:
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint + cmd == ["coalmine", "run"]
    assert re.search(r"^USER 10001", text, re.M)
    # Both stages build FROM the BASE_IMAGE argument, whose default is the official slim image (users'
    # `docker build .`); tools/build-image.sh passes a local Debian base where no registry is reachable.
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"], froms
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", default), default
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ")  # an ARG before the first FROM is one FROM can use
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'coalmine = "coalmine.cli:main"' in pyproject  # `coalmine` is the console script tests run as `-m coalmine`


def test_constraints_pin_every_runtime_dependency() -> None:
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    assert block is not None
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', block.group(1)):
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert pins.get(key) == version, f"{name}: pyproject {version}, constraints.txt {pins.get(key)}"
