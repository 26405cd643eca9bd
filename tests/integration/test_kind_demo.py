"""tests/e2e/kind_demo.py, the scenario driver of `make e2e-kind`, run here on the local stack: the real
API server and Prometheus, the operator as a process, and meshsim in place of Istio's pods and
telemetry (which need the kind cluster this CI cannot make). The sample app's objects
(tests/e2e/manifests/order.yaml) are applied too: the API server accepts them, and the driver changes
v3's Deployment as it would in the cluster (no pod runs here, so meshsim makes v3 fail instead, from
its first step). The driver must report both scenarios and the untouched objects as the demo does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_support import REPO
from kubernetes import client, utils
from rollout_support import OperatorProcess

pytestmark = pytest.mark.integration


def test_the_kind_scenarios_pass_with_the_demo_checks(
    api_client: client.ApiClient,
    kubeconfig: Path,
    namespace: str,
    meshsim: Any,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    docs = list(yaml.safe_load_all((REPO / "tests" / "e2e" / "manifests" / "order.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    utils.create_from_yaml(api_client, yaml_objects=docs, namespace=namespace)
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment(  # as an earlier, interrupted run leaves it: the driver must reset it
        "order-v3",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "order", "env": [{"name": "ERROR_RATIO", "value": "0.4"}]}]}
                }
            }
        },
    )
    meshsim.client.set_service(namespace, "order", rps=150.0)
    meshsim.client.set_destination(namespace, "order", "v3", error_ratio=0.5)
    operator = operator_factory(namespace)
    output = tmp_path / "demo"
    argv = [sys.executable, str(REPO / "tests" / "e2e" / "kind_demo.py"), "--kubeconfig", str(kubeconfig)]
    argv += ["--namespace", namespace, "--hold", "5s", "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\noperator:\n{operator.tail()}"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["ok"] is True
    first, second = summary["scenario 1 (v1 -> v2)"], summary["scenario 2 (v2 -> v3)"]
    assert first["phase"] == "Succeeded"
    assert [w for w in first["weights"] if w] == [10, 30, 50, 100]
    assert second["phase"] == "RolledBack"
    assert second["weights"][-1] == 0
    assert second["rollback"]["reason"] in ("FailFast", "FailureLimit")
    assert {u["name"] for u in summary["untouched"] if u["equal"]} == {u["name"] for u in summary["untouched"]}
    assert len(summary["untouched"]) >= 5
    (container,) = apps.read_namespaced_deployment("order-v3", namespace).spec.template.spec.containers
    assert {e.name: e.value for e in container.env}["ERROR_RATIO"] == "0", "v3 set healthy at the start"
    assert "scenario 2: RolledBack at 0 %" in done.stdout
