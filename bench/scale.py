"""Scale: N concurrent Rollouts on one operator replica, on an own devstack with meshsim traffic.

Sets up --namespaces namespaces holding N services `svc-i` (a VirtualService with one `primary`
route and a DestinationRule with subsets v1/v2 each), meshsim processes sending --rps requests/s
to every service (each meshsim watches a share of the namespaces: meshsim scans every VS and DR
it knows per simulated request, so one meshsim for 1,000 services cannot keep up), one
`coalmine run` for all namespaces, and then creates N Rollouts (checkEvery --check-every, every
step held --hold). For --duration seconds from the first create it samples the processes, then
prints a summary:

  - time until every Rollout is Progressing (max status.startedAt - first create)
  - operator RSS, CPU and thread count (/proc/PID/status, /proc/PID/stat)
  - check lag: status.analysis.checkedAt minus its grid point (checkEvery, at the Rollout's offset), every check seen
  - Prometheus queries per check round (Prometheus's own prometheus_http_requests_total, read from
    its /metrics, so the benchmark's reads are not counted) next to checks per round (the
    operator's coalmine_analysis_checks_total)
  - API requests/s by verb and resource (kube-apiserver's apiserver_request_total with the admin
    token; the benchmark's own LISTs of Rollouts are left out)
  - tick duration (coalmine_tick_duration_seconds), step overshoot past the hold, phases at the end
  - CPU of meshsim, Prometheus, kube-apiserver, etcd and the whole machine; meshsim's achieved rps

With --at-rest M it first creates M more services whose VirtualService already sends everything to v2 (a
fleet between releases, in namespaces of their own without traffic) and their Rollouts, and waits until the
operator has found every one promoted (`Succeeded` at once, nothing moved); the figures above are then those
of the N in flight with M + N Rollouts in the operator's caches, and the summary says whether the M
VirtualServices were left as they were.

Everything it starts is stopped at the end, also on Ctrl-C or SIGTERM.

  .venv/bin/python bench/scale.py --rollouts 1000 [--namespaces 10 --rps 2 --duration 240]
  .venv/bin/python bench/scale.py --rollouts 300 --at-rest 9700 --check-every 30s
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Meshsim,
    Processes,
    bench_stack,
    cpu_seconds,
    free_port,
    kube_env,
    machine_cpu,
    mem_available_mib,
    operator_argv,
    percentile,
    proc_status,
    start_meshsim,
    wait_scraped,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from coalmine.core.plan import check_offset
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import Child

ISTIO = ("networking.istio.io", "v1")
COALMINE = ("coalmine.dev", "v1alpha1")
PROGRESSED = ("Progressing", "Succeeded", "RolledBack")
FLEET_LABEL = "bench.coalmine.dev/fleet"
IN_FLIGHT, AT_REST = "in-flight", "at-rest"


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the objects ------------------------------------------------------------------------------------


def destination_rule(ns: str, name: str) -> dict[str, Any]:
    subsets = [{"name": v, "labels": {"app": name, "version": v}} for v in ("v1", "v2")]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"host": name, "subsets": subsets},
    }


def virtual_service(ns: str, name: str, serving: str = "v1") -> dict[str, Any]:
    route = [{"destination": {"host": name, "subset": serving}, "weight": 100}]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [name], "http": [{"name": "primary", "route": route}]},
    }


def rollout(ns: str, name: str, args: argparse.Namespace, fleet: str = IN_FLIGHT) -> dict[str, Any]:
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": ns, "labels": {FLEET_LABEL: fleet}},
        "spec": {
            "virtualService": {"name": name, "routes": ["primary"]},
            "stable": {"host": name, "subset": "v1"},
            "canary": {"host": name, "subset": "v2"},
            "analysis": {
                "interval": args.hold,  # the default hold of every step (10, 30, 50, 100)
                "checkEvery": args.check_every,
                "minRequests": args.min_requests,
                "failureLimit": 2,
                "maxNoData": "5m",
            },
        },
    }


@dataclass
class Fleet:
    namespaces: list[str]
    services: list[tuple[str, str]]  # (namespace, name): the Rollouts in flight, with meshsim traffic
    rest_namespaces: list[str] = field(default_factory=list)
    rest_services: list[tuple[str, str]] = field(default_factory=list)  # at rest: their VS all on the canary

    @classmethod
    def plan(cls, count: int, namespaces: int, at_rest: int = 0) -> Fleet:
        names = [f"scale-{j}" for j in range(namespaces)]
        rest = [f"rest-{j}" for j in range(namespaces)] if at_rest else []
        return cls(
            names,
            [(names[i % namespaces], f"svc-{i}") for i in range(count)],
            rest,
            [(rest[i % namespaces], f"rest-{i}") for i in range(at_rest)],
        )


def parallel(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 8) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, items):
            pass


# --- metrics endpoints ------------------------------------------------------------------------------


def scrape(
    url: str, headers: dict[str, str] | None = None, verify: Any = True
) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    text = httpx.get(url, headers=headers or {}, verify=verify, timeout=60).text
    samples: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k, "") == m for k, m in match.items())
    )


def histogram_quantile(q: float, before: dict[Any, float], after: dict[Any, float], name: str, **match: str) -> float:
    """q-quantile of a histogram's observations between two scrapes (upper bucket bound)."""
    buckets: dict[float, float] = {}
    for (n, labels), v in after.items():
        if n == f"{name}_bucket" and all(dict(labels).get(k, "") == m for k, m in match.items()):
            le = float(dict(labels)["le"])
            buckets[le] = buckets.get(le, 0.0) + v - before.get((n, labels), 0.0)
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return float("nan")
    rank = q * ordered[-1][1]
    return next(le for le, count in ordered if count >= rank)


