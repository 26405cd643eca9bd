"""The demo's two scenarios on a real cluster with Istio (tests/e2e/kind.sh runs this after installing
everything), with the local demo's checks (coalmine_dev.demo.scenario):

1. v1 -> v2, healthy: examples/30-rollout.yaml with the demo's timings must end Succeeded.
2. v2 -> v3 (a new generation): once v3 has 30 % of the traffic, its Deployment is told to fail
   (ERROR_RATIO 0.4, LATENCY_MS 800: the local demo's 40 % 5xx and p50 800 ms); the Rollout must end
   RolledBack with the canary at 0 %.
3. Nothing else moved: the A/B route, the owned route's retries and timeout, the rest of the
   VirtualService and the whole DestinationRule compare equal before and after.

The traffic is real (the load generator through Istio's sidecars) and so are the metrics (Istio's
telemetry scraped by Istio's Prometheus addon). Exit status 0 only when all three hold; a summary goes
to stdout and to <output>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine.core.models import parse_duration
from coalmine_dev.demo import scenario

ISTIO = ("networking.istio.io", "v1")
COALMINE = ("coalmine.dev", "v1alpha1")
REPO = Path(__file__).resolve().parents[2]
FAILING = {"ERROR_RATIO": "0.4", "LATENCY_MS": "800"}
FINAL = ("Succeeded", "RolledBack", "Invalid")


def say(text: str) -> None:
    print(f"[kind-demo] {text}", flush=True)


class Cluster:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace

    def get(self, group_version: tuple[str, str], plural: str, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(*group_version, self.namespace, plural, name)
        return cast(dict[str, Any], found)

    def apply(self, group_version: tuple[str, str], plural: str, body: dict[str, Any]) -> None:
        """Create, or replace what an earlier run left (the examples as written, every time)."""
        name = body["metadata"]["name"]
        try:
            current = self.get(group_version, plural, name)
        except ApiException as error:
            if error.status != 404:
                raise
            self.custom.create_namespaced_custom_object(*group_version, self.namespace, plural, body)
            return
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        self.custom.replace_namespaced_custom_object(*group_version, self.namespace, plural, name, body)

    def delete_rollout(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(*COALMINE, self.namespace, "rollouts", name)
        except ApiException as error:
            if error.status != 404:
                raise

    def set_env(self, deployment: str, env: dict[str, str]) -> None:
        """Change the container's env: Kubernetes rolls the Deployment's pod."""
        pod = self.apps.read_namespaced_deployment(deployment, self.namespace).spec.template.spec
        assert pod is not None
        (container,) = pod.containers
        values = {e.name: e for e in container.env or []}
        for name, value in env.items():
            values[name] = client.V1EnvVar(name=name, value=value)
        patch = {
            "spec": {"template": {"spec": {"containers": [{"name": container.name, "env": list(values.values())}]}}}
        }
        self.apps.patch_namespaced_deployment(deployment, self.namespace, patch)


def follow(
    cluster: Cluster, generation: int, timeout: float, on_status: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], list[int]]:
    """Poll the Rollout until this generation ends; return it and the canary weights seen (changes only)."""
    deadline = time.monotonic() + timeout
    weights: list[int] = []
    last = ""
    while True:
        rollout = cluster.get(COALMINE, "rollouts", "order")
        status = rollout.get("status") or {}
        if status.get("observedGeneration") == generation:
            weights = scenario.changes([*weights, int(status.get("canaryWeight", 0))])
            line = f"{status.get('phase')} step {status.get('stepIndex')} at {status.get('canaryWeight')} %"
            if line != last:
                say(f"  {line}: {status.get('message', '')}")
                last = line
            if on_status is not None:
                on_status(status)
            if status.get("phase") in FINAL:
                return rollout, weights
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout:.0f} s the Rollout is still {status.get('phase')}: {status}")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="shop")
    parser.add_argument(
        "--hold", default="1m", help="each step's hold; at least 4 scrape intervals (Istio's addon: 15s)"
    )
    parser.add_argument("--output", type=Path, default=REPO / ".state" / "e2e-kind" / "demo")
    parser.add_argument("--examples", type=Path, default=REPO / "examples")
    args = parser.parse_args(argv)
    hold: timedelta = parse_duration(args.hold)
    step_timeout = 20 * hold.total_seconds() + 300

    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    cluster = Cluster(api, args.namespace)
    examples = scenario.load_examples(args.examples, args.namespace)
    routes = scenario.owned_routes(examples.rollout)

    cluster.delete_rollout("order")
    cluster.set_env("order-v3", {"ERROR_RATIO": "0", "LATENCY_MS": "20"})  # healthy again after an earlier run
    say(f"applying {args.examples}/ to namespace {args.namespace}: DestinationRule and VirtualService order")
    cluster.apply(ISTIO, "destinationrules", examples.destination_rule)
    cluster.apply(ISTIO, "virtualservices", examples.virtual_service)
    vs_before = cluster.get(ISTIO, "virtualservices", "order")
    dr_before = cluster.get(ISTIO, "destinationrules", "order")

    body = scenario.demo_rollout(examples.rollout, hold)
    say(f"scenario 1: v1 -> v2 (healthy), steps {[s['weight'] for s in body['spec']['steps']]}, each held {args.hold}")
    cluster.custom.create_namespaced_custom_object(*COALMINE, args.namespace, "rollouts", body)
    first, first_weights = follow(cluster, 1, step_timeout)

    generation = int(first["metadata"]["generation"]) + 1
    say("scenario 2: v2 -> v3; v3 starts failing (40 % 5xx, ~800 ms) once it has 30 %")
    broken: list[float] = []

    def break_v3(status: dict[str, Any]) -> None:
        if not broken and int(status.get("canaryWeight", 0)) >= 30 and status.get("phase") == "Progressing":
            cluster.set_env("order-v3", FAILING)
            broken.append(time.time())
            say(f"  order-v3 now fails: {FAILING}")

    cluster.custom.patch_namespaced_custom_object(
        *COALMINE,
        args.namespace,
        "rollouts",
        "order",
        {"spec": {"stable": {"host": "order", "subset": "v2"}, "canary": {"host": "order", "subset": "v3"}}},
    )
    second, second_weights = follow(cluster, generation, step_timeout, on_status=break_v3)

    vs_after = cluster.get(ISTIO, "virtualservices", "order")
    dr_after = cluster.get(ISTIO, "destinationrules", "order")
    untouched = scenario.check_untouched(vs_before, vs_after, dr_before, dr_after, routes)
    for check in untouched:
        say(f"untouched: {check.name}: {'equal' if check.equal else 'CHANGED'} {check.detail}")

    s1, s2 = first.get("status") or {}, second.get("status") or {}
    ok1 = s1.get("phase") == "Succeeded"
    ok2 = s2.get("phase") == "RolledBack" and s2.get("canaryWeight") == 0
    ok3 = all(u.equal for u in untouched)
    summary = {
        "scenario 1 (v1 -> v2)": {"phase": s1.get("phase"), "weights": first_weights, "ok": ok1},
        "scenario 2 (v2 -> v3)": {
            "phase": s2.get("phase"),
            "weights": second_weights,
            "rollback": s2.get("rollback"),
            "ok": ok2,
        },
        "untouched": [u.__dict__ for u in untouched],
        "ok": ok1 and ok2 and ok3,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"scenario 1: {s1.get('phase')}, canary weights {first_weights}: {'ok' if ok1 else 'FAILED'}")
    say(
        f"scenario 2: {s2.get('phase')} at {s2.get('canaryWeight')} %, weights {second_weights}: {'ok' if ok2 else 'FAILED'}"
    )
    say(f"nothing else changed: {'yes' if ok3 else 'NO'}; summary in {args.output / 'summary.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
