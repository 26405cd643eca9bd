"""The devstack's cluster parts without processes: nodes, kwok and controller flags, the webhook's TLS and
registration, and the build script's cache keys agreeing with the lookup."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from coalmine_dev.devstack import binaries, stack

ROOT = Path(__file__).resolve().parents[2]


def info(tmp_path: Path) -> stack.StackInfo:
    ports = {"kube-controller-manager": 1, "kube-scheduler": 2, "kwok": 3, "istio-validation": 4}
    return stack.StackInfo(
        state_dir=tmp_path,
        kubeconfig=tmp_path / "kubeconfig",
        apiserver_url="https://127.0.0.1:9",
        ca_file=tmp_path / "ca",
        admin_token="a",
        nobody_token="n",
        prometheus_url="http://127.0.0.1:8",
        etcd_url="http://127.0.0.1:7",
        scrape_interval="1s",
        pids={},
        ports=ports,
        workloads=True,
        istio_validation=True,
        nodes=["kwok-node-0"],
    )


def test_node_is_managed_by_kwok_and_untainted() -> None:
    node = stack.render_node("kwok-node-0")
    key, value = stack.KWOK_NODE_ANNOTATION
    assert node["metadata"]["annotations"][key] == value
    assert "taints" not in node.get("spec", {})
    assert node["status"]["allocatable"]["pods"] == "110"


def test_kwok_manages_exactly_the_annotated_nodes_with_its_stages(tmp_path: Path) -> None:
    argv = stack.kwok_argv(Path("/bin/kwok"), Path("/c/stages.yaml"), info(tmp_path))
    key, value = stack.KWOK_NODE_ANNOTATION
    assert "--config=/c/stages.yaml" in argv
    assert f"--manage-nodes-with-annotation-selector={key}={value}" in argv
    assert "--manage-all-nodes=false" in argv
    assert "--server-address=127.0.0.1:3" in argv


def test_kcm_runs_node_lifecycle_and_the_workload_controllers(tmp_path: Path) -> None:
    argv = stack.kcm_argv(Path("/bin/kcm"), info(tmp_path))
    (controllers,) = [a.split("=", 1)[1].split(",") for a in argv if a.startswith("--controllers=")]
    for needed in (
        "node-lifecycle-controller",  # lifts the not-ready taint of new nodes
        "deployment-controller",
        "replicaset-controller",
        "endpointslice-controller",
        "namespace-controller",
        "garbage-collector-controller",
    ):
        assert needed in controllers
    assert "--bind-address=127.0.0.1" in argv
    assert "--leader-elect=false" in argv
    assert "--secure-port=1" in argv


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        pytest.param({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, None, id="ready"),
        pytest.param({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, "not Ready", id="not-ready"),
        pytest.param({}, "not Ready", id="no-status"),
        pytest.param(
            {
                "spec": {"taints": [{"key": stack.NOT_READY_TAINT, "effect": "NoSchedule"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            },
            "node-lifecycle",
            id="ready-but-still-tainted",
        ),
    ],
)
def test_node_problem(node: dict[str, object], problem: str | None) -> None:
    found = stack.node_problem(node)  # type: ignore[arg-type]
    assert found is None if problem is None else (found is not None and problem in found)


def test_webhook_certificate_is_signed_by_the_bundle_for_the_loopback_ip(tmp_path: Path) -> None:
    ca_pem = stack.write_webhook_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert leaf.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_webhook_registration_fails_closed_for_virtual_services_and_destination_rules() -> None:
    doc = stack.render_webhook_configuration("https://127.0.0.1:4/validate", b"PEM")
    (hook,) = doc["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"  # so dry-run writes are validated too
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"PEM"
    (rule,) = hook["rules"]
    assert rule["apiGroups"] == ["networking.istio.io"]
    assert set(rule["resources"]) == {"virtualservices", "destinationrules"}
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}


def _required_version(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (\S+)", go_mod.read_text(), re.MULTILINE)
    assert match, f"{module} not required in {go_mod}"
    return match.group(1)


def test_versions_agree_with_the_wrapper_modules() -> None:
    tools = ROOT / "tools"
    assert _required_version(tools / "k8s-bin/kubernetes/go.mod", "k8s.io/kubernetes") == binaries.K8S_VERSION
    assert _required_version(tools / "k8s-bin/kwok/go.mod", "sigs.k8s.io/kwok") == binaries.KWOK_VERSION
    assert _required_version(tools / "istio-validation/go.mod", "istio.io/istio") == binaries.ISTIO_VERSION
    assert _required_version(tools / "istio-validation/go.mod", "istio.io/api") == binaries.ISTIO_API_VERSION
    script = (tools / "build-control-plane.sh").read_text()
    for name in ("K8S_VERSION", "ETCD_VERSION", "ISTIO_API_VERSION", "KWOK_VERSION", "ISTIO_VERSION"):
        assert re.search(rf"^{name}=(\$\{{{name}:-)?{re.escape(getattr(binaries, name))}\}}?$", script, re.MULTILINE), (
            name
        )


def test_istio_validation_cache_key_is_the_build_scripts(tmp_path: Path) -> None:
    source = binaries.TOOLS_DIR / "istio-validation"
    # The same pipeline as tools/build-control-plane.sh.
    done = subprocess.run(
        ["bash", "-c", "find . -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    assert binaries.istio_validation_source_hash() == done.stdout.strip()
    copy = tmp_path / "src"
    copy.mkdir()
    for path in source.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert binaries.istio_validation_source_hash(copy) == done.stdout.strip()
    (copy / "main.go").write_text((copy / "main.go").read_text() + "\n// edited\n")
    assert binaries.istio_validation_source_hash(copy) != done.stdout.strip()