@dataclass
class Endpoints:
    info: devstack.StackInfo
    operator_metrics: list[str]  # one per replica; their samples are added up

    def apiserver(self) -> dict[Any, float]:
        headers = {"Authorization": f"Bearer {self.info.admin_token}"}
        return scrape(f"{self.info.apiserver_url}/metrics", headers, verify=str(self.info.ca_file))

    def prometheus(self) -> dict[Any, float]:
        return scrape(f"{self.info.prometheus_url}/metrics")

    def operator(self) -> dict[Any, float]:
        merged: dict[Any, float] = {}
        for url in self.operator_metrics:
            for key, value in scrape(url).items():
                merged[key] = merged.get(key, 0.0) + value
        return merged


@dataclass
class Snapshot:
    at: float
    apiserver: dict[Any, float]
    prometheus: dict[Any, float]
    operator: dict[Any, float]
    wall: float = 0.0  # time.time() when taken, to compare with timestamps in the Rollouts' status

    @classmethod
    def take(cls, endpoints: Endpoints) -> Snapshot:
        wall = time.time()
        return cls(time.monotonic(), endpoints.apiserver(), endpoints.prometheus(), endpoints.operator(), wall)


# --- sampling ---------------------------------------------------------------------------------------


@dataclass
class Samples:
    rss_mib: list[float] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)  # operator, per sample interval
    machine_percent: list[float] = field(default_factory=list)
    checks: dict[tuple[str, str], str] = field(default_factory=dict)  # (rollout, checkedAt) -> verdict
    uids: dict[str, str] = field(default_factory=dict)  # rollout -> its uid (its checks' offset on the grid)
    lists: int = 0  # LISTs of Rollouts the benchmark made (left out of the API rates)


def list_rollouts(custom: client.CustomObjectsApi, samples: Samples, fleet: str = IN_FLIGHT) -> list[dict[str, Any]]:
    """Every Rollout of one fleet, from the API server's watch cache (resourceVersion 0: no quorum read from
    etcd; the label selector is applied there, so 10,000 Rollouts at rest do not travel with every LIST).
    A starved API server timed out (504) on a quorum LIST of 1,000 Rollouts, and on pages of 100 (their
    continue tokens name a resourceVersion its lagging cache did not have yet); retried a few times."""
    samples.lists += 1
    for attempt in range(5):
        try:
            answer: Any = custom.list_cluster_custom_object(
                *COALMINE,
                "rollouts",
                resource_version="0",
                label_selector=f"{FLEET_LABEL}={fleet}",
                _request_timeout=120,
            )
            break
        except ApiException as exc:
            if exc.status < 500 or attempt == 4:
                raise
            time.sleep(2)
    items: list[dict[str, Any]] = answer["items"]
    for item in items:
        check = (item.get("status") or {}).get("analysis") or {}
        if check.get("checkedAt"):
            key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
            samples.checks[(key, check["checkedAt"])] = check.get("verdict", "")
            samples.uids[key] = item["metadata"].get("uid", "")
    return items


