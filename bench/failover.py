"""Measure leader failover: SIGKILL the operator holding the Lease mid-rollout, time the takeover.

Starts a devstack (or uses a running one: --state-dir), two `coalmine run --leader-election` processes
on one namespace, and a Rollout whose analysis checks every second (no traffic: each check has no data
and is written to status, so the Rollout's resourceVersion moves once a second while someone leads).
Each run SIGKILLs the current leader and reports, from the kill:
  lease  - the survivor has written itself into the Lease
  write  - the first Rollout status write after the kill (made by the survivor)
then starts a fresh second operator. Usage:
  .venv/bin/python bench/failover.py --runs 5 [--lease-duration 15s --renew-deadline 10s --retry-period 2s]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import kube_env, operator_argv
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import Child

ISTIO = ("networking.istio.io", "v1", "")


def objects(ns: str) -> list[tuple[tuple[str, str], str, dict[str, Any]]]:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "order"},
        "spec": {
            "host": "order",
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
        },
    }
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "order"},
        "spec": {
            "hosts": ["order"],
            "http": [{"name": "primary", "route": [{"destination": {"host": "order", "subset": "v1"}, "weight": 100}]}],
        },
    }
    rollout = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order"},
        "spec": {
            "virtualService": {"name": "order", "routes": ["primary"]},
            "stable": {"host": "order", "subset": "v1"},
            "canary": {"host": "order", "subset": "v2"},
            # No traffic: checks have no data, hold the first step, and roll back only after an hour.
            "analysis": {"interval": "10s", "checkEvery": "1s", "maxNoData": "1h"},
        },
    }
    return [
        (("networking.istio.io", "v1"), "destinationrules", dr),
        (("networking.istio.io", "v1"), "virtualservices", vs),
        (("coalmine.dev", "v1alpha1"), "rollouts", rollout),
    ]


def start_operator(ns: str, info: devstack.StackInfo, args: argparse.Namespace, log: Path) -> Child:
    argv = operator_argv(info, [ns], "--leader-election", "--lease-namespace", ns)
    argv += ["--lease-duration", args.lease_duration, "--renew-deadline", args.renew_deadline]
    argv += ["--retry-period", args.retry_period]
    return Child(f"operator-{log.stem}", argv, log, env=kube_env(info)).start()


def holder(leases: client.CoordinationV1Api, ns: str) -> str | None:
    try:
        spec = leases.read_namespaced_lease("coalmine", ns).spec
    except ApiException:
        return None
    return (spec.holder_identity or None) if spec else None


def measure(info: devstack.StackInfo, args: argparse.Namespace, workdir: Path) -> list[tuple[float, float]]:
    api = config.new_client_from_config(config_file=str(info.kubeconfig))
    core, custom, leases = client.CoreV1Api(api), client.CustomObjectsApi(api), client.CoordinationV1Api(api)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for (group, version), plural, body in objects(ns):
        custom.create_namespaced_custom_object(group, version, ns, plural, body)
    procs = [start_operator(ns, info, args, workdir / f"op-{i}.log") for i in range(2)]
    results: list[tuple[float, float]] = []
    try:
        for run in range(args.runs):
            deadline = time.monotonic() + 120
            while (who := holder(leases, ns)) is None or not who.rsplit("-", 1)[1].isdigit():
                assert time.monotonic() < deadline, "nobody leads"
                time.sleep(0.05)
            leader = next(p for p in procs if str(p.pid) == who.rsplit("-", 1)[1])
            time.sleep(2.0)  # let the leader renew a few times
            rv = custom.get_namespaced_custom_object("coalmine.dev", "v1alpha1", ns, "rollouts", "order")["metadata"][
                "resourceVersion"
            ]
            killed = time.monotonic()
            leader.kill()
            lease_at = write_at = None
            while lease_at is None or write_at is None:
                now = time.monotonic()
                assert now - killed < 120, "no takeover within 120 s"
                current = holder(leases, ns)
                if lease_at is None and current is not None and current != who:
                    lease_at = now - killed
                obj = custom.get_namespaced_custom_object("coalmine.dev", "v1alpha1", ns, "rollouts", "order")
                if write_at is None and obj["metadata"]["resourceVersion"] != rv and current != who:
                    write_at = now - killed
                time.sleep(0.02)
            results.append((lease_at, write_at))
            print(
                f"run {run + 1}: Lease taken {lease_at:.2f} s after SIGKILL, first status write {write_at:.2f} s",
                flush=True,
            )
            procs = [p for p in procs if p is not leader] + [start_operator(ns, info, args, workdir / f"op-r{run}.log")]
    finally:
        for p in procs:
            p.stop()
        core.delete_namespace(ns)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease-duration", default="15s")
    parser.add_argument("--renew-deadline", default="10s")
    parser.add_argument("--retry-period", default="2s")
    parser.add_argument("--state-dir", type=Path, help="a running devstack to use (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coalmine-failover-") as tmp:
        workdir = Path(tmp)
        own = args.state_dir is None
        state_dir = workdir / "devstack" if own else args.state_dir
        info = devstack.up(state_dir) if own else devstack.load(state_dir)
        assert info is not None, f"no devstack in {state_dir}"
        try:
            results = measure(info, args, workdir)
        finally:
            if own:
                devstack.down(state_dir)
    lease = [r[0] for r in results]
    write = [r[1] for r in results]
    print(
        f"lease {args.lease_duration}, renew deadline {args.renew_deadline}, retry {args.retry_period}: "
        f"takeover median {statistics.median(lease):.2f} s, max {max(lease):.2f} s; "
        f"first write median {statistics.median(write):.2f} s, max {max(write):.2f} s over {len(results)} runs"
    )


if __name__ == "__main__":
    main()
