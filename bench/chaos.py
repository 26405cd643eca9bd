"""Chaos: many Rollouts in flight on the local stack while faults arrive on a seeded random schedule, judged by
an invariant checker that reads every write from etcd (bench/chaos_checker.py says exactly what it checks).

What runs (all on 127.0.0.1, everything stopped at the end, also on Ctrl-C or SIGTERM):
  - an own devstack (etcd, kube-apiserver, controllers, kwok, Istio's validation webhook, Prometheus);
  - toxiproxy-server (tools/build-toxiproxy.sh) with one proxy per operator replica to the API server and one
    to Prometheus: each replica's kubeconfig and --prometheus-url point through its proxies (TCP: TLS passes
    through, the replica verifies the API server's certificate as the stack's kubeconfig says);
  - two `coalmine run --leader-election` replicas (the Lease in namespace chaos-system);
  - meshsim, sending --rps to every service that has traffic;
  - --rollouts Rollouts, each on its own service (a VirtualService with an A/B route `beta` and the owned
    route `primary`, a DestinationRule with subsets v1..v4 and beta), of four kinds:
      healthy      releases that pass every step;
      failing      each release's canary starts answering 50 % errors once it reaches a random step;
      no-traffic   no requests at all: every check has no data, and the release rolls back after maxNoData;
      invalid      a spec the operator refuses (a canary subset the DestinationRule lacks, a route that does
                   not exist): Invalid, and the VirtualService must never be written for it.
    When a release ends (Succeeded or RolledBack), the scenario starts the next one a few seconds later:
    stable = the promoted canary (or the same stable after a rollback), canary = the next version.
  - a GitOps actor that re-applies VirtualServices from their source ("Git") whenever they drift, by
    server-side apply with force, as Argo CD self-heal or Flux do. Always on for a fifth of the services,
    configured as README's GitOps section advises (the owned route's destinations ignored, Argo CD's
    ignoreDifferences with RespectIgnoreDifferences); and, as the fault `gitops-fight`, configured naively
    (the whole VirtualService from Git) for a random set of services for a while: it reverts the operator's
    weights, the operator restores them, and the table counts that fight.
Faults (each a row of the table): kill-leader, kill-follower (SIGKILL, then the replica is started again),
start-in-restart (the follower is started while kube-apiserver restarts, then the leader is killed and held
down until that replica leads; a replica that exits on its own is started again as the kubelet would),
apiserver-restart, etcd-restart (SIGKILL, down 0-5 s, started on the same port and data), prometheus-stop
(10-90 s), api-latency / api-reset / api-blackhole and prom-latency / prom-reset / prom-blackhole (toxics on
the leader's, the follower's or both replicas' proxies), gitops-fight, person-edits (edits of fields the
operator does not own: timeouts, retries, the A/B route's match, labels, the DestinationRule's traffic
policy). After --duration no fault starts and no release begins; the run goes on for --tail seconds so
every Rollout can show it is not stuck.

Prints the table (fault kind x times injected x violations x recovery p50/p99) and writes it, with every
violation and the counts behind it, to --output (chaos-report.json, chaos-table.md, logs/). Exit code 1
when any invariant was violated.

  .venv/bin/python bench/chaos.py --rollouts 100 --duration 600 --seed 1
  .venv/bin/python bench/chaos.py --short          # the form tests/integration/test_chaos.py runs
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import math
import random
import re
import shutil
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import toxiproxy
import yaml
from _common import Processes, bench_stack, free_port, start_meshsim, wait_scraped
from chaos_checker import (
    INVARIANTS,
    MARKERS,
    Checker,
    Fault,
    Findings,
    Injection,
    by_kind,
    clean,
    percentile,
    recovery_times,
)
from chaos_history import History, Write
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import stack as devstack
from coalmine_dev.processes import Child

ISTIO = ("networking.istio.io", "v1")
COALMINE = ("coalmine.dev", "v1alpha1")
VERSIONS = tuple(f"v{i}" for i in range(1, 5))
LEASE_NAMESPACE = "chaos-system"
KINDS = (
    "kill-leader",
    "kill-follower",
    "apiserver-restart",
    "etcd-restart",
    "prometheus-stop",
    "api-latency",
    "api-reset",
    "api-blackhole",
    "prom-latency",
    "prom-reset",
    "prom-blackhole",
    "gitops-fight",
    "person-edits",
    "start-in-restart",
)
# Faults on one resource never overlap: one kill at a time, one control-plane restart at a time, ...
RESOURCES = {
    "kill-leader": ("operator",),
    "kill-follower": ("operator",),
    "apiserver-restart": ("control-plane",),
    "etcd-restart": ("control-plane",),
    "prometheus-stop": ("prometheus",),
    "api-latency": ("api-proxy",),
    "api-reset": ("api-proxy",),
    "api-blackhole": ("api-proxy",),
    "prom-latency": ("prom-proxy",),
    "prom-reset": ("prom-proxy",),
    "prom-blackhole": ("prom-proxy",),
    "gitops-fight": ("gitops",),
    "person-edits": ("person",),
    "start-in-restart": ("operator", "control-plane"),
}
REQUEST_TIMEOUT = 10  # seconds, for every call the scenario makes to the API server
OVERRUN = 60.0  # seconds an --each-once schedule may run past --duration to inject every kind once
JSON_PATCH = "application/json-patch+json"


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3s")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


class Skipped(Exception):
    """A fault that cannot be injected now (e.g. no leader to kill): not counted as injected."""


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the objects --------------------------------------------------------------------------------------


@dataclass
class Member:
    """One Rollout of the run and its service."""

    ns: str
    name: str
    kind: str  # healthy, failing, no-traffic, invalid
    stable: str = "v1"
    canary: str = "v2"
    fail_step: int | None = None  # failing kind: the step index at whose weight the canary starts failing
    injected: bool = False
    ended_at: float | None = None  # when the current release was seen to end
    pause: float = 0.0
    releases: int = 1

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"


def marker(actor: str, seq: int) -> dict[str, str]:
    return {MARKERS[actor]: str(seq)}


def destination_rule(m: Member, seq: int) -> dict[str, Any]:
    subsets = [{"name": v, "labels": {"app": m.name, "version": v}} for v in (*VERSIONS, "beta")]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": m.name, "namespace": m.ns, "annotations": marker("driver", seq)},
        "spec": {"host": m.name, "subsets": subsets},
    }


def vs_spec(m: Member, stable: str) -> dict[str, Any]:
    """The VirtualService as its source ("Git") has it: the primary route all on `stable`."""
    return {
        "hosts": [m.name],
        "http": [
            {
                "name": "beta",
                "match": [{"headers": {"user-group": {"exact": "beta"}}}],
                "route": [{"destination": {"host": m.name, "subset": "beta"}}],
            },
            {
                "name": "primary",
                "route": [{"destination": {"host": m.name, "subset": stable, "port": {"number": 8080}}, "weight": 100}],
                "timeout": "5s",
                "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure"},
            },
        ],
    }


def virtual_service(m: Member, seq: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": m.name,
            "namespace": m.ns,
            "labels": {"team": "chaos"},
            "annotations": marker("driver", seq),
        },
        "spec": vs_spec(m, m.stable),
    }


def rollout(m: Member, args: argparse.Namespace, seq: int) -> dict[str, Any]:
    analysis = {
        "interval": args.hold,
        "checkEvery": args.check_every,
        "minRequests": args.min_requests,
        "failureLimit": args.failure_limit,
        "maxNoData": "20s" if m.kind == "no-traffic" else args.max_no_data,
        "successRate": {"min": 95},
        "latency": {"quantile": 0.99, "maxMs": 1000},
    }
    spec: dict[str, Any] = {
        "virtualService": {"name": m.name, "routes": ["primary"]},
        "stable": {"host": m.name, "subset": m.stable},
        "canary": {"host": m.name, "subset": m.canary},
        "analysis": analysis,
    }
    if m.kind == "invalid":
        # Two ways to be refused by the operator (the CRD accepts both): a subset the DestinationRule lacks,
        # a route the VirtualService does not have.
        if int(m.name.rsplit("-", 1)[1]) % 2:
            spec["canary"] = {"host": m.name, "subset": "v9"}
        else:
            spec["virtualService"] = {"name": m.name, "routes": ["main"]}
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": m.name, "namespace": m.ns, "annotations": marker("driver", seq)},
        "spec": spec,
    }


def plan_members(args: argparse.Namespace, rng: random.Random) -> list[Member]:
    """40 % healthy, 30 % failing, 15 % without traffic, 15 % invalid (at least one of each), shuffled, 25 a namespace."""
    count = args.rollouts
    shares = {"failing": 0.30, "no-traffic": 0.15, "invalid": 0.15}
    kinds = [kind for kind, share in shares.items() for _ in range(max(1, round(count * share)))]
    kinds = ["healthy"] * max(1, count - len(kinds)) + kinds
    rng.shuffle(kinds)
    members = [Member(ns=f"chaos-{i // 25}", name=f"svc-{i}", kind=kind) for i, kind in enumerate(kinds[:count])]
    for m in members:
        m.fail_step = rng.randrange(3) if m.kind == "failing" else None
    return members


# --- the operator replicas ---------------------------------------------------------------------------------


@dataclass
class Replica:
    slot: int
    argv: list[str]
    kubeconfig: Path
    log: Path
    health_port: int
    metrics_port: int
    procs: Processes
    restarts: int = 0
    child: Child | None = None
    held: bool = False  # a kill fault holds it down: the kubelet below leaves it to the fault
    exits: list[float] = field(default_factory=list)  # when it exited on its own (monotonic)

    @property
    def identity(self) -> str:
        return f"chaos-operator-{self.slot}-{self.restarts}"

    def start(self) -> None:
        env = {"KUBECONFIG": str(self.kubeconfig), "POD_NAME": self.identity}
        if self.child is None:
            self.child = Child(f"operator-{self.slot}", self.argv, self.log, env=env, own_session=True)
            self.procs.started.append(self.child)
        self.child.env = env
        self.child.start()

    def kill(self) -> None:
        assert self.child is not None
        self.held = True
        self.child.kill()
        self.restarts += 1

    def start_again(self) -> None:
        if self.child is None or not self.child.alive():  # a kill fault and the kubelet may both come here
            self.start()
        self.held = False

    def exited_on_its_own(self) -> bool:
        return not self.held and self.child is not None and self.child.process is not None and not self.child.alive()

    def backoff(self) -> float:
        """The kubelet's restart delay for the container (CrashLoopBackOff): 10 s, doubling up to 300 s, for
        the exits of the last 10 minutes."""
        recent = [t for t in self.exits if time.monotonic() - t < 600]
        return min(10.0 * 2.0 ** (len(recent) - 1), 300.0)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str) -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    info: devstack.StackInfo
    workdir: Path
    procs: Processes
    rng: random.Random
    members: list[Member] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    proxy: toxiproxy.Toxiproxy | None = None
    history: History | None = None
    meshsims: list[Any] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    again: list[str] = field(default_factory=list)  # --short: faults skipped for now, to try again
    injections: list[Injection] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # VS key -> stable in "Git"
    advised: list[str] = field(default_factory=list)  # VS keys under the advised GitOps actor
    counts: Counter[str] = field(default_factory=Counter)
    stale: dict[str, float] = field(default_factory=dict)  # VS key -> since when a meshsim routes by an old copy
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _seq: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seq(self) -> int:
        with self._lock:
            return next(self._seq) + 1

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.info.kubeconfig))

    # set-up

    def setup(self) -> None:
        args = self.args
        api = self.api()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.members = plan_members(args, self.rng)
        namespaces = sorted({m.ns for m in self.members})
        for ns in [*namespaces, LEASE_NAMESPACE]:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.history = History(self.info.etcd_url, set(namespaces), History.current_revision(self.info.etcd_url))
        self.history.start()
        for m in self.members:
            custom.create_namespaced_custom_object(*ISTIO, m.ns, "destinationrules", destination_rule(m, self.seq()))
            custom.create_namespaced_custom_object(*ISTIO, m.ns, "virtualservices", virtual_service(m, self.seq()))
            self.sources[m.key] = m.stable
        traffic = [m for m in self.members if m.kind in ("healthy", "failing", "invalid")]
        self.advised = [m.key for m in self.members if self.rng.random() < 0.2]
        self.start_meshsims(namespaces, traffic)
        self.start_proxies_and_operators(namespaces)
        for m in self.members:
            custom.create_namespaced_custom_object(*COALMINE, m.ns, "rollouts", rollout(m, args, self.seq()))
        log(
            f"{len(self.members)} Rollouts created: "
            + ", ".join(f"{k} {v}" for k, v in Counter(m.kind for m in self.members).items())
        )

    def start_meshsims(self, namespaces: list[str], traffic: list[Member]) -> None:
        # One a namespace (25 services): meshsim renders every series on each scrape, and a bigger one
        # misses the 1 s scrape deadline on a busy machine (Prometheus then has no data for the checks).
        count = len(namespaces)
        for k in range(count):
            mine = namespaces[k::count]
            services = [
                {
                    "namespace": m.ns,
                    "host": m.name,
                    "rps": self.args.failing_rps if m.kind == "failing" else self.args.rps,
                }
                for m in traffic
                if m.ns in mine
            ]
            cfg = self.workdir / f"meshsim-{k}.json"
            cfg.write_text(json.dumps({"namespaces": mine, "services": services}))
            self.meshsims.append(
                start_meshsim(
                    self.procs, self.info, self.workdir, f"chaos-meshsim-{k}", args=["--config", str(cfg)], seed=k
                )
            )
        wait_scraped(self.info, [m.job for m in self.meshsims], timeout=120)

    def meshsim_for(self, ns: str) -> Any:
        namespaces = sorted({m.ns for m in self.members})
        return self.meshsims[namespaces.index(ns) % len(self.meshsims)]

    def start_proxies_and_operators(self, namespaces: list[str]) -> None:
        _, self.proxy = toxiproxy.start(self.procs, self.workdir, self.args.seed)
        kubeconfig = yaml.safe_load(self.info.kubeconfig.read_text())
        api_port, prom_port = self.info.ports["kube-apiserver"], self.info.ports["prometheus"]
        for slot in range(2):
            api_listen = self.proxy.create(f"api-{slot}", f"127.0.0.1:{api_port}")
            prom_listen = self.proxy.create(f"prom-{slot}", f"127.0.0.1:{prom_port}")
            mine = json.loads(json.dumps(kubeconfig))
            mine["clusters"][0]["cluster"]["server"] = f"https://{api_listen}"  # TLS through the TCP proxy
            path = self.workdir / f"kubeconfig-{slot}"
            path.write_text(yaml.safe_dump(mine))
            path.chmod(0o600)
            health, metrics = free_port(), free_port()
            argv = [sys.executable, "-m", "coalmine", "run"]
            for ns in namespaces:
                argv += ["--namespace", ns]
            argv += ["--prometheus-url", f"http://{prom_listen}", "--scrape-interval", self.info.scrape_interval]
            argv += ["--health-port", str(health), "--metrics-port", str(metrics), "--listen-address", "127.0.0.1"]
            argv += ["--leader-election", "--lease-namespace", LEASE_NAMESPACE]
            argv += ["--lease-duration", self.args.lease_duration, "--renew-deadline", self.args.renew_deadline]
            argv += ["--retry-period", self.args.retry_period]
            replica = Replica(slot, argv, path, self.workdir / f"operator-{slot}.log", health, metrics, self.procs)
            replica.start()
            self.replicas.append(replica)
        deadline = time.monotonic() + 120
        while self.holder() is None:
            assert time.monotonic() < deadline, "no replica took the Lease in 120 s"
            time.sleep(0.2)
        leader = self.holder()
        log(f"operators up, {leader.identity if leader else 'nobody'} leads")

    def kubelet(self, until: Callable[[], bool]) -> None:
        """Start again a replica that exited on its own, as the kubelet restarts a Deployment's container: with
        the same pod name (so the same Lease identity), after the CrashLoopBackOff delay."""
        while not until():
            for replica in self.replicas:
                if not replica.exited_on_its_own():
                    continue
                assert replica.child is not None
                assert replica.child.process is not None
                code = replica.child.process.returncode
                replica.exits.append(time.monotonic())
                delay = replica.backoff()
                self.counts["replica exits (restarted as the kubelet would)"] += 1
                log(f"{replica.identity} exited with code {code}: starting it again in {delay:.0f} s")
                replica.held = True
                timer = threading.Timer(delay, self._start_again, args=(replica,))
                timer.daemon = True
                timer.start()
            time.sleep(0.5)

    def _start_again(self, replica: Replica) -> None:
        if not self.stop.is_set():
            replica.start_again()

    # the harness watching itself: is the simulated traffic what the routes say?

    def sample_harness(self) -> None:
        """Prometheus's scrapes of meshsim (failed scrapes are checks without data), and whether each meshsim
        routes by the VirtualServices as etcd has them now (a stale one sends traffic the routes no longer do)."""
        assert self.history is not None
        try:
            answer = httpx.get(
                f"{self.info.prometheus_url}/api/v1/query", params={"query": 'up{job=~"chaos-meshsim.*"}'}, timeout=5
            ).json()
            for series in answer["data"]["result"]:
                self.counts["meshsim scrapes sampled"] += 1
                self.counts["meshsim scrapes failed"] += series["value"][1] == "0"
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # Prometheus stopped by a fault
        for meshsim in self.meshsims:
            try:
                seen = meshsim.client.mesh().get("virtualservices", {})
            except httpx.HTTPError:
                continue
            for key, rv in seen.items():
                current = self.history.revision("virtualservices", key)
                self.counts["meshsim VirtualServices sampled"] += 1
                if current is not None and int(rv) < current:
                    self.stale.setdefault(key, time.time())
                else:
                    self.stale.pop(key, None)
        lagging = [k for k, since in self.stale.items() if time.time() - since > 10]
        self.counts["meshsim VirtualServices stale > 10 s"] += len(lagging)

    # reads

    def holder(self) -> Replica | None:
        try:
            lease = client.CoordinationV1Api(self.api()).read_namespaced_lease(
                "coalmine", LEASE_NAMESPACE, _request_timeout=REQUEST_TIMEOUT
            )
        except (ApiException, OSError, Exception):
            return None
        who = (lease.spec.holder_identity or "") if lease.spec else ""
        return next((r for r in self.replicas if r.identity == who), None)

    # the scenario: releases and failing canaries

    def drive(self, releases_until: float) -> None:
        api = self.api()
        custom = client.CustomObjectsApi(api)
        assert self.history is not None
        while not self.stop.is_set():
            now = time.time()
            for m in self.members:
                if m.kind == "invalid":
                    continue
                obj = self.history.get("rollouts", m.key)
                if obj is None:
                    continue
                try:
                    self.drive_one(m, obj, now, releases_until, custom)
                except Exception as exc:  # the API server restarting: the next round tries again
                    self.counts["scenario call failed"] += 1
                    if not isinstance(exc, (ApiException, OSError)) and "urllib3" not in type(exc).__module__:
                        self.errors.append(f"{m.key}: {traceback.format_exc()}")
            self.stop.wait(0.25)

    def drive_one(self, m: Member, obj: dict[str, Any], now: float, releases_until: float, custom: Any) -> None:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        generation = int(obj["metadata"].get("generation") or 0)
        current = (spec.get("stable") or {}).get("subset") == m.stable and (spec.get("canary") or {}).get(
            "subset"
        ) == m.canary
        if not current:
            self.release_spec(m, custom)  # a release whose patch did not land: send it again
            return
        started = (
            status.get("observedGeneration") == generation and (status.get("canary") or {}).get("subset") == m.canary
        )
        phase = status.get("phase")
        if (
            m.fail_step is not None
            and not m.injected
            and started
            and phase == "Progressing"
            and status.get("canaryWeight") == [10, 30, 50, 100][m.fail_step]
        ):
            self.meshsim_for(m.ns).client.set_destination(m.ns, m.name, m.canary, error_ratio=0.5)
            m.injected = True
            weight, rps = int(status["canaryWeight"]), self.args.failing_rps  # the failing step's, checked above
            self.injections.append(Injection(m.key, generation, m.canary, time.time(), weight, rps))
            self.counts["failing canaries"] += 1
        if started and phase in ("Succeeded", "RolledBack"):
            if m.ended_at is None:
                m.ended_at, m.pause = now, self.rng.uniform(1.0, 5.0)
            elif now >= m.ended_at + m.pause and now < releases_until:
                self.next_release(m, promoted=phase == "Succeeded", custom=custom)

    def next_release(self, m: Member, *, promoted: bool, custom: Any) -> None:
        stable = m.canary if promoted else m.stable
        following = VERSIONS[(VERSIONS.index(m.canary) + 1) % len(VERSIONS)]
        if following == stable:
            following = VERSIONS[(VERSIONS.index(following) + 1) % len(VERSIONS)]
        mesh = self.meshsim_for(m.ns).client
        if m.kind != "no-traffic":
            with contextlib.suppress(httpx.HTTPStatusError):  # never configured: healthy already
                mesh.reset_destination(m.ns, m.name, following)
        m.stable, m.canary = stable, following
        m.fail_step = self.rng.randrange(3) if m.kind == "failing" else None
        m.injected, m.ended_at = False, None
        m.releases += 1
        self.sources[m.key] = stable  # "Git" follows the release: its VirtualService routes to the new stable
        self.release_spec(m, custom)

    def release_spec(self, m: Member, custom: Any) -> None:
        body = {
            "metadata": {"annotations": marker("driver", self.seq())},
            "spec": {"stable": {"host": m.name, "subset": m.stable}, "canary": {"host": m.name, "subset": m.canary}},
        }
        custom.patch_namespaced_custom_object(
            *COALMINE, m.ns, "rollouts", m.name, body, _request_timeout=REQUEST_TIMEOUT
        )
        self.counts["releases"] += 1

    # actors

    def gitops_sync(self, key: str, mode: str, custom: Any) -> None:
        """Re-apply the VirtualService from its source when it drifted (mode `advised`: the owned route's
        destinations as they are live, i.e. ignored; `naive`: the source whole)."""
        ns, name = key.split("/")
        member = next(m for m in self.members if m.key == key)
        live = custom.get_namespaced_custom_object(
            *ISTIO, ns, "virtualservices", name, _request_timeout=REQUEST_TIMEOUT
        )
        desired = vs_spec(member, self.sources[key])
        if mode == "advised":
            for i, route in enumerate(desired["http"]):
                live_route = next((r for r in live["spec"].get("http") or [] if r.get("name") == route["name"]), None)
                if route["name"] == "primary" and live_route is not None:
                    desired["http"][i]["route"] = live_route.get("route")
        labels = {"team": "chaos"}
        live_labels = live["metadata"].get("labels") or {}
        # Drift is what differs from Git: labels others added (the person's) are not Git's business, and a
        # server-side apply would not remove them anyway.
        if live["spec"] == desired and all(live_labels.get(k) == v for k, v in labels.items()):
            return
        body = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": {MARKERS["gitops"]: f"{mode}-{self.seq()}"},
            },
            "spec": desired,
        }
        custom.patch_namespaced_custom_object(
            *ISTIO,
            ns,
            "virtualservices",
            name,
            body,
            field_manager=f"chaos-gitops-{mode}",
            force=True,
            _content_type="application/apply-patch+yaml",
            _request_timeout=REQUEST_TIMEOUT,
        )
        self.counts[f"gitops {mode} syncs"] += 1

    def drifting(self) -> list[str]:
        """The VirtualServices whose spec differs from their source now (none known when the API server does
        not answer: one LIST, so a fault on the API server delays the schedule by one request at most)."""
        custom = client.CustomObjectsApi(self.api())
        try:
            listed = custom.list_cluster_custom_object(*ISTIO, "virtualservices", _request_timeout=REQUEST_TIMEOUT)
        except Exception:
            return []
        live = {f"{vs['metadata']['namespace']}/{vs['metadata']['name']}": vs["spec"] for vs in listed["items"]}
        return [m.key for m in self.members if m.key in live and live[m.key] != vs_spec(m, self.sources[m.key])]

    def gitops_loop(self, keys: list[str], mode: str, until: Callable[[], bool], period: float) -> None:
        custom = client.CustomObjectsApi(self.api())
        while not until():
            for key in keys:
                if until():
                    return
                try:
                    self.gitops_sync(key, mode, custom)
                except Exception:
                    self.counts[f"gitops {mode} failed calls"] += 1
            self.stop.wait(period)

    def person_edit(self, custom: Any) -> None:
        m = self.rng.choice(self.members)
        seq = self.seq()
        note = {"op": "add", "path": "/metadata/annotations/" + MARKERS["person"].replace("/", "~1"), "value": str(seq)}
        choice = self.rng.randrange(5)
        if choice == 4:
            ops = [
                note,
                {
                    "op": "add",
                    "path": "/spec/trafficPolicy",
                    "value": {"connectionPool": {"tcp": {"maxConnections": self.rng.randint(10, 1000)}}},
                },
            ]
            custom.patch_namespaced_custom_object(
                *ISTIO,
                m.ns,
                "destinationrules",
                m.name,
                ops,
                _content_type=JSON_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
            self.counts["person DestinationRule edits"] += 1
            return
        ops = [
            [{"op": "add", "path": "/spec/http/1/timeout", "value": f"{self.rng.randint(3, 9)}s"}],
            [
                {
                    "op": "add",
                    "path": "/spec/http/1/retries",
                    "value": {"attempts": self.rng.randint(1, 5), "perTryTimeout": "1s"},
                }
            ],
            [
                {
                    "op": "add",
                    "path": "/spec/http/0/match",
                    "value": [{"headers": {"user-group": {"exact": f"beta-{seq}"}}}],
                }
            ],
            [{"op": "add", "path": "/metadata/labels/edited", "value": str(seq)}],
        ][choice]
        custom.patch_namespaced_custom_object(
            *ISTIO,
            m.ns,
            "virtualservices",
            m.name,
            [note, *ops],
            _content_type=JSON_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )
        self.counts["person VirtualService edits"] += 1

    # faults: each injects, waits, removes, and returns when its effect is over (the Fault's end)

    def fault(self, kind: str) -> tuple[float, float, str]:
        rng = self.rng
        if kind in ("kill-leader", "kill-follower"):
            return self.kill(leader=kind == "kill-leader")
        if kind in ("apiserver-restart", "etcd-restart"):
            name = "kube-apiserver" if kind == "apiserver-restart" else "etcd"
            down = rng.uniform(0.0, 5.0)
            start = time.time()
            devstack.restart_process(self.info.state_dir, name, kill=True, down_for=down)
            self.wait_apiserver()
            return start, time.time(), f"SIGKILL, down {down:.1f} s"
        if kind == "prometheus-stop":
            down = rng.uniform(*self.args.prometheus_down)
            start = time.time()
            devstack.stop_process(self.info.state_dir, "prometheus")
            self.stop.wait(down)
            devstack.start_process(self.info.state_dir, "prometheus")
            return start, time.time(), f"stopped {down:.0f} s"
        if kind.startswith(("api-", "prom-")):
            return self.toxic(kind)
        if kind == "start-in-restart":
            return self.start_in_restart()
        if kind == "gitops-fight":
            # A naive sync fights the operator only where the cluster differs from Git, i.e. where the operator
            # moved traffic: it picks among those (any when none does), or the fault may write nothing at all.
            pool = self.drifting() or [m.key for m in self.members]
            keys = [key for key in pool if rng.random() < 0.15] or [rng.choice(pool)]
            length = rng.uniform(*self.args.actor_for)
            start = time.time()
            self.gitops_loop(keys, "naive", lambda: time.time() > start + length or self.stop.is_set(), 2.0)
            return start, time.time(), f"{len(keys)} VirtualServices re-applied whole every ~2 s"
        if kind == "person-edits":
            length = rng.uniform(*self.args.actor_for)
            custom = client.CustomObjectsApi(self.api())
            start = time.time()
            edits = 0
            while time.time() < start + length and not self.stop.is_set():
                try:
                    self.person_edit(custom)
                    edits += 1
                except Exception:
                    self.counts["person failed calls"] += 1
                self.stop.wait(rng.uniform(0.1, 0.5))
            return start, time.time(), f"{edits} edits"
        raise ValueError(kind)

    def kill(self, *, leader: bool) -> tuple[float, float, str]:
        holder = self.holder()
        if holder is None:
            raise Skipped("nobody leads at the moment (a failover is under way): no kill now")
        victim = holder if leader else next(r for r in self.replicas if r is not holder)
        start = time.time()
        old_identity = victim.identity
        victim.kill()
        if leader:
            deadline = time.monotonic() + 180
            while True:  # the fault lasts until the survivor has taken over
                current = self.holder()
                if current is not None and current.identity != old_identity:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        else:
            self.stop.wait(self.rng.uniform(1.0, 8.0))
        end = time.time()
        victim.start_again()
        deadline = time.monotonic() + 60
        while not victim.healthy() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not leader:
            end = time.time()
        return start, end, f"SIGKILL {old_identity}"

    def start_in_restart(self) -> tuple[float, float, str]:
        """The follower starts while kube-apiserver restarts (it reads API discovery as the server comes up),
        then the leader is killed and held down until that replica leads: a replica that resolved its watches
        from a partial discovery and led anyway would hold the Lease and do nothing (found by --seed 7)."""
        holder = self.holder()
        if holder is None:
            raise Skipped("nobody leads at the moment (a failover is under way)")
        fresh = next(r for r in self.replicas if r is not holder)
        start = time.time()
        fresh.kill()
        devstack.stop_process(self.info.state_dir, "kube-apiserver", kill=True)
        fresh.start_again()
        lead = self.rng.uniform(0.0, 4.0)
        self.stop.wait(lead)
        devstack.start_process(self.info.state_dir, "kube-apiserver")
        self.wait_apiserver()
        old_identity = holder.identity
        holder.kill()
        deadline = time.monotonic() + 180
        while self.holder() is not fresh and time.monotonic() < deadline:
            time.sleep(0.2)
        end = time.time()
        holder.start_again()
        took = "took" if self.holder() is fresh else "did not take"
        return (
            start,
            end,
            f"{fresh.identity} started {lead:.1f} s before the API server; it {took} over from {old_identity}",
        )

    def toxic(self, kind: str) -> tuple[float, float, str]:
        assert self.proxy is not None
        rng = self.rng
        side, what = kind.split("-", 1)
        holder = self.holder()
        target = rng.choice(["leader", "follower", "both"]) if holder is not None else "both"
        slots = [r.slot for r in self.replicas]
        if target != "both" and holder is not None:
            slots = [holder.slot] if target == "leader" else [r.slot for r in self.replicas if r is not holder]
        proxies = [f"{side}-{slot}" for slot in slots]
        name = f"chaos-{self.seq()}"
        if what == "latency":
            latency = rng.randint(200, 2000 if side == "api" else 4000)
            toxic: dict[str, Any] = {"kind": "latency", "latency": latency, "jitter": latency // 4}
            detail = f"{latency} ms"
        elif what == "reset":
            toxic = {
                "kind": "reset_peer",
                "timeout": 0,
                "stream": "upstream",
                "toxicity": round(rng.uniform(0.5, 1.0), 2),
            }
            detail = f"resets, toxicity {toxic['toxicity']}"
        else:
            toxic = {"kind": "timeout", "timeout": 0, "stream": "upstream"}
            detail = "blackhole"
        length = rng.uniform(*(self.args.blackhole_for if what != "latency" else self.args.actor_for))
        kind_name = toxic.pop("kind")
        stream = toxic.pop("stream", "downstream")
        toxicity = toxic.pop("toxicity", 1.0)
        start = time.time()
        for proxy in proxies:
            self.proxy.add(proxy, name, kind_name, stream=stream, toxicity=toxicity, **toxic)
        self.stop.wait(length)
        for proxy in proxies:
            self.proxy.remove(proxy, name)
        return start, time.time(), f"{detail} on {target} ({', '.join(proxies)}) for {length:.0f} s"

    def wait_apiserver(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.info.apiserver_url}/readyz"
        headers = {"Authorization": f"Bearer {self.info.admin_token}"}
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, headers=headers, verify=str(self.info.ca_file), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API server is not ready again after 120 s")

    def schedule(self, until: float) -> None:
        """Start faults on a seeded random schedule until `until`, each kind once before any twice; each in its own
        thread; one per resource."""
        rng = self.rng
        busy: dict[str, threading.Thread] = {}
        threads: list[threading.Thread] = []
        order = list(KINDS) if self.args.each_once else []
        if order:
            rng.shuffle(order)
        kinds = [k for k in KINDS if k in self.args.kinds]

        def free(kind: str) -> bool:
            return not any(r in busy and busy[r].is_alive() for r in RESOURCES[kind])

        # Each kind once: a kind skipped (nobody leads during a failover) or waiting for a busy resource when the
        # window closes still gets its turn, up to OVERRUN later (the short form once ended without kill-follower).
        overrun = until + (OVERRUN if self.args.each_once else 0.0)
        while not self.stop.is_set() and time.time() < overrun:
            if time.time() >= until and not (order or self.again or any(t.is_alive() for t in threads)):
                break
            if self.args.each_once:
                with self._lock:  # a fault skipped for now (nobody leads during a failover) is tried again
                    order += self.again
                    self.again.clear()
                if not order:
                    if not any(t.is_alive() for t in threads):
                        break
                    self.stop.wait(0.5)
                    continue
                wanted = [k for k in order if k in kinds and free(k)]
                kind = wanted[0] if wanted else None
                if kind is not None:
                    order.remove(kind)
                order = [k for k in order if k in kinds]
            else:
                ready = [k for k in kinds if free(k)]
                with self._lock:  # every kind at least once: those not yet injected are drawn first
                    done = {f.kind for f in self.faults}
                unseen = [k for k in ready if k not in done]  # a skipped one stays unseen: tried again
                kind = rng.choice(unseen or ready) if ready else None
            if kind is not None:
                thread = threading.Thread(target=self.run_fault, args=(kind,), daemon=True)
                busy.update(dict.fromkeys(RESOURCES[kind], thread))
                threads.append(thread)
                thread.start()
            self.stop.wait(rng.expovariate(1.0 / self.args.fault_gap))
        for thread in threads:
            thread.join()

    def run_fault(self, kind: str) -> None:
        try:
            start, end, detail = self.fault(kind)
        except Skipped as skipped:
            self.counts[f"{kind} skipped"] += 1
            log(f"{kind} skipped: {skipped}" + (" (tried again later)" if self.args.each_once else ""))
            if self.args.each_once:
                with self._lock:
                    self.again.append(kind)
            return
        except Exception:
            self.errors.append(f"fault {kind}: {traceback.format_exc()}")
            return
        with self._lock:
            self.faults.append(Fault(kind, start, end, detail))
        log(f"{kind}: {detail}, {end - start:.1f} s")


# --- the report -------------------------------------------------------------------------------------------


def scan_logs(paths: list[Path]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        counts["tracebacks"] += text.count("Traceback (most recent call last)")
        counts["ticks failed"] += len(re.findall(r"tick of \S+ failed", text))
        counts["status writes refused (409)"] += text.count("status not written")
        counts["leadership changes"] += text.count(" now leads ")
        counts["exits: watches incomplete at start"] += text.count("the watches do not cover")
    return dict(counts)


def quiet_moments(faults: list[Fault], start: float, end: float, every: float = 7.0, calm: float = 10.0) -> list[float]:
    """Moments no fault touched in the `calm` seconds before: the "no fault" row's floor."""
    moments = []
    t = start + calm
    while t < end:
        if not any(f.start <= t and f.end >= t - calm for f in faults):
            moments.append(t)
        t += every
    return moments


