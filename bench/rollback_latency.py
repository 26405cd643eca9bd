"""Measure detection-to-rollback: meshsim starts failing the canary at 30 %; how long until the VS says 0?

Starts its own devstack (1 s Prometheus scrapes; or uses a running one: --state-dir) and one meshsim,
then for each run, in a fresh namespace: the seed scenario (tests/integration/rollout_support.py:
`order` with v1/v2, a DR with a circuit breaker, a VS with an A/B route ahead of the weighted
`primary` route), meshsim traffic, an operator watching only that namespace, and a Rollout with
checkEvery 1s and failureLimit 2. Once the VS shows canary weight 30 (plus 1.5 s of healthy checks),
the canary's destination starts answering 50 % errors, and the VS is polled every 15 ms until the
canary weight changes. Reported per run, from the moment meshsim was told to fail the canary:
  decided - the Rollout's status.rollback.at (the tick that decided, before it moved traffic)
  VS 0    - the VS seen with canary weight 0 (the figure the issue asks for)
and min/median/max, next to the bound README.md states (rollout_support.rollback_bound:
2 scrape intervals + failureLimit x checkEvery + 2 s for the deciding tick), the one the integration test checks.

  .venv/bin/python bench/rollback_latency.py [--runs 5] [--rps 150] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from _common import Processes, bench_stack, kube_env, operator_argv, start_meshsim, wait_scraped
from rollout_support import Shop, rollback_bound

from coalmine_dev.devstack import stack as devstack
from coalmine_dev.meshsim.client import MeshsimClient

CHECK_EVERY = 1.0
FAILURE_LIMIT = 2
POLL = 0.015


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_weight(shop: Shop, wanted: int | None, timeout: float, changed_from: int | None = None) -> tuple[int, float]:
    """Poll the VS until its canary weight is `wanted` (or differs from `changed_from`)."""
    deadline = time.monotonic() + timeout
    while True:
        weight = shop.canary_weight()
        if (wanted is not None and weight == wanted) or (changed_from is not None and weight != changed_from):
            return weight, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"canary weight still {weight} after {timeout} s; status: {shop.status()}")
        time.sleep(POLL)


def one_run(
    info: devstack.StackInfo, api: client.ApiClient, mesh: MeshsimClient, procs: Processes, workdir: Path, rps: float
) -> tuple[float, float, dict[str, object]]:
    ns = f"rb-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    shop = Shop(api, ns)
    try:
        shop.apply_istio()
        mesh.set_service(ns, "order", rps=rps, headers=[(0.9, {}), (0.1, {"user-group": "beta"})])
        operator = procs.start(
            f"operator-{ns}", operator_argv(info, [ns]), workdir / f"operator-{ns}.log", kube_env(info)
        )
        try:
            shop.create_rollout(
                steps=[{"weight": 10}, {"weight": 30, "hold": "60s"}, {"weight": 50}, {"weight": 100}],
                analysis={"checkEvery": f"{CHECK_EVERY:g}s", "failureLimit": FAILURE_LIMIT},
            )
            wait_weight(shop, 30, 90)
            time.sleep(1.5)  # healthy checks at 30 % first
            broken_wall = datetime.now(UTC)
            broken = time.monotonic()
            mesh.set_destination(ns, "order", "v2", error_ratio=0.5, p50_ms=40, p99_ms=120)
            weight, seen = wait_weight(shop, None, 60, changed_from=30)
            assert weight == 0, f"canary went to {weight}, not 0"
            status = shop.status()
            rollback = status.get("rollback") or {}
            decided = (ts(rollback["at"]) - broken_wall).total_seconds() if rollback.get("at") else float("nan")
            return seen - broken, decided, rollback
        finally:
            procs.stop(operator)
    finally:
        mesh.delete_service(ns, "order")
        core.delete_namespace(ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rps", type=float, default=150.0, help="meshsim requests/s to `order` (default 150)")
    parser.add_argument("--state-dir", type=Path, help="a running devstack to use (default: start one)")
    args = parser.parse_args()

    results: list[tuple[float, float]] = []
    with bench_stack("coalmine-rollback-", args.state_dir) as (info, workdir, procs):
        scrape = float(info.scrape_interval.rstrip("s"))
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        mesh = start_meshsim(procs, info, workdir, f"bench-rollback-{uuid.uuid4().hex[:6]}")
        try:
            wait_scraped(info, [mesh.job])
            for run in range(args.runs):
                latency, decided, rollback = one_run(info, api, mesh.client, procs, workdir, args.rps)
                results.append((latency, decided))
                print(
                    f"run {run + 1}: decided {decided:.2f} s, VS canary 0 seen {latency:.2f} s after the canary broke "
                    f"({rollback.get('reason')}: {rollback.get('metric')} {rollback.get('value')} "
                    f"{rollback.get('threshold')})",
                    flush=True,
                )
        finally:
            devstack.remove_scrape_target(info.state_dir, mesh.job)
            mesh.client.close()
    bound = rollback_bound(failure_limit=FAILURE_LIMIT, check_every=CHECK_EVERY, scrape_interval=scrape)
    seen = [r[0] for r in results]
    decisions = [r[1] for r in results]
    print(
        f"\ndetection-to-rollback over {len(results)} runs (checkEvery {CHECK_EVERY:g}s, failureLimit {FAILURE_LIMIT}, "
        f"scrape {info.scrape_interval}, {args.rps:g} rps):\n"
        f"  VS canary 0 seen: min {min(seen):.2f} s, median {statistics.median(seen):.2f} s, max {max(seen):.2f} s\n"
        f"  rollback decided: min {min(decisions):.2f} s, median {statistics.median(decisions):.2f} s, "
        f"max {max(decisions):.2f} s\n"
        f"  bound 2 scrapes + failureLimit x checkEvery + 2 s = {bound:.1f} s"
    )


if __name__ == "__main__":
    main()