def phases(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter((i.get("status") or {}).get("phase") or "-" for i in items)


# --- the run ----------------------------------------------------------------------------------------


def setup(fleet: Fleet, api: client.ApiClient) -> float:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    started = time.monotonic()
    for ns in fleet.namespaces + fleet.rest_namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    at_rest = set(fleet.rest_services)

    def create(item: tuple[str, str]) -> None:
        ns, name = item
        serving = "v2" if item in at_rest else "v1"
        custom.create_namespaced_custom_object(*ISTIO, ns, "destinationrules", destination_rule(ns, name))
        custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", virtual_service(ns, name, serving))

    parallel(create, fleet.services + fleet.rest_services, workers=16)
    return time.monotonic() - started


def settle_at_rest(fleet: Fleet, args: argparse.Namespace, custom: client.CustomObjectsApi, samples: Samples) -> str:
    """Create the Rollouts at rest and wait until the operator has found every one promoted (`Succeeded`,
    nothing moved): a production fleet between releases, which the operator holds in its caches."""
    started = time.monotonic()

    def create(item: tuple[str, str]) -> None:
        ns, name = item
        custom.create_namespaced_custom_object(*COALMINE, ns, "rollouts", rollout(ns, name, args, AT_REST))

    parallel(create, fleet.rest_services, workers=16)
    created = time.monotonic() - started
    print(f"{len(fleet.rest_services)} Rollouts at rest created in {created:.1f} s", flush=True)
    while True:
        counts = phases(list_rollouts(custom, samples, AT_REST))
        settled = time.monotonic() - started
        print(f"  at rest, t={settled:5.0f}s: {dict(counts)}", flush=True)
        if counts["Succeeded"] == len(fleet.rest_services):
            return f"{len(fleet.rest_services)} created in {created:.0f} s, all Succeeded after {settled:.0f} s"
        assert settled < args.settle_timeout, f"the Rollouts at rest did not settle within {args.settle_timeout} s"
        time.sleep(10)


def rest_routes_untouched(fleet: Fleet, custom: client.CustomObjectsApi) -> str:
    """How many VirtualServices of the Rollouts at rest still send everything to v2, as created."""
    untouched = 0
    for ns in fleet.rest_namespaces:
        answer: Any = custom.list_namespaced_custom_object(*ISTIO, ns, "virtualservices", _request_timeout=120)
        for vs in answer["items"]:
            route = vs["spec"]["http"][0]["route"]
            untouched += [(d["destination"]["subset"], d.get("weight")) for d in route] == [("v2", 100)]
    return f"{untouched} of {len(fleet.rest_services)}"


def start_meshsims(
    fleet: Fleet, args: argparse.Namespace, info: devstack.StackInfo, workdir: Path, procs: Processes
) -> list[Meshsim]:
    count = min(args.meshsims, len(fleet.namespaces))
    meshsims = []
    for k in range(count):
        mine = fleet.namespaces[k::count]
        services = [{"namespace": ns, "host": name, "rps": args.rps} for ns, name in fleet.services if ns in mine]
        cfg = workdir / f"meshsim-{k}.json"
        cfg.write_text(json.dumps({"namespaces": mine, "tickSeconds": args.meshsim_tick, "services": services}))
        meshsims.append(
            start_meshsim(procs, info, workdir, f"scale-meshsim-{k}", args=["--config", str(cfg)], seed=k, timeout=120)
        )
    wait_scraped(info, [m.job for m in meshsims], timeout=120)
    return meshsims


def wait_healthy(url: str, operator: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert operator.alive(), f"the operator exited:\n{operator.tail()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"operator not healthy at {url} within {timeout} s"
        time.sleep(0.2)


def run(args: argparse.Namespace) -> None:
    fleet = Fleet.plan(args.rollouts, args.namespaces, args.at_rest)
    check_every = seconds(args.check_every)
    with bench_stack("coalmine-scale-", scrape_interval=args.scrape_interval) as (info, workdir, procs):
        print(f"devstack up ({info.state_dir}); work folder {workdir}", flush=True)
        kcfg = client.Configuration()
        config.load_kube_config(config_file=str(info.kubeconfig), client_configuration=kcfg)
        kcfg.connection_pool_maxsize = 16
        api = client.ApiClient(kcfg)
        custom = client.CustomObjectsApi(api)

        took = setup(fleet, api)
        print(
            f"{len(fleet.namespaces) + len(fleet.rest_namespaces)} namespaces, "
            f"{len(fleet.services) + len(fleet.rest_services)} VS + DR created in {took:.1f} s",
            flush=True,
        )
        meshsims = start_meshsims(fleet, args, info, workdir, procs)
        print(f"{len(meshsims)} meshsims scraped, {args.rps:g} rps per service", flush=True)

        urls, pids = [], []
        for r in range(args.replicas):
            metrics_port, health_port = free_port(), free_port()
            extra = ["--metrics-port", str(metrics_port), "--health-port", str(health_port)]
            if args.tick_concurrency:
                extra += ["--tick-concurrency", str(args.tick_concurrency)]
            if args.resync:
                extra += ["--resync", args.resync]
            if args.replicas > 1 or args.shards > 1:
                extra += ["--leader-election", "--lease-namespace", "default", "--shards", str(args.shards)]
                extra += ["--lease-name", "coalmine-bench"]
            log = workdir / f"operator-{r}.log"
            env = {**kube_env(info), "POD_NAME": f"bench-operator-{r}"}
            argv = operator_argv(info, fleet.namespaces + fleet.rest_namespaces, *extra)
            if args.trace_memory and r == 0:  # the same operator, under tracemalloc (bench/_traced_operator.py)
                traced = Path(__file__).with_name("_traced_operator.py")
                argv = [sys.executable, str(traced), str(args.trace_memory.resolve()), *argv[3:]]
            operator = procs.start(f"operator-{r}", argv, log, env)
            wait_healthy(f"http://127.0.0.1:{health_port}/healthz", operator)
            urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
            pids.append(operator.pid)
        op = pids[0]
        endpoints = Endpoints(info, urls)
        idle = proc_status(op)
        print(
            f"{len(pids)} operator(s) {pids} up: RSS {idle.get('VmRSS', 0) / 1024:.0f} MiB, {idle.get('Threads')} threads",
            flush=True,
        )

        samples = Samples()
        settled = settle_at_rest(fleet, args, custom, samples) if fleet.rest_services else ""
        if settled:
            rss = max(proc_status(p).get("VmRSS", 0) for p in pids) / 1024
            print(f"at rest: {settled}; operator RSS {rss:.0f} MiB (the largest replica)", flush=True)

        watched = {
            "operator": pids,
            "meshsim": [m.pid for m in meshsims],
            "prometheus": [info.pids["prometheus"]],
            "kube-apiserver": [info.pids["kube-apiserver"]],
            "etcd": [info.pids["etcd"]],
        }
        cpu_start = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
        cpu_start["bench"] = own_cpu()
        machine_start = machine_cpu()
        mesh_counts_start = {m.job: m.client.counts()["total"] for m in meshsims}

        first_create_wall = datetime.now(UTC)
        t0 = time.monotonic()

        def create(item: tuple[str, str]) -> None:
            ns, name = item
            custom.create_namespaced_custom_object(*COALMINE, ns, "rollouts", rollout(ns, name, args))

        parallel(create, fleet.services)
        created_in = time.monotonic() - t0
        print(f"{len(fleet.services)} Rollouts created in {created_in:.1f} s", flush=True)

        steady: Snapshot | None = None
        steady_at_progress = 0.0
        last_cpu, last_machine, last_t = sum(map(cpu_seconds, pids)), machine_cpu(), time.monotonic()
        next_list = time.monotonic()
        items: list[dict[str, Any]] = []
        # From the last create, not the first: on a busy machine creating 1,000 Rollouts can take minutes.
        while time.monotonic() - t0 < created_in + args.duration:
            time.sleep(args.sample)
            now = time.monotonic()
            statuses = [proc_status(p) for p in pids]
            assert all(statuses), "an operator exited"
            cpu, machine = sum(map(cpu_seconds, pids)), machine_cpu()
            samples.rss_mib.append(max(st["VmRSS"] for st in statuses) / 1024)  # the largest replica
            samples.threads.append(max(st["Threads"] for st in statuses))
            samples.cpu_percent.append(100 * (cpu - last_cpu) / (now - last_t))
            samples.machine_percent.append(
                100 * (machine[0] - last_machine[0]) / max(1.0, machine[1] - last_machine[1])
            )
            last_cpu, last_machine, last_t = cpu, machine, now
            if now >= next_list:
                next_list = now + args.list_every
                items = list_rollouts(custom, samples)
                counts = phases(items)
                progressed = sum(counts[p] for p in PROGRESSED)
                if steady is None and progressed == len(fleet.services):
                    steady = Snapshot.take(endpoints)
                    steady_at_progress = now - t0
                print(
                    f"t={now - t0:5.0f}s phases {dict(counts)}  operator RSS {samples.rss_mib[-1]:.0f} MiB, "
                    f"{samples.threads[-1]} threads, CPU {samples.cpu_percent[-1]:.0f}%  "
                    f"machine CPU {samples.machine_percent[-1]:.0f}%  mem avail {mem_available_mib() / 1024:.1f} GiB",
                    flush=True,
                )
        if args.trace_memory:
            args.trace_memory.unlink(missing_ok=True)
            os.kill(pids[0], signal.SIGUSR1)
            deadline = time.monotonic() + 120
            while not args.trace_memory.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            print(f"operator-0's memory by allocation site: {args.trace_memory}", flush=True)
        end = Snapshot.take(endpoints)
        items = list_rollouts(custom, samples)
        elapsed = time.monotonic() - t0
        cpu_end = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
        cpu_end["bench"] = own_cpu()
        load = os.getloadavg()
        machine_end = machine_cpu()
        mesh_counts_end = {m.job: m.client.counts()["total"] for m in meshsims}
        if fleet.rest_services:
            rest = phases(list_rollouts(custom, samples, AT_REST))
            settled += (
                f"; at the end: {', '.join(f'{k} {v}' for k, v in sorted(rest.items()))}; their VirtualServices "
                f"still all on v2: {rest_routes_untouched(fleet, custom)}"
            )
        errors = [
            line
            for r in range(args.replicas)
            for line in (workdir / f"operator-{r}.log").read_text(errors="replace").splitlines()
            if "ERROR" in line
        ]

        report(
            args,
            fleet,
            items,
            samples,
            steady,
            steady_at_progress,
            end,
            first_create_wall,
            created_in,
            elapsed,
            check_every,
            {k: 100 * (cpu_end[k] - cpu_start[k]) / elapsed for k in cpu_end},
            100 * (machine_end[0] - machine_start[0]) / max(1.0, machine_end[1] - machine_start[1]),
            sum(mesh_counts_end[j] - mesh_counts_start[j] for j in mesh_counts_end) / elapsed,
            errors,
            load,
            settled,
        )


PROM_DURATION = "prometheus_http_request_duration_seconds"
QUERY = "/api/v1/query"


def api_latency(steady: Snapshot, end: Snapshot) -> str:
    parts = []
    for verb, resource, subresource in (
        ("GET", "virtualservices", ""),
        ("LIST", "destinationrules", ""),
        ("PATCH", "rollouts", "status"),
        ("POST", "events", ""),
        ("PATCH", "virtualservices", ""),
    ):
        match = {"verb": verb, "resource": resource, "subresource": subresource}
        p50, p99 = (
            histogram_quantile(q, steady.apiserver, end.apiserver, "apiserver_request_duration_seconds", **match)
            for q in (0.5, 0.99)
        )
        parts.append(f"{verb} {resource}{'/' + subresource if subresource else ''} {p50 * 1000:.0f}/{p99 * 1000:.0f}")
    return ", ".join(parts) + " ms (bucket upper bounds)"


def apiserver_inside(steady: Snapshot, end: Snapshot) -> str:
    """Where a request's time goes inside the API server: waiting in priority and fairness (by priority
    level, the operator's flow among them) and etcd's answers (by operation)."""
    parts = []
    levels = sorted(
        {
            dict(labels).get("priority_level", "")
            for (name, labels) in end.apiserver
            if name == "apiserver_flowcontrol_request_wait_duration_seconds_count"
        }
    )
    wait = "apiserver_flowcontrol_request_wait_duration_seconds"
    for level in levels:
        count = total(end.apiserver, f"{wait}_count", priority_level=level) - total(
            steady.apiserver, f"{wait}_count", priority_level=level
        )
        if count <= 0:
            continue
        p50, p99 = (
            histogram_quantile(q, steady.apiserver, end.apiserver, wait, priority_level=level) for q in (0.5, 0.99)
        )
        parts.append(f"APF wait {level} {p50 * 1000:.0f}/{p99 * 1000:.0f} ms ({count:.0f})")
    for operation in ("update", "get", "create"):
        name = "etcd_request_duration_seconds"
        p50, p99 = (
            histogram_quantile(q, steady.apiserver, end.apiserver, name, operation=operation) for q in (0.5, 0.99)
        )
        parts.append(f"etcd {operation} {p50 * 1000:.0f}/{p99 * 1000:.0f} ms")
    return ", ".join(parts) + " (bucket upper bounds)"


def tick_phases(steady: Snapshot, end: Snapshot) -> str:
    parts = []
    for phase in ("late", "queued", "prometheus", "status", "traffic", "events"):
        name = "coalmine_tick_phase_seconds"
        count = total(end.operator, f"{name}_count", phase=phase) - total(steady.operator, f"{name}_count", phase=phase)
        p50, p99 = (histogram_quantile(q, steady.operator, end.operator, name, phase=phase) for q in (0.5, 0.99))
        parts.append(f"{phase} {p50 * 1000:.0f}/{p99 * 1000:.0f} ms ({count:.0f})")
    return ", ".join(parts)


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def report(
    args: argparse.Namespace,
    fleet: Fleet,
    items: list[dict[str, Any]],
    samples: Samples,
    steady: Snapshot | None,
    steady_at: float,
    end: Snapshot,
    first_create_wall: datetime,
    created_in: float,
    elapsed: float,
    check_every: float,
    cpu: dict[str, float],
    machine_percent: float,
    mesh_rps: float,
    op_errors: list[str],
    load: tuple[float, float, float],
    at_rest: str = "",
) -> None:
    n = len(fleet.services)
    counts = phases(items)
    started = [ts(s["startedAt"]) for i in items if (s := i.get("status") or {}).get("startedAt")]
    to_progressing = (max(started) - first_create_wall).total_seconds() if len(started) == n else float("nan")

    lags, steady_lags = [], []  # every check seen; those of the steady window (creation's burst left out)
    every = timedelta(seconds=check_every)
    late: Counter[int] = Counter()  # checks over 1 s late, by 30-s window from the first create
    for key, checked in samples.checks:
        # After the Rollout's own grid point: every checkEvery, at the offset its uid gives (plan.check_offset).
        at = ts(checked).timestamp()
        moment = at - check_offset(samples.uids.get(key, ""), every).total_seconds()
        lags.append(moment - (moment // check_every) * check_every)
        if steady is not None and at >= steady.wall:
            steady_lags.append(lags[-1])
        if lags[-1] > 1:
            late[int((at - first_create_wall.timestamp()) // 30)] += 1
    verdicts = Counter(samples.checks.values())

    hold = seconds(args.hold)
    overshoot = []
    by_step: dict[int, list[float]] = {}  # the 10 % step's canary has the fewest requests: its checks lack data most
    for i in items:
        status = i.get("status") or {}
        history = [ts(h["startedAt"]) for h in status.get("history") or []]
        if status.get("finishedAt"):
            history.append(ts(status["finishedAt"]))
        for step, (a, b) in enumerate(itertools.pairwise(history)):
            overshoot.append((b - a).total_seconds() - hold)
            by_step.setdefault(step, []).append(overshoot[-1])

    rows: list[tuple[str, str]] = [
        ("Rollouts / namespaces / services", f"{n} / {len(fleet.namespaces)} / {n}"),
        *([("+ Rollouts at rest (VS all on the canary, no traffic)", at_rest)] if at_rest else []),
        (
            "spec",
            f"checkEvery {args.check_every}, 4 steps held {args.hold}, minRequests {args.min_requests}, "
            f"scrape {args.scrape_interval}, {args.rps:g} rps/service",
        ),
        ("Rollouts created in", f"{created_in:.1f} s"),
        ("all Progressing after (max startedAt - first create)", f"{to_progressing:.1f} s"),
        ("phases at the end", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))),
        ("Succeeded within the run", f"{counts['Succeeded']} of {n} in {elapsed:.0f} s"),
        ("operator replicas / shards", f"{args.replicas} / {args.shards} (RSS and threads: the largest replica)"),
        ("operator --resync (finished Rollouts re-assert their weights)", args.resync or "its default, 60s"),
        (
            "operator RSS (max / end)",
            f"{max(samples.rss_mib):.0f} / {samples.rss_mib[-1]:.0f} MiB",
        ),
        (
            "operator threads (min / max)",
            f"{min(samples.threads)} / {max(samples.threads)}",
        ),
        (
            "operator CPU (mean over run / max sample)",
            f"{cpu['operator']:.0f} % / {max(samples.cpu_percent):.0f} % of one core",
        ),
        (
            "check lag after grid point (p50 / p99 / max)",
            f"{percentile(lags, 50) * 1000:.0f} / {percentile(lags, 99) * 1000:.0f} / "
            f"{max(lags, default=float('nan')) * 1000:.0f} ms over {len(lags)} checks seen",
        ),
        (
            "  checks over 1 s late, by 30 s of the run",
            ", ".join(f"{k * 30}-{k * 30 + 30} s: {late[k]}" for k in sorted(late)) or "none",
        ),
        (
            "  the same, steady window only (p50 / p99 / max)",
            f"{percentile(steady_lags, 50) * 1000:.0f} / {percentile(steady_lags, 99) * 1000:.0f} / "
            f"{max(steady_lags, default=float('nan')) * 1000:.0f} ms over {len(steady_lags)} checks seen",
        ),
        ("verdicts of the checks seen", ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))),
        (
            "step overshoot past the hold (p50 / p99 / max)",
            f"{percentile(overshoot, 50):.2f} / {percentile(overshoot, 99):.2f} / "
            f"{max(overshoot, default=float('nan')):.2f} s over {len(overshoot)} steps",
        ),
        (
            "  by step: p99 (steps over 1 s)",
            ", ".join(
                f"{step + 1}: {percentile(values, 99):.2f} s ({sum(v > 1 for v in values)})"
                for step, values in sorted(by_step.items())
            ),
        ),
    ]
    if steady is not None:
        window = end.at - steady.at
        rounds = window / check_every
        queries = total(end.prometheus, "prometheus_http_requests_total", handler="/api/v1/query") - total(
            steady.prometheus, "prometheus_http_requests_total", handler="/api/v1/query"
        )
        checks = total(end.operator, "coalmine_analysis_checks_total") - total(
            steady.operator, "coalmine_analysis_checks_total"
        )
        ticks = total(end.operator, "coalmine_tick_duration_seconds_count") - total(
            steady.operator, "coalmine_tick_duration_seconds_count"
        )
        skipped = total(end.operator, "coalmine_settled_ticks_total") - total(
            steady.operator, "coalmine_settled_ticks_total"
        )
        by_kind: dict[str, float] = {}
        for (name, labels), value in end.apiserver.items():
            if name != "apiserver_request_total":
                continue
            d = dict(labels)
            if d.get("verb") == "LIST" and d.get("resource") == "rollouts" and d.get("scope") == "cluster":
                continue  # the benchmark's own reads
            delta = value - steady.apiserver.get((name, labels), 0.0)
            if delta > 0:
                key = f"{d.get('verb')} {d.get('resource')}{'/' + d['subresource'] if d.get('subresource') else ''}"
                by_kind[key] = by_kind.get(key, 0.0) + delta
        api_total = sum(by_kind.values())
        top = ", ".join(f"{k} {v / window:.1f}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])[:6])
        rows += [
            ("steady window (all Progressing -> end)", f"{window:.0f} s from t={steady_at:.0f}s ({rounds:.1f} rounds)"),
            (
                "Prometheus queries per check round",
                f"{queries / rounds:.1f} (checks per round {checks / rounds:.0f}; {queries / max(checks, 1):.3f} "
                f"queries per check)",
            ),
            (
                "ticks/s, tick p50 / p99",
                f"{ticks / window:.1f}/s, "
                f"{histogram_quantile(0.5, steady.operator, end.operator, 'coalmine_tick_duration_seconds') * 1000:.0f} / "
                f"{histogram_quantile(0.99, steady.operator, end.operator, 'coalmine_tick_duration_seconds') * 1000:.0f} ms"
                f" (bucket upper bounds); {skipped / window:.1f}/s resyncs of settled Rollouts skipped",
            ),
            ("API requests/s (operator + meshsim watches)", f"{api_total / window:.1f}/s: {top}"),
            ("API latency p50 / p99 (apiserver_request_duration_seconds)", api_latency(steady, end)),
            ("inside the API server p50 / p99", apiserver_inside(steady, end)),
            (
                "Prometheus query latency p50 / p99",
                f"{histogram_quantile(0.5, steady.prometheus, end.prometheus, PROM_DURATION, handler=QUERY) * 1000:.0f}"
                f" / {histogram_quantile(0.99, steady.prometheus, end.prometheus, PROM_DURATION, handler=QUERY) * 1000:.0f}"
                " ms (bucket upper bounds)",
            ),
            ("API requests per check", f"{api_total / max(checks, 1):.2f}"),
            (
                "check lag p50 / p99 (operator's coalmine_check_lag_seconds, every check)",
                " / ".join(
                    f"{histogram_quantile(q, steady.operator, end.operator, 'coalmine_check_lag_seconds') * 1000:.0f}"
                    for q in (0.5, 0.99)
                )
                + " ms (bucket upper bounds)",
            ),
            (
                "event loop lag p50 / p99 (100 ms sleep)",
                " / ".join(
                    f"{histogram_quantile(q, steady.operator, end.operator, 'coalmine_event_loop_lag_seconds') * 1000:.0f}"
                    for q in (0.5, 0.99)
                )
                + " ms",
            ),
            ("tick phases p50 / p99, count", tick_phases(steady, end)),
        ]
    else:
        rows.append(("steady window", "never: not every Rollout reached Progressing within the run"))
    rows += [
        ("CPU over the run, % of one core", ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())),
        ("harness CPU (meshsim + this script), % of one core", f"{cpu['meshsim'] + cpu['bench']:.0f}"),
        ("load average at the end (1 / 5 / 15 min)", " / ".join(f"{x:.2f}" for x in load)),
        ("machine CPU over the run (2 cores = 100 %)", f"{machine_percent:.0f} %"),
        ("meshsim achieved rps (all services)", f"{mesh_rps:.0f} (configured {args.rps * n:.0f})"),
        ("operator ERROR log lines", str(len(op_errors))),
    ]
    if args.record:
        figures = {
            "rollouts": n + len(fleet.rest_services),
            "in_flight": n,
            "check_every": args.check_every,
            "replicas": args.replicas,
            "shards": args.shards,
            "tick_concurrency": args.tick_concurrency,
            "resync": args.resync,
            **({"label": args.label} if args.label else {}),
            "rss_max_mib": max(samples.rss_mib),
            "lag_p50_ms": percentile(lags, 50) * 1000,
            "lag_p99_ms": percentile(lags, 99) * 1000,
            "steady_lag_p50_ms": percentile(steady_lags, 50) * 1000,
            "steady_lag_p99_ms": percentile(steady_lags, 99) * 1000,
            "overshoot_p50_s": percentile(overshoot, 50),
            "overshoot_p99_s": percentile(overshoot, 99),
            "succeeded": counts["Succeeded"],
            "load": load,
            "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
            "rows": rows,
        }
        with Path(args.record).open("a") as out:
            out.write(json.dumps(figures) + "\n")
    width = max(len(k) for k, _ in rows)
    print(f"\nscale benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for label, text in rows:
        print(f"  {label:<{width}}  {text}")
    for line in op_errors[:5]:
        print(f"  operator: {line[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=1000, help="Rollouts in flight (released at once)")
    parser.add_argument(
        "--at-rest",
        type=int,
        default=0,
        help="more Rollouts whose VirtualService already sends everything to the canary (a fleet between "
        "releases: Succeeded at once, nothing moved), created and settled before those in flight, in "
        "namespaces of their own without traffic",
    )
    parser.add_argument("--settle-timeout", type=float, default=3600.0, help="seconds for the at-rest to settle")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--meshsims", type=int, default=10, help="meshsim processes (each a share of the namespaces)")
    parser.add_argument("--rps", type=float, default=2.0, help="requests/s meshsim sends to each service")
    parser.add_argument("--meshsim-tick", type=float, default=0.5, help="meshsim's simulated slice, seconds")
    parser.add_argument("--check-every", default="10s")
    parser.add_argument("--hold", default="30s", help="hold of every step (analysis.interval)")
    parser.add_argument("--min-requests", type=int, default=2)
    parser.add_argument("--scrape-interval", default="5s", help="Prometheus scrape interval of the own devstack")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds from the last Rollout created")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between /proc samples")
    parser.add_argument("--list-every", type=float, default=5.0, help="seconds between LISTs of the Rollouts")
    parser.add_argument("--replicas", type=int, default=1, help="operator processes (more than 1: with --shards)")
    parser.add_argument("--shards", type=int, default=1, help="shards (one Lease each) the replicas share")
    parser.add_argument("--tick-concurrency", type=int, help="the operator's --tick-concurrency (default: its own)")
    parser.add_argument(
        "--resync", help="the operator's --resync: finished Rollouts re-assert their weights this often"
    )
    parser.add_argument(
        "--trace-memory",
        type=Path,
        help="run operator-0 under tracemalloc and write where its memory was allocated to this file at the end",
    )
    parser.add_argument("--record", help="append the figures as a JSON line to this file (bench/scale_plot.py)")
    parser.add_argument("--label", help="the run's series in bench/scale_plot.py (default: replicas, shards, date)")
    args = parser.parse_args()
    try:
        run(args)
    except ApiException as exc:
        sys.exit(f"API error: {exc.status} {exc.reason}: {exc.body}")


if __name__ == "__main__":
    main()