def table(
    faults: list[Fault], found: Findings, recovery: list[float | None], baseline: list[float | None], margin: float
) -> list[list[str]]:
    """fault kind x times injected x violations x recovery p50/p99. Recovery is measured on the faults that
    nothing else disturbed (see chaos_checker.clean); the last column says on how many."""
    violations = by_kind(faults, found.violations, margin)
    alone = clean(faults, recovery)
    rows = [["fault", "injected", "violations", "recovery p50", "recovery p99", "recovery measured on"]]

    def fmt(values: list[float]) -> list[str]:
        if not values:
            return ["-", "-"]
        return [f"{percentile(values, 50):.1f} s", f"{percentile(values, 99):.1f} s"]

    for kind in KINDS:
        mine = [i for i, f in enumerate(faults) if f.kind == kind]
        times = [t for i in mine if alone[i] and (t := recovery[i]) is not None]
        rows.append([kind, str(len(mine)), str(len(violations.get(kind, []))), *fmt(times), f"{len(times)} alone"])
    quiet = [t for t in baseline if t is not None]
    rows.append(
        ["(no fault)", "-", str(len(violations.get("(no fault)", []))), *fmt(quiet), f"{len(quiet)} quiet moments"]
    )
    times = [t for i, t in enumerate(recovery) if alone[i] and t is not None]
    rows.append(["**all**", str(len(faults)), f"**{len(found.violations)}**", *fmt(times), f"{len(times)} alone"])
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--duration", type=seconds, default=600.0, help="seconds during which faults start (600)")
    parser.add_argument("--tail", type=seconds, default=90.0, help="seconds after that, with no fault and no release")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-gap", type=seconds, default=15.0, help="mean seconds between fault starts (15)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to inject (comma-separated)")
    parser.add_argument("--each-once", action="store_true", help="each kind once, in a seeded order")
    parser.add_argument("--short", action="store_true", help="the short form: 12 Rollouts, each fault once, ~3 min")
    parser.add_argument("--hold", default="12s")
    parser.add_argument("--check-every", default="3s")
    parser.add_argument("--min-requests", type=int, default=3)
    parser.add_argument("--failure-limit", type=int, default=2)
    parser.add_argument("--max-no-data", default="1m", help="maxNoData of the Rollouts with traffic (1m)")
    parser.add_argument("--rps", type=float, default=10.0, help="requests/s to each healthy service (10)")
    parser.add_argument(
        "--failing-rps",
        type=float,
        default=25.0,
        help="requests/s to each failing service (25): enough that minRequests is there within a scrape at 10 %%, "
        "as README's rollback bound presumes",
    )
    parser.add_argument(
        "--scrape-interval",
        default="2s",
        help="Prometheus's (2s: at 1 s, scrapes of meshsim's 100 services time out on a busy 2-core machine)",
    )
    parser.add_argument("--lease-duration", default="15s")
    parser.add_argument("--renew-deadline", default="10s")
    parser.add_argument("--retry-period", default="2s")
    parser.add_argument(
        "--stuck-bound", type=seconds, default=None, help="default max(hold, maxNoData) + 4 checkEvery + 10 s"
    )
    parser.add_argument(
        "--bound-slack",
        type=seconds,
        default=0.0,
        help="seconds added to README's rollback bound (0; the test's short form adds some for a loaded CI machine)",
    )
    parser.add_argument("--output", type=Path, default=Path("chaos-output"))
    parser.add_argument("--state-dir", type=Path, help="a running devstack to use (default: start one)")
    parser.add_argument(
        "--judge", type=Path, metavar="DIR", help="judge a finished run again from its --output folder (no stack)"
    )
    args = parser.parse_args(argv)
    args.prometheus_down, args.actor_for, args.blackhole_for = (10.0, 90.0), (10.0, 60.0), (10.0, 40.0)
    if args.short:
        args.rollouts, args.duration, args.tail, args.each_once, args.fault_gap = 12, 80.0, 60.0, True, 4.0
        args.max_no_data = "30s"
        args.lease_duration, args.renew_deadline, args.retry_period = "4s", "3s", "1s"
        args.prometheus_down, args.actor_for, args.blackhole_for = (10.0, 15.0), (8.0, 15.0), (5.0, 10.0)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.judge is not None:
        data, writes = load(args.judge)
        return judge(args.judge, data, writes)
    rng = random.Random(args.seed)
    scrape, every = seconds(args.scrape_interval), seconds(args.check_every)
    rollback_bound = 2 * scrape + args.failure_limit * every + 2.0 + args.bound_slack
    stuck_bound = args.stuck_bound or max(seconds(args.hold), seconds(args.max_no_data)) + 4 * every + 10.0
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    with bench_stack("coalmine-chaos-", args.state_dir, args.scrape_interval) as (info, workdir, procs):
        run = Run(args, info, workdir, procs, rng)
        run.setup()
        assert run.history is not None
        begin = time.time()
        faults_until, end = begin + args.duration, begin + args.duration + args.tail
        threads = [
            threading.Thread(target=run.drive, args=(faults_until,), daemon=True),
            threading.Thread(target=run.schedule, args=(faults_until,), daemon=True),
            threading.Thread(
                target=run.gitops_loop,
                args=(run.advised, "advised", lambda: time.time() > end or run.stop.is_set(), 3.0),
                daemon=True,
            ),
            threading.Thread(target=run.kubelet, args=(run.stop.is_set,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        log(f"running {args.duration:.0f} s of faults and releases, then {args.tail:.0f} s of quiet")

        def quiet_until() -> float:
            """The tail's end: --tail after the last fault ended (an --each-once schedule may overrun its window)."""
            tail = float(args.tail)
            if threads[1].is_alive():
                return time.time() + tail
            return float(max([faults_until, *(f.end for f in run.faults)])) + tail

        try:
            while time.time() < max(end, quiet_until()):
                time.sleep(min(15.0, max(0.0, max(end, quiet_until()) - time.time())))
                run.sample_harness()
                phases = Counter(
                    (run.history.get("rollouts", m.key) or {}).get("status", {}).get("phase") for m in run.members
                )
                log(
                    f"t={time.time() - begin:4.0f}s phases {dict(phases)}; faults so far {len(run.faults)}; "
                    f"meshsim scrapes failed {run.counts['meshsim scrapes failed']}/"
                    f"{run.counts['meshsim scrapes sampled']}, stale VirtualServices {len(run.stale)}"
                )
        finally:
            run.stop.set()
            threads[1].join(timeout=300)  # the scheduler waits for the faults in flight to undo themselves
            for thread in threads:
                thread.join(timeout=30)
        stopped_at = time.time()
        time.sleep(2.0)
        run.history.stop()
        logs = [r.log for r in run.replicas]
        reconcile_errors = [r.metric("coalmine_reconcile_errors_total") for r in run.replicas]
        log_counts = scan_logs(logs)
        for path in [*logs, *workdir.glob("*.log")]:
            (output / "logs").mkdir(exist_ok=True)
            shutil.copy(path, output / "logs" / path.name)

    writes = run.history.sorted_writes()
    data = {
        "command": "bench/chaos.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "members": {m.key: m.kind for m in run.members},
        "begin": begin,
        "faults_until": faults_until,
        "stopped_at": stopped_at,
        "bounds": {"rollback": rollback_bound, "stuck": stuck_bound},
        "seconds": {"faults": args.duration, "tail": args.tail, "run": round(stopped_at - begin, 1)},
        "faults": [vars(f) for f in run.faults],
        "injections": [vars(i) for i in run.injections],
        "scenario": dict(run.counts),
        "scenario_errors": run.errors,
        "operator_logs": log_counts,
        "reconcile_errors_total_of_live_replicas": reconcile_errors,
        "history": {
            "writes": len(writes),
            "watch_reconnects": run.history.reconnects,
            "compacted": run.history.compacted,
        },
    }
    (output / "run.json").write_text(json.dumps(data, indent=1, default=str))
    with gzip.open(output / "history.jsonl.gz", "wt") as out:
        for w in writes:
            out.write(json.dumps([w.revision, w.at, w.plural, w.namespace, w.name, w.obj]) + "\n")
    return judge(output, data, writes)


def load(output: Path) -> tuple[dict[str, Any], list[Write]]:
    """A finished run's record, as main() saved it (`--judge DIR` judges it again)."""
    data = json.loads((output / "run.json").read_text())
    with gzip.open(output / "history.jsonl.gz", "rt") as lines:
        writes = [Write(*json.loads(line)) for line in lines]
    return data, writes


def judge(output: Path, data: dict[str, Any], writes: list[Write]) -> int:
    """Replay the run's writes through the checker; print and write the table and the findings."""
    faults = [Fault(**f) for f in data["faults"]]
    injections = [Injection(**i) for i in data["injections"]]
    bounds = data["bounds"]
    checker = Checker(
        writes,
        faults,
        injections,
        rollback_bound=bounds["rollback"],
        stuck_bound=bounds["stuck"],
        run_end=data["stopped_at"],
    )
    found = checker.run()
    silent = {k for k, kind in data["members"].items() if kind == "no-traffic"}
    recovery = recovery_times(writes, [f.end for f in faults], horizon=180.0, no_data=silent)
    baseline = recovery_times(
        writes, quiet_moments(faults, data["begin"], data["faults_until"]), horizon=180.0, no_data=silent
    )
    rows = table(faults, found, recovery, baseline, margin=30.0)
    rollback = [t for _, t in found.rollback_seconds]
    summary = {
        "command": data["command"],
        "rollouts": Counter(data["members"].values()),
        "seconds": data["seconds"],
        "bounds": bounds,
        "violations_by_invariant": {i: sum(v.invariant == i for v in found.violations) for i in INVARIANTS},
        "judged": dict(found.judged),
        "failing_canaries": {
            "injected": len(injections),
            "rolled_back": len(rollback),
            "seconds_p50_p99_max": [
                percentile(rollback, 50),
                percentile(rollback, 99),
                max(rollback, default=math.nan),
            ],
        },
        "virtualservice_writes": dict(found.writes),
        "gitops_fight": dict(found.fight),
        "generations_ended": dict(found.outcomes),
        "scenario": data["scenario"],
        "operator_logs": data["operator_logs"],
        "reconcile_errors_total_of_live_replicas": data["reconcile_errors_total_of_live_replicas"],
        "history": data["history"],
        "faults": data["faults"],
        "recovery_seconds": recovery,
        "violations": [vars(v) for v in found.violations],
        "scenario_errors": data["scenario_errors"],
        "table": rows,
    }
    (output / "chaos-report.json").write_text(json.dumps(summary, indent=2, default=str))
    text = markdown(rows)
    (output / "chaos-table.md").write_text(text + "\n")
    print()
    print(text)
    print()
    for key in (
        "rollouts",
        "bounds",
        "violations_by_invariant",
        "judged",
        "failing_canaries",
        "virtualservice_writes",
        "gitops_fight",
        "generations_ended",
        "scenario",
        "operator_logs",
        "reconcile_errors_total_of_live_replicas",
        "history",
    ):
        print(f"{key}: {json.dumps(summary[key], default=str)}")
    for violation in found.violations[:30]:
        print(f"VIOLATION {violation.invariant} {violation.key} rev {violation.revision}: {violation.detail}")
    for error in data["scenario_errors"][:10]:
        print(f"SCENARIO ERROR {error}")
    print(f"report: {output / 'chaos-report.json'}, table: {output / 'chaos-table.md'}")
    return 1 if found.violations or data["scenario_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
