"""meshsim's own CPU per simulated minute, without an API server: N services at --rps, Prometheus
scraping every --scrape seconds. The figure in bench/README.md ("The harness") comes from here.

  .venv/bin/python bench/meshsim_cost.py --services 100 [--rps 2 --tick 0.5 --scrape 5 --profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Any

from coalmine_dev.meshsim import runtime
from coalmine_dev.meshsim.config import parse_config


def mesh(n: int, ns: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What bench/scale.py creates for n services mid-rollout (70/30 between v1 and v2)."""
    vss, drs = [], []
    for i in range(n):
        name = f"svc-{i}"
        route = [
            {"destination": {"host": name, "subset": "v1"}, "weight": 70},
            {"destination": {"host": name, "subset": "v2"}, "weight": 30},
        ]
        meta = {"name": name, "namespace": ns, "resourceVersion": str(i)}
        vss.append({"metadata": meta, "spec": {"hosts": [name], "http": [{"name": "primary", "route": route}]}})
        subsets = [{"name": v, "labels": {"app": name, "version": v}} for v in ("v1", "v2")]
        drs.append({"metadata": meta, "spec": {"host": name, "subsets": subsets}})
    return vss, drs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rps", type=float, default=2.0)
    parser.add_argument("--tick", type=float, default=0.5)
    parser.add_argument("--scrape", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ns = "scale-0"
    vss, drs = mesh(args.services, ns)
    services = [{"namespace": ns, "host": f"svc-{i}", "rps": args.rps} for i in range(args.services)]
    state = runtime.MeshState()
    state.replace(runtime.VIRTUAL_SERVICES, ns, vss)
    state.replace(runtime.DESTINATION_RULES, ns, drs)
    metrics = runtime.IstioMetrics()
    sim = runtime.Simulator(parse_config({"namespaces": [ns], "services": services}), state, metrics, seed=1)

    def run() -> None:
        for _ in range(int(args.seconds / args.tick)):
            sim.tick(args.tick)
        for _ in range(int(args.seconds / args.scrape)):
            metrics.exposition()

    started = time.process_time()
    if args.profile:
        cProfile.runctx("run()", globals(), {"run": run}, "/tmp/meshsim_cost.prof")
        pstats.Stats("/tmp/meshsim_cost.prof").sort_stats("cumtime").print_stats(15)
    else:
        run()
    cpu = time.process_time() - started
    size = len(metrics.exposition()) / 1e6
    print(
        f"{args.services} services at {args.rps:g} rps, slices of {args.tick:g} s, scraped every {args.scrape:g} s: "
        f"{cpu:.2f} s CPU per {args.seconds:g} simulated s = {100 * cpu / args.seconds:.1f} % of a core "
        f"(exposition {size:.1f} MB; load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
