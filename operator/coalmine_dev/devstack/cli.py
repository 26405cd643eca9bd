"""`coalmine devstack up | down | status`: the local stack from the command line.

A thin layer over `coalmine_dev.devstack.stack`; `up` prints shell lines to paste (or `eval`)
so kubectl, the operator and the demo find the stack.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from coalmine_dev.devstack import stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the stack keeps its data, logs and kubeconfig (default: $COALMINE_STATE_DIR or .state/devstack)",
    )
    parser.add_argument(
        "--scrape-interval", default="1s", help="Prometheus scrape and evaluation interval (default: 1s)"
    )
    parser.add_argument(
        "--no-workloads",
        dest="workloads",
        action="store_false",
        help="leave out kube-controller-manager, kube-scheduler and kwok: the bare API server starts fastest, "
        "but no pod, endpoint or namespace deletion ever completes",
    )
    parser.add_argument(
        "--no-istio-validation",
        dest="istio_validation",
        action="store_false",
        help="do not run and register Istio's validating webhook for VirtualServices and DestinationRules",
    )
    parser.add_argument("--nodes", type=int, default=1, help="fake nodes kwok runs (default: 1)")


def exports(info: stack.StackInfo) -> str:
    return f"export KUBECONFIG={info.kubeconfig}\nexport PROMETHEUS_URL={info.prometheus_url}"


def run(args: argparse.Namespace) -> int:
    state_dir: Path = (args.state_dir or stack.default_state_dir()).resolve()
    if args.action == "up":
        return _up(state_dir, args)
    if args.action == "down":
        stopped = stack.down(state_dir)
        print(f"stopped {', '.join(stopped)}" if stopped else f"nothing running in {state_dir}")
        return 0
    return _status(state_dir)


def _up(state_dir: Path, args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        info = stack.up(
            state_dir,
            scrape_interval=args.scrape_interval,
            workloads=args.workloads,
            istio_validation=args.istio_validation,
            nodes=args.nodes,
        )
    except stack.AlreadyRunningError as running:
        print(f"{running}; not starting another (stop it with `coalmine devstack down`)", file=sys.stderr)
        print(exports(running.info))
        return 0
    except stack.StackError as error:
        print(f"devstack up failed: {error}", file=sys.stderr)
        return 1
    print(f"devstack ready in {time.monotonic() - started:.1f} s (state in {state_dir})", file=sys.stderr)
    print(exports(info))
    return 0


def _status(state_dir: Path) -> int:
    info = stack.load(state_dir)
    if info is None:
        print(f"no devstack in {state_dir}")
        return 1
    urls = {"etcd": info.etcd_url, "kube-apiserver": info.apiserver_url, "prometheus": info.prometheus_url}
    alive = stack.status(state_dir) or {}
    for name in [*urls, *(n for n in info.pids if n not in urls)]:
        pid = info.pids.get(name)
        state = "running" if alive.get(name) else "stopped"
        where = urls.get(name) or (f"127.0.0.1:{info.ports[name]}" if name in info.ports else "")
        print(f"{name:23} {state:8} pid {pid if pid is not None else '-':<8} {where}")
    if info.nodes:
        print(f"{'nodes (kwok)':23} {', '.join(info.nodes)}")
    print(f"{'kubeconfig':23} {info.kubeconfig}")
    return 0 if alive and all(alive.values()) else 1
