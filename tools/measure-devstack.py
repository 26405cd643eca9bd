#!/usr/bin/env python3
"""Measure the local stack for the README: warm `devstack up` time, each process's warm start, its RSS.

    .venv/bin/python tools/measure-devstack.py [--runs 3] [--state-dir /tmp/measure-devstack] [--up-arg=--no-workloads]

1. `coalmine devstack up` then `down`, --runs times, in a fresh state folder: wall-clock time of `up`
   (the binaries are built; this is the warm start).
2. One more stack; `kubectl apply -f examples/` and wait until the Deployments are Available; after
   10 s, VmRSS of every process of the stack.
3. Each of kube-controller-manager, kube-scheduler, kwok and istio-validation in turn: stopped, and
   started again with its own command line (read from /proc) against the running API server; the
   time until its health endpoint answers 200 is its warm start. Then the stack is stopped.
Timings on a shared machine are noisy: run it when nothing else is busy, and say so when not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from coalmine_dev.devstack import binaries  # noqa: E402
from coalmine_dev.devstack import stack as devstack  # noqa: E402

HEALTH = {
    "kube-controller-manager": "https://127.0.0.1:{port}/healthz",
    "kube-scheduler": "https://127.0.0.1:{port}/healthz",
    "kwok": "http://127.0.0.1:{port}/healthz",
    "istio-validation": "https://127.0.0.1:{port}/healthz",
}


def coalmine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coalmine", "devstack", *args], capture_output=True, text=True, timeout=300, check=False
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, verify=False, timeout=1.0).status_code == 200  # self-signed serving certificates
    except httpx.HTTPError:
        return False


def start_time(argv: list[str], url: str, log: Path) -> float:
    """Start `argv`, return the seconds until `url` answers 200, stop it again."""
    with log.open("ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() - started > 60:
                    raise SystemExit(f"{argv[0]} did not become healthy; see {log}")
                time.sleep(0.02)
            return time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/measure-devstack"))
    parser.add_argument("--up-arg", action="append", default=[], help="passed to `devstack up` (repeatable)")
    args = parser.parse_args()
    state = ["--state-dir", str(args.state_dir)]
    if devstack.is_running(args.state_dir):
        raise SystemExit(f"a stack runs in {args.state_dir}; stop it first")
    shutil.rmtree(args.state_dir, ignore_errors=True)
    os.environ.pop("KUBECONFIG", None)

    ups = []
    for run in range(args.runs):
        started = time.monotonic()
        done = coalmine("up", *state, *args.up_arg)
        ups.append(time.monotonic() - started)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        coalmine("down", *state)
        print(f"run {run + 1}: `coalmine devstack up` {ups[-1]:.1f} s", flush=True)
    print(f"warm devstack up: min {min(ups):.1f} s, median {statistics.median(ups):.1f} s, max {max(ups):.1f} s")

    done = coalmine("up", *state, *args.up_arg)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    info = devstack.load(args.state_dir)
    assert info is not None
    try:
        if not info.workloads:
            print("(no workloads: the rest measures the processes kube-controller-manager, scheduler and kwok add)")
            return 0
        kubectl = [str(binaries.kubectl()), "--kubeconfig", str(info.kubeconfig)]
        subprocess.run([*kubectl, "apply", "-f", str(ROOT / "examples")], check=True, capture_output=True)
        subprocess.run(
            [*kubectl, "wait", "-n", "shop", "--for=condition=Available", "deployment", "--all", "--timeout=120s"],
            check=True,
            capture_output=True,
        )
        time.sleep(10)
        print("RSS after `kubectl apply -f examples/` (6 Ready pods) and 10 s:")
        for name, pid in info.pids.items():
            print(f"  {name:24} {rss_mb(pid):6.0f} MB")
        print(f"warm start (until /healthz answers), best of {args.runs}:")
        for name in HEALTH:
            # The same command line the stack used, against the running API server.
            argv = [
                a.decode() for a in Path(f"/proc/{info.pids[name]}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            ]
            info = devstack.stop_process(args.state_dir, name)
            url = HEALTH[name].format(port=info.ports[name])
            log = args.state_dir / "logs" / f"{name}.measure.log"
            times = [start_time(argv, url, log) for _ in range(args.runs)]
            print(f"  {name:24} {min(times):.2f} s (all: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    finally:
        print(coalmine("down", *state).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
