"""`make e2e-kind` (tests/e2e/kind.sh) needs Docker, which this project's CI does not have, so it never runs
here. What can be checked here is: its --dry-run prints every command, in order, and runs none; the
files it names exist and agree with each other (images, namespace, labels, the chart's values); and the
sample app it deploys (tests/e2e/app/app.py) answers as its env vars say, and its load generator counts
what it gets. (tests/integration/test_kind_demo.py runs the scenario driver on the local stack.)
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "e2e" / "kind.sh"

# The commands that matter, in the order they must run (a regex over each printed command line).
ORDER = [
    r"tools/build-helm\.sh$",
    r"kind create cluster --name coalmine-e2e --kubeconfig \S+ --wait 5m$",
    r"istioctl install -y --set profile=minimal$",
    r"kubectl -n istio-system rollout status deployment/istiod",
    r"kubectl apply -f \S+/samples/addons/prometheus\.yaml$",
    r"kubectl -n istio-system rollout status deployment/prometheus",
    r"docker build -t coalmine-e2e/order:dev \S+/tests/e2e/app$",
    r"docker build -t coalmine:e2e \S+$",
    r"kind load docker-image --name coalmine-e2e coalmine-e2e/order:dev coalmine:e2e$",
    r"kubectl apply -f \S+/examples/00-namespace\.yaml$",
    r"kubectl label namespace shop istio-injection=enabled --overwrite$",
    r"kubectl apply -f \S+/tests/e2e/manifests/order\.yaml$",
    r"kubectl -n shop rollout status deployment/loadgen",
    r"helm install coalmine \S+/charts/coalmine --namespace coalmine-system --create-namespace "
    r"--set image\.repository=coalmine --set image\.tag=e2e --set image\.pullPolicy=Never --wait",
    r"python \S+/tests/e2e/kind_demo\.py --kubeconfig \S+ --hold 1m --output \S+$",
    r"kind delete cluster --name coalmine-e2e$",
]


def dry_run(tmp_path: Path, *args: str) -> list[str]:
    cache = tmp_path / "cache"
    env = {**os.environ, "COALMINE_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not cache.exists(), "a dry run made the cache folder: it ran a command"
    lines = done.stdout.splitlines()
    assert lines
    assert all(line.startswith("+ ") for line in lines), [line for line in lines if not line.startswith("+ ")]
    return [line[2:] for line in lines]


def test_the_dry_run_prints_every_step_in_order_and_runs_none(tmp_path: Path) -> None:
    commands = dry_run(tmp_path)
    positions = []
    for pattern in ORDER:
        found = [i for i, command in enumerate(commands) if re.search(pattern, command)]
        assert found, f"no command matches {pattern!r}:\n" + "\n".join(commands)
        positions.append(found[0])
    assert positions == sorted(positions), "the steps run out of order"
    # Each order Deployment is waited for before coalmine is installed.
    helm_at = positions[ORDER.index(next(p for p in ORDER if p.startswith("helm install")))]
    for deployment in ("order-v1", "order-v2", "order-v3", "loadgen"):
        waits = [
            i for i, c in enumerate(commands) if c.endswith(f"rollout status deployment/{deployment} --timeout 5m")
        ]
        assert waits
        assert waits[0] < helm_at
    # Without kind, istioctl and the Istio release in the cache, the dry run shows how it would get them.
    assert any(re.search(r"go install sigs\.k8s\.io/kind@v\d+\.\d+\.\d+$", c) for c in commands)
    assert any("istio.io/downloadIstio" in c for c in commands)


def test_keep_leaves_the_cluster(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, "--keep")
    assert not [c for c in commands if "kind delete cluster" in c]
    assert any("kind create cluster" in c for c in commands)


def test_every_file_the_script_names_exists(tmp_path: Path) -> None:
    for command in dry_run(tmp_path):
        for word in shlex.split(command):
            if word.startswith(str(REPO)) and "/.state/" not in word:
                assert Path(word).exists(), f"{command}: {word} does not exist"


def test_the_app_manifests_fit_the_examples_and_the_images_the_script_builds(tmp_path: Path) -> None:
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((REPO / "tests/e2e/manifests/order.yaml").read_text())
    }
    examples = {
        d["kind"]: d for p in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    }
    namespace = examples["Namespace"]["metadata"]["name"]
    subsets = {s["name"]: s["labels"] for s in examples["DestinationRule"]["spec"]["subsets"]}
    built = {m.group(1) for c in dry_run(tmp_path) if (m := re.search(r"docker build -t (\S+)", c))}
    assert all(d["metadata"]["namespace"] == namespace for d in docs.values())
    service = docs["Service", "order"]
    assert service["spec"]["ports"][0]["name"] == "http"  # Istio's protocol selection by port name
    for version, labels in subsets.items():
        deployment = docs["Deployment", f"order-{version}"]
        pod = deployment["spec"]["template"]
        assert labels.items() <= pod["metadata"]["labels"].items(), f"subset {version} selects no pod"
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert container["image"] in built
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["VERSION"] == version
        assert env["ERROR_RATIO"] == "0", "every version starts healthy; kind_demo.py breaks v3 at 30 %"
        assert {"LATENCY_MS"} <= env.keys()
    (loadgen,) = docs["Deployment", "loadgen"]["spec"]["template"]["spec"]["containers"]
    assert loadgen["image"] in built
    assert loadgen["args"][:3] == ["load", "--url", "http://order:8080/"]
    assert "coalmine:e2e" in built  # the operator image the helm install line names (image.tag=e2e)


@pytest.fixture(scope="module")
def app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_app", REPO / "tests" / "e2e" / "app" / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def serve(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """serve(env) -> base URL of the app's server on a free loopback port, stopped afterwards."""
    servers = []

    def start(env: dict[str, str]) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        httpd = app.server(0, "127.0.0.1")
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_app_answers_as_its_env_says(serve: Any) -> None:
    healthy = serve({"VERSION": "v2", "ERROR_RATIO": "0", "LATENCY_MS": "60"})
    start = time.monotonic()
    with urllib.request.urlopen(healthy, timeout=5) as response:
        assert response.read() == b"order v2\n"
    assert time.monotonic() - start >= 0.045  # LATENCY_MS 60, less its 20 % jitter
    failing = serve({"VERSION": "v3", "ERROR_RATIO": "1", "LATENCY_MS": "1"})
    assert {status_of(failing) for _ in range(5)} == {500}
    assert status_of(failing + "healthz") == 200


def test_the_load_generator_counts_what_it_gets(app: Any, serve: Any) -> None:
    url = serve({"VERSION": "v1", "ERROR_RATIO": "0.5", "LATENCY_MS": "1"})
    counts = app.load(url, rps=50, beta_fraction=0.1, duration=2.0)
    assert 40 <= sum(counts.values()) <= 110, counts  # about 100 in 2 s; generous on a busy machine
    assert set(counts) == {"200", "500"}, counts
