"""coalmine beside Flagger and Argo Rollouts: same stack, same traffic, same breakage, same thresholds.

Starts its own devstack (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok nodes,
Istio's validating webhook, Prometheus scraping every 1 s; or uses a running one: --state-dir), one
meshsim for every namespace, installs the peers' CRDs (from `make peers`, cached in
~/.cache/coalmine/peers) and runs each tool's controller as a process on this machine, one tool at a
time (the others are stopped). Each run has a namespace of its own with the tool's own objects for a
service `web` (150 rps from meshsim, same for all three):

  coalmine  Deployments web-v1/web-v2, Service web, DR web (subsets v1, v2), VS web (route `primary`
            to subset v1) and a Rollout stepping v2 10/30/50/100. Checks: coalmine's default queries
            (destination_service_name="web", destination_version="v2").
  flagger   Deployment web and a Canary (stepWeights 10/30/50); Flagger generates web-primary and the
            web/web-primary/web-canary Services, the DRs and the VS. Checks: Flagger's built-in
            request-success-rate and request-duration (destination_workload=~"web").
  argo      A Rollout web (canary, trafficRouting.istio on VS web route `primary` with the Services
            web-stable/web-canary; steps setWeight 10/30/50 with pauses) and a background
            AnalysisTemplate whose two queries are coalmine's default queries for the Service
            web-canary.

Same thresholds everywhere: success rate >= 99 %, p99 latency <= 500 ms, checks over a 10-s window.
Settings ("--settings", see PROFILES): `tight`, the tightest each tool's docs allow (the default), or
`default`, each tool's documented defaults (1-minute intervals: several minutes per run).

Scenarios ("--scenarios", in this order by default: 2,1,3):
  2  rollback: once the VS gives the canary 30 %, meshsim makes it answer 30 % 5xx; time from the
     break to the VS showing canary weight 0 (polled every 50 ms), --runs runs per tool;
  1  healthy release with equal 10-s holds: time from the release (the spec change) to done
     (coalmine Succeeded, Flagger Succeeded, Argo Healthy on the new revision), API writes by verb and
     resource (kube-apiserver's apiserver_request_total, deltas), Prometheus queries (its
     prometheus_http_requests_total for /api/v1/query and /api/v1/query_range);
  3  Prometheus stopped for 60 s once the canary has 30 %: what each tool's VS and phase do, and when;
  4  (only when asked) --n concurrent healthy releases in as many namespaces at 5 rps each (coalmine minRequests 2): time until
     the tool is ready for all, how many finish within --scale-limit s and how long each took, the
     controller's max RSS and mean CPU, API requests/s from all clients (minus the bench's own reads),
     the tool's writes/s and Prometheus queries/s.

  .venv/bin/python bench/peers.py [--runs 5] [--scenarios 2,1,3] [--tools coalmine,flagger,argo]
                                  [--output peers-output] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Processes,
    bench_stack,
    cpu_seconds,
    free_port,
    kube_env,
    percentile,
    proc_status,
    start_meshsim,
    wait_scraped,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.meshsim.client import MeshsimClient

FLAGGER_VERSION = os.environ.get("FLAGGER_VERSION", "v1.41.0")
ARGO_VERSION = os.environ.get("ARGO_ROLLOUTS_VERSION", "v1.10.1")
TOOLS = ("coalmine", "flagger", "argo")
RPS = 150.0
POLL = 0.05
MIN_SUCCESS, MAX_P99_MS = 99, 500
BREAK_ERROR_RATIO = 0.3
SCALE_RPS = 5.0  # per service in scenario 4; coalmine's minRequests is 2 there (as in bench/scale.py)
ISTIO = ("networking.istio.io", "v1")


@dataclass(frozen=True)
class Profile:
    """One set of settings for the three tools. Thresholds are the same in both; what changes is how
    often each checks, over which window, and how many failed checks roll back."""

    name: str
    hold: int  # seconds each of the 10/30/50 steps is held (Flagger: its analysis interval)
    window: str  # the checks' query window: coalmine's analysis.interval (it caps the window), Flagger's
    # metrics[].interval, the range in Argo's queries
    coalmine_check_every: str
    coalmine_failure_limit: int
    flagger_loop: str  # -control-loop-interval
    flagger_threshold: int
    argo_interval: str
    argo_failure_limit: int
    text: dict[str, str]


PROFILES = {
    "tight": Profile(
        "tight", 10, "10s", "1s", 1, "1s", 1, "1s", 0,
        {
            "coalmine": "steps held 10 s; analysis.interval 10s (caps the query window), checkEvery 1s "
            "(the smallest the CRD allows), failureLimit 1 (its minimum), minRequests 20",
            "flagger": "-control-loop-interval=1s; analysis.interval 10s (Flagger raises anything lower to 10 s), "
            "threshold 1, stepWeights [10, 30, 50], metrics request-success-rate and request-duration with "
            "interval 10s",
            "argo": "steps setWeight 10/30/50 each followed by pause 10s; background analysis from the first step; "
            "AnalysisTemplate metrics interval 1s, failureLimit 0 (the default and the minimum), "
            "consecutiveErrorLimit 4 (default), initialDelay 5s, query window 10s",
        },
    ),
    "default": Profile(
        "default", 60, "1m", "10s", 2, "10s", 1, "1m", 0,
        {
            "coalmine": "analysis defaults: interval 1m (hold and window cap), checkEvery 10s, failureLimit 2, "
            "minRequests 20",
            "flagger": "-control-loop-interval 10s (default); analysis.interval 1m (Flagger's default), threshold "
            "unset (Flagger's default 1), metrics interval 1m (default)",
            "argo": "pause 1m after each setWeight; AnalysisTemplate interval 1m, failureLimit 0 (default), "
            "consecutiveErrorLimit 4 (default), initialDelay 5s, query window 1m",
        },
    ),
}  # fmt: skip


def peer_dir(tool: str) -> Path:
    root = binaries.cache_root() / "peers"
    return root / "flagger" / FLAGGER_VERSION if tool == "flagger" else root / "argo-rollouts" / ARGO_VERSION


def peers_built() -> str | None:
    """None when both peers are in the cache, else what is missing (for pytest's skip reason)."""
    missing = [
        str(p)
        for p in (
            peer_dir("flagger") / "flagger",
            peer_dir("flagger") / "crd.yaml",
            peer_dir("argo") / "rollouts-controller",
            peer_dir("argo") / "crds.yaml",
        )
        if not p.exists()
    ]
    return f"peer binaries not built (`make peers`): {', '.join(missing)}" if missing else None


# --- objects -------------------------------------------------------------------------------------


def deployment(ns: str, name: str, labels: dict[str, str], replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"release": "1"}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def service(ns: str, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
    }


def coalmine_query_template(ns: str, host: str, what: str, window: str) -> str:
    """coalmine's default queries (operator/coalmine/core/analysis.py) for a canary Service `host`."""
    sel = f'reporter="destination",destination_workload_namespace="{ns}",destination_service_name="{host}"'
    if what == "success":
        ok = f'(sum(rate(istio_requests_total{{{sel},response_code!~"5.."}}[{window}])) or vector(0))'
        return f"{ok} / sum(rate(istio_requests_total{{{sel}}}[{window}])) * 100"
    return (
        f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))"
    )


@dataclass
class Scenario:
    """What one run asks of the tool: step holds (seconds) per step weight."""

    holds: dict[int, int]
    min_requests: int = 20  # coalmine's minRequests (its default); the peers have no such gate


class Tool:
    name = ""

    def __init__(self, api: client.ApiClient, info: devstack.StackInfo, profile: Profile) -> None:
        self.p = profile
        self.api = api
        self.info = info
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # subclasses ---------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self, ns: str, scenario: Scenario, wait: bool = True) -> None:
        """Create the objects; with `wait`, return once the tool is ready for a release (`ready`)."""
        raise NotImplementedError

    def ready(self, ns: str) -> bool:
        """The tool is ready for a release: the old version serves, the tool has taken the objects in."""
        return True

    def release(self, ns: str) -> None:
        """Start the release (the spec change a user makes)."""
        raise NotImplementedError

    def canary_weight(self, ns: str) -> int | None:
        raise NotImplementedError

    def canary_destination(self) -> tuple[str, str]:
        """(host, subset) meshsim breaks."""
        raise NotImplementedError

    def phase(self, ns: str) -> str:
        raise NotImplementedError

    def done(self, ns: str) -> bool:
        raise NotImplementedError

    def reason(self, ns: str) -> str:
        """Why the tool rolled back, in its own words."""
        raise NotImplementedError

    kind: tuple[str, str, str] = ("", "", "")  # (group, version, plural) of the tool's own resource

    def statuses(self) -> dict[str, dict[str, Any]]:
        """{namespace: status of its `web`} for every namespace, in one LIST (scenario 4 polls this way:
        a GET per namespace takes longer than a step on a loaded machine)."""
        self.calls += 1
        listed = self.custom.list_cluster_custom_object(*self.kind)
        return {
            o["metadata"]["namespace"]: dict(o.get("status") or {})
            for o in listed.get("items", [])
            if o["metadata"]["name"] == "web"
        }

    def ready_status(self, ns: str, status: dict[str, Any]) -> bool:
        return True

    def serving(self) -> set[str]:
        """Namespaces whose Deployments all have their ready pods (two LISTs): the old version serves
        (a namespace without Deployments, Argo's, counts; its Rollout's Healthy says the same)."""
        self.calls += 2  # the two LISTs
        short = {
            d.metadata.namespace
            for d in self.apps.list_deployment_for_all_namespaces().items
            if (d.status.ready_replicas or 0) < (d.spec.replicas or 0)
        }
        return {n.metadata.name for n in self.core.list_namespace().items} - short

    def done_status(self, ns: str, status: dict[str, Any]) -> bool:
        return status.get("phase") == "Succeeded"

    # shared ------------------------------------------------------------------------------------
    calls = 0  # API requests the bench itself made through this tool (subtracted in scenario 4)

    def vs(self, ns: str) -> dict[str, Any] | None:
        self.calls += 1
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(*ISTIO, ns, "virtualservices", "web")
            return obj
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def weight_of(self, ns: str, host: str, subset: str = "") -> int | None:
        vs = self.vs(ns)
        if vs is None:
            return None
        total = 0
        for route in vs["spec"].get("http") or []:
            for dest in route.get("route") or []:
                d = dest.get("destination") or {}
                if d.get("host") == host and (d.get("subset") or "") == subset:
                    total = max(total, int(dest.get("weight") or 0))
        return total

    def get(self, ns: str, group: str, version: str, plural: str, name: str = "web") -> dict[str, Any]:
        self.calls += 1
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        return obj

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not within {timeout:.0f} s")
            time.sleep(0.2)

    def bump_template(self, ns: str, name: str, group: str | None = None, plural: str | None = None) -> None:
        patch = {"spec": {"template": {"metadata": {"annotations": {"release": "2"}}, "spec": {}}}}
        patch["spec"]["template"]["spec"] = {"containers": [{"name": "web", "image": "web:2"}]}
        if group is None:
            self.apps.patch_namespaced_deployment(name, ns, patch)
        else:
            assert plural is not None
            self.custom.patch_namespaced_custom_object(group, "v1alpha1", ns, plural, name, patch)


class Coalmine(Tool):
    name = "coalmine"
    kind = ("coalmine.dev", "v1alpha1", "rollouts")

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coalmine",
            "run",
            "--prometheus-url",
            self.info.prometheus_url,
            "--scrape-interval",
            self.info.scrape_interval,
            "--metrics-port",  # free ports: another bench (or test) may run an operator on this machine
            str(free_port()),
            "--health-port",
            str(free_port()),
        ]

    def prepare(self, ns: str, scenario: Scenario, wait: bool = True) -> None:
        self.apps.create_namespaced_deployment(ns, deployment(ns, "web-v1", {"app": "web", "version": "v1"}))
        self.apps.create_namespaced_deployment(ns, deployment(ns, "web-v2", {"app": "web", "version": "v2"}))
        self.core.create_namespaced_service(ns, service(ns, "web", {"app": "web"}))
        dr = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "host": "web",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        }
        vs = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "hosts": ["web"],
                "http": [
                    {"name": "primary", "route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 100}]}
                ],
            },
        }
        self.custom.create_namespaced_custom_object(*ISTIO, ns, "destinationrules", dr)
        self.custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", vs)
        self._holds = scenario.holds
        self._min_requests = scenario.min_requests
        if wait:  # as Flagger's Initialized and Argo's Healthy do: release once the old version serves
            self.wait("web-v1 and web-v2 ready", lambda: ns in self.serving(), 120)

    def release(self, ns: str) -> None:
        steps = [{"weight": w, "hold": f"{h}s"} for w, h in self._holds.items()] + [{"weight": 100, "hold": "1s"}]
        body = {
            "apiVersion": "coalmine.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "virtualService": {"name": "web", "routes": ["primary"]},
                "stable": {"host": "web", "subset": "v1"},
                "canary": {"host": "web", "subset": "v2"},
                "steps": steps,
                "analysis": {
                    "interval": self.p.window,
                    "checkEvery": self.p.coalmine_check_every,
                    "failureLimit": self.p.coalmine_failure_limit,
                    "minRequests": self._min_requests,
                    "successRate": {"min": MIN_SUCCESS},
                    "latency": {"quantile": 0.99, "maxMs": MAX_P99_MS},
                },
            },
        }
        self.custom.create_namespaced_custom_object("coalmine.dev", "v1alpha1", ns, "rollouts", body)

    def canary_weight(self, ns: str) -> int | None:
        return self.weight_of(ns, "web", "v2")

    def canary_destination(self) -> tuple[str, str]:
        return "web", "v2"

    def phase(self, ns: str) -> str:
        try:
            return str((self.get(ns, "coalmine.dev", "v1alpha1", "rollouts").get("status") or {}).get("phase", ""))
        except ApiException:
            return ""

    def done(self, ns: str) -> bool:
        return self.phase(ns) == "Succeeded"

    def reason(self, ns: str) -> str:
        status = self.get(ns, "coalmine.dev", "v1alpha1", "rollouts").get("status") or {}
        rb = status.get("rollback") or {}
        return f"{rb.get('reason')}: {rb.get('metric')} {rb.get('value')} vs {rb.get('threshold')}"


class Flagger(Tool):
    name = "flagger"
    kind = ("flagger.app", "v1beta1", "canaries")

    def ready_status(self, ns: str, status: dict[str, Any]) -> bool:
        return status.get("phase") == "Initialized"

    def argv(self) -> list[str]:
        return [
            str(peer_dir("flagger") / "flagger"),
            f"-kubeconfig={self.info.kubeconfig}",
            "-mesh-provider=istio",
            f"-metrics-server={self.info.prometheus_url}",
            f"-port={free_port()}",
            f"-control-loop-interval={self.p.flagger_loop}",
            "-log-level=info",
            "-enable-config-tracking=false",
        ]

    def prepare(self, ns: str, scenario: Scenario, wait: bool = True) -> None:
        self.apps.create_namespaced_deployment(ns, deployment(ns, "web", {"app": "web"}))
        metric_window = self.p.window
        canary = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "progressDeadlineSeconds": 120,
                "service": {"port": 8080, "targetPort": 8080},
                "analysis": {
                    "interval": f"{self.p.hold}s",
                    "threshold": self.p.flagger_threshold,
                    "stepWeights": sorted(scenario.holds),
                    "metrics": [
                        {
                            "name": "request-success-rate",
                            "thresholdRange": {"min": MIN_SUCCESS},
                            "interval": metric_window,
                        },
                        {"name": "request-duration", "thresholdRange": {"max": MAX_P99_MS}, "interval": metric_window},
                    ],
                },
            },
        }
        self.custom.create_namespaced_custom_object("flagger.app", "v1beta1", ns, "canaries", canary)
        if wait:
            self.wait("Canary Initialized", lambda: self.ready(ns), 120 + 4 * self.p.hold)

    def ready(self, ns: str) -> bool:
        return self.phase(ns) == "Initialized"

    def release(self, ns: str) -> None:
        self.bump_template(ns, "web")

    def canary_weight(self, ns: str) -> int | None:
        return self.weight_of(ns, "web-canary")

    def canary_destination(self) -> tuple[str, str]:
        return "web-canary", ""

    def phase(self, ns: str) -> str:
        try:
            return str((self.get(ns, "flagger.app", "v1beta1", "canaries").get("status") or {}).get("phase", ""))
        except ApiException:
            return ""

    def done(self, ns: str) -> bool:
        return self.phase(ns) == "Succeeded"

    def reason(self, ns: str) -> str:
        status = self.get(ns, "flagger.app", "v1beta1", "canaries").get("status") or {}
        return "; ".join(str(c.get("message")) for c in status.get("conditions") or [])


class Argo(Tool):
    name = "argo"
    kind = ("argoproj.io", "v1alpha1", "rollouts")

    def ready_status(self, ns: str, status: dict[str, Any]) -> bool:
        return (
            status.get("phase") == "Healthy"
            and bool(status.get("stableRS"))
            and status.get("stableRS") == status.get("currentPodHash")
        )

    def done_status(self, ns: str, status: dict[str, Any]) -> bool:
        return (
            status.get("phase") == "Healthy"
            and status.get("stableRS") not in (None, self._old_hash.get(ns))
            and status.get("stableRS") == status.get("currentPodHash")
        )

    _old_hash: dict[str, Any]

    def __init__(self, api: client.ApiClient, info: devstack.StackInfo, profile: Profile) -> None:
        super().__init__(api, info, profile)
        self._old_hash = {}

    def argv(self) -> list[str]:
        return [
            str(peer_dir("argo") / "rollouts-controller"),
            f"--kubeconfig={self.info.kubeconfig}",
            "--leader-elect=false",
            f"--healthzPort={free_port()}",
            f"--metricsPort={free_port()}",
            "--loglevel=info",
        ]

    def prepare(self, ns: str, scenario: Scenario, wait: bool = True) -> None:
        self.core.create_namespaced_service(ns, service(ns, "web-stable", {"app": "web"}))
        self.core.create_namespaced_service(ns, service(ns, "web-canary", {"app": "web"}))
        vs = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "hosts": ["web"],
                "http": [
                    {
                        "name": "primary",
                        "route": [
                            {"destination": {"host": "web-stable"}, "weight": 100},
                            {"destination": {"host": "web-canary"}, "weight": 0},
                        ],
                    }
                ],
            },
        }
        self.custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", vs)
        prometheus = {"address": self.info.prometheus_url}
        template = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "metrics": [
                    {
                        "name": "success-rate",
                        "interval": self.p.argo_interval,
                        "initialDelay": "5s",
                        "failureLimit": self.p.argo_failure_limit,
                        "successCondition": f"result[0] >= {MIN_SUCCESS}",
                        "provider": {
                            "prometheus": {
                                **prometheus,
                                "query": coalmine_query_template(ns, "web-canary", "success", self.p.window),
                            }
                        },
                    },
                    {
                        "name": "latency-p99",
                        "interval": self.p.argo_interval,
                        "initialDelay": "5s",
                        "failureLimit": self.p.argo_failure_limit,
                        "successCondition": f"result[0] <= {MAX_P99_MS}",
                        "provider": {
                            "prometheus": {
                                **prometheus,
                                "query": coalmine_query_template(ns, "web-canary", "latency", self.p.window),
                            }
                        },
                    },
                ]
            },
        }
        self.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "analysistemplates", template)
        steps: list[dict[str, Any]] = []
        for weight, hold in scenario.holds.items():
            steps += [{"setWeight": weight}, {"pause": {"duration": f"{hold}s"}}]
        labels = {"app": "web"}
        rollout = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": deployment(ns, "web", labels)["spec"]["template"],
                "strategy": {
                    "canary": {
                        "canaryService": "web-canary",
                        "stableService": "web-stable",
                        "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}},
                        "analysis": {"templates": [{"templateName": "web"}]},
                        "steps": steps,
                    }
                },
            },
        }
        self.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts", rollout)
        if wait:
            self.wait("Rollout Healthy", lambda: self.ready(ns), 120)

    def ready(self, ns: str) -> bool:
        """Healthy with the first revision recorded as stable: a release before that would skip the steps
        (Argo promotes a first revision at once)."""
        status = self.status(ns)
        return (
            status.get("phase") == "Healthy"
            and bool(status.get("stableRS"))
            and status.get("stableRS") == status.get("currentPodHash")
        )

    def release(self, ns: str) -> None:
        self._old_hash[ns] = self.status(ns).get("stableRS")
        self.bump_template(ns, "web", "argoproj.io", "rollouts")

    def status(self, ns: str) -> dict[str, Any]:
        try:
            return dict(self.get(ns, "argoproj.io", "v1alpha1", "rollouts").get("status") or {})
        except ApiException:
            return {}

    def canary_weight(self, ns: str) -> int | None:
        return self.weight_of(ns, "web-canary")

    def canary_destination(self) -> tuple[str, str]:
        return "web-canary", ""

    def phase(self, ns: str) -> str:
        return str(self.status(ns).get("phase", ""))

    def reason(self, ns: str) -> str:
        return str(self.status(ns).get("message", ""))

    def done(self, ns: str) -> bool:
        status = self.status(ns)
        return (
            status.get("phase") == "Healthy"
            and status.get("stableRS") not in (None, self._old_hash.get(ns))
            and status.get("stableRS") == status.get("currentPodHash")
        )


# --- measuring -----------------------------------------------------------------------------------


def apiserver_writes(info: devstack.StackInfo, reads: bool = False) -> dict[str, float]:
    """kube-apiserver's apiserver_request_total for writes (with `reads`, all requests), summed by
    'VERB resource[/subresource]'."""
    response = httpx.get(
        f"{info.apiserver_url}/metrics",
        headers={"Authorization": f"Bearer {info.admin_token}"},
        verify=False,
        timeout=30,
    )
    out: dict[str, float] = {}
    for line in response.text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split('",') if "=" in part)
        labels = {k: v.strip('"') for k, v in labels.items()}
        verb = labels.get("verb", "")
        if verb in ("GET", "LIST", "WATCH", "CONNECT") and not reads:
            continue
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = f"{verb} {resource}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


# Writes to the objects a tool decides about: its own resource (and status), the routing objects, the
# analysis objects, the Services it selects with. Only the tool writes these here.
CONTROL = ("rollouts", "canaries", "analysisruns", "virtualservices", "destinationrules", "services")
# Writes to workloads: the tool's (Flagger's Deployments, Argo's ReplicaSets) and kube-controller-manager's
# reactions to them (a Deployment change makes it write ReplicaSets and Deployment annotations): both counted.
WORKLOAD = ("deployments", "replicasets")
# Everything else (pods, bindings, endpoints, events, leases, nodes: kwok, the scheduler, kcm) is left out.


def tool_writes(
    before: dict[str, float], after: dict[str, float], kinds: tuple[str, ...] = CONTROL
) -> dict[str, float]:
    """Writes between two `apiserver_writes` readings to the resources in `kinds` (and their subresources,
    except the status of Deployments and ReplicaSets, which only kube-controller-manager writes)."""
    out = {}
    for key, value in sorted(after.items()):
        resource = key.split(" ", 1)[1]
        delta = value - before.get(key, 0.0)
        if delta <= 0 or resource in ("deployments/status", "replicasets/status"):
            continue
        if resource.split("/", 1)[0] in kinds:
            out[key] = delta
    return out


def wait_namespaces_gone(api: client.ApiClient, timeout: float = 180) -> None:
    """Wait until no namespace is Terminating: their deletion writes would count as the next tool's."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while any(ns.status.phase == "Terminating" for ns in core.list_namespace().items):
        if time.monotonic() > deadline:
            print(f"  (namespaces still Terminating after {timeout:.0f} s)", flush=True)
            return
        time.sleep(1)


def prometheus_queries(info: devstack.StackInfo) -> float:
    try:
        response = httpx.get(
            f"{info.prometheus_url}/api/v1/query",
            params={"query": 'sum(prometheus_http_requests_total{handler=~"/api/v1/query|/api/v1/query_range"})'},
            timeout=10,
        )
        return float(response.json()["data"]["result"][0]["value"][1])
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return float("nan")


@dataclass
class Bench:
    info: devstack.StackInfo
    api: client.ApiClient
    mesh: MeshsimClient
    procs: Processes
    workdir: Path
    profile: Profile
    results: dict[str, Any] = field(default_factory=dict)
    # Scenario 2's break: the moment the VS shows 30 % ("step"), or a random moment of the step's first
    # hold after it ("random", drawn from --seed and the run's number: the same delays for every tool).
    break_at: str = "step"
    seed: int = 1

    def break_delay(self, run: int) -> float:
        if self.break_at == "step":
            return 0.0
        return random.Random(f"{self.seed}-{run}").uniform(0, self.profile.hold)

    def tool(self, name: str) -> Tool:
        kind: type[Tool] = {"coalmine": Coalmine, "flagger": Flagger, "argo": Argo}[name]
        return kind(self.api, self.info, self.profile)

    @contextmanager
    def controller(self, tool: Tool) -> Iterator[int]:
        env = {**os.environ, **kube_env(self.info)}
        child = self.procs.start(tool.name, tool.argv(), self.workdir / f"{tool.name}.log", env)
        time.sleep(3)  # informers synced
        try:
            yield child.pid
        finally:
            self.procs.stop(child)

    @contextmanager
    def namespace(self, tool: Tool, label: str) -> Iterator[str]:
        ns = f"{tool.name}-{label}-{uuid.uuid4().hex[:5]}"
        core = client.CoreV1Api(self.api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.mesh.set_service(ns, "web", rps=RPS)
        try:
            yield ns
        finally:
            self.mesh.delete_service(ns, "web")
            host, subset = tool.canary_destination()
            self.mesh.reset_destination(ns, host, subset)
            core.delete_namespace(ns)

    def wait_weight(
        self, tool: Tool, ns: str, check: Callable[[int | None], bool], timeout: float
    ) -> tuple[int | None, float]:
        deadline = time.monotonic() + timeout
        while True:
            weight = tool.canary_weight(ns)
            if check(weight):
                return weight, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{tool.name}: canary weight {weight} (phase {tool.phase(ns)}) after {timeout:.0f} s"
                )
            time.sleep(POLL)

    # scenario 2 --------------------------------------------------------------------------------
    def rollback(self, tool: Tool, runs: int) -> None:
        rows: list[dict[str, Any]] = []
        with self.controller(tool):
            for run in range(runs):
                with self.namespace(tool, f"rb{run}") as ns:
                    tool.prepare(ns, Scenario({10: tool.p.hold, 30: 600, 50: tool.p.hold}))
                    tool.release(ns)
                    self.wait_weight(tool, ns, lambda w: w == 30, 120 + 6 * tool.p.hold)
                    host, subset = tool.canary_destination()
                    delay = self.break_delay(run)
                    time.sleep(delay)
                    broken = time.monotonic()
                    self.mesh.set_destination(ns, host, subset, error_ratio=BREAK_ERROR_RATIO)
                    path = [30]
                    while True:
                        weight, seen = self.wait_weight(
                            tool, ns, lambda w, last=path[-1]: w != last, 60 + 4 * tool.p.hold
                        )
                        path.append(weight or 0)
                        if not weight:
                            break
                    time.sleep(1)  # the status after the VS write
                    row = {
                        "run": run + 1,
                        "break_delay": round(delay, 2),
                        "seconds": round(seen - broken, 2),
                        "weights": path,
                        "phase": tool.phase(ns),
                        "why": tool.reason(ns),
                        "load": os.getloadavg()[0],
                    }
                    rows.append(row)
                    print(
                        f"  {tool.name} run {row['run']}: broken {delay:.1f} s after 30 % was seen, "
                        f"canary 0 {row['seconds']:.2f} s after the break, "
                        f"weights {path}, phase {row['phase']} ({row['why']}), load {row['load']:.2f}",
                        flush=True,
                    )
        self.results.setdefault("rollback", {})[tool.name] = rows

    # scenario 1 --------------------------------------------------------------------------------
    def healthy(self, tool: Tool) -> None:
        with self.controller(tool), self.namespace(tool, "ok") as ns:
            tool.prepare(ns, Scenario({10: tool.p.hold, 30: tool.p.hold, 50: tool.p.hold}))
            wait_namespaces_gone(self.api)
            time.sleep(3)  # let the preparation's own writes settle
            writes0, queries0 = apiserver_writes(self.info), prometheus_queries(self.info)
            start = time.monotonic()
            tool.release(ns)
            timeline: list[tuple[float, int | None, str]] = []
            deadline = start + 300 + 10 * tool.p.hold
            while not tool.done(ns):
                timeline.append((round(time.monotonic() - start, 2), tool.canary_weight(ns), tool.phase(ns)))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{tool.name}: release not done after 300 s; {timeline[-1]}")
                time.sleep(0.25)
            elapsed = time.monotonic() - start
            time.sleep(2)
            writes1 = apiserver_writes(self.info)
            writes = tool_writes(writes0, writes1)
            workload_writes = tool_writes(writes0, writes1, WORKLOAD)
            queries = prometheus_queries(self.info) - queries0
        weights_seen = []
        for _, weight, _ in timeline:
            if weight is not None and (not weights_seen or weights_seen[-1] != weight):
                weights_seen.append(weight)
        row = {
            "seconds": round(elapsed, 1),
            "writes": writes,
            "writes_total": sum(writes.values()),
            "workload_writes": workload_writes,
            "workload_writes_total": sum(workload_writes.values()),
            "queries": queries,
            "query_rate": round(queries / elapsed, 2),
            "weights": weights_seen,
            "load": os.getloadavg()[0],
        }
        print(
            f"  {tool.name}: done in {elapsed:.1f} s, weights {weights_seen}, {row['writes_total']:.0f} writes "
            f"{writes}, workloads {workload_writes}, {queries:.0f} Prometheus queries ({row['query_rate']}/s), load {row['load']:.2f}",
            flush=True,
        )
        self.results.setdefault("healthy", {})[tool.name] = {**row, "timeline": timeline}

    # scenario 3 --------------------------------------------------------------------------------
    def prometheus_outage(self, tool: Tool) -> None:
        with self.controller(tool), self.namespace(tool, "prom") as ns:
            tool.prepare(ns, Scenario({10: tool.p.hold, 30: 600, 50: tool.p.hold}))
            tool.release(ns)
            self.wait_weight(tool, ns, lambda w: w == 30, 120 + 6 * tool.p.hold)
            events: list[tuple[float, int | None, str]] = []
            start = time.monotonic()
            devstack.stop_prometheus(self.info.state_dir)
            restarted = False
            last: tuple[int | None, str] | None = None
            try:
                while time.monotonic() - start < 120:
                    now = time.monotonic() - start
                    if not restarted and now >= 60:
                        devstack.start_prometheus(self.info.state_dir)
                        restarted = True
                        events.append((round(time.monotonic() - start, 1), None, "Prometheus back"))
                    state = (tool.canary_weight(ns), tool.phase(ns))
                    if state != last:
                        events.append((round(now, 1), state[0], state[1]))
                        last = state
                    time.sleep(0.25)
            finally:
                if not restarted:
                    devstack.start_prometheus(self.info.state_dir)
        print(
            f"  {tool.name}: Prometheus stopped at 0 s, back at 60 s; (s, canary weight, phase): {events}", flush=True
        )
        self.results.setdefault("prometheus_outage", {})[tool.name] = events

    # scenario 4 --------------------------------------------------------------------------------
    def scale(self, tool: Tool, n: int, limit: float) -> None:
        tag = uuid.uuid4().hex[:4]
        names = [f"{tool.name}-n{i}-{tag}" for i in range(n)]
        core = client.CoreV1Api(self.api)
        for ns in names:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            self.mesh.set_service(ns, "web", rps=SCALE_RPS)
        row: dict[str, Any] = {"n": n}
        wait_namespaces_gone(self.api)
        try:
            with self.controller(tool) as pid:
                t_prep = time.monotonic()
                for ns in names:
                    holds = {10: tool.p.hold, 30: tool.p.hold, 50: tool.p.hold}
                    tool.prepare(ns, Scenario(holds, min_requests=2), wait=False)
                waiting = set(names)
                while waiting and time.monotonic() - t_prep < 600:
                    statuses, serving = tool.statuses(), tool.serving()
                    waiting = {
                        ns for ns in waiting if not (ns in serving and tool.ready_status(ns, statuses.get(ns, {})))
                    }
                    time.sleep(1)
                row["ready_s"] = round(time.monotonic() - t_prep, 1)
                row["not_ready"] = len(waiting)
                reads0, writes0 = apiserver_writes(self.info, reads=True), apiserver_writes(self.info)
                queries0, cpu0, calls0 = prometheus_queries(self.info), cpu_seconds(pid), tool.calls
                row["mesh_endpoints_at_release"] = mesh_endpoints(self.mesh.mesh(), names)
                start = time.monotonic()
                released: dict[str, float] = {}
                for ns in names:
                    if ns not in waiting:
                        tool.release(ns)
                        released[ns] = time.monotonic()
                row["release_s"] = round(time.monotonic() - start, 1)
                finished: dict[str, float] = {}
                rss: list[int] = []
                while len(finished) < len(released) and time.monotonic() - start < limit:
                    rss.append(proc_status(pid).get("VmRSS", 0))
                    statuses = tool.statuses()
                    for ns in released:
                        if ns not in finished and tool.done_status(ns, statuses.get(ns, {})):
                            finished[ns] = time.monotonic() - released[ns]
                    time.sleep(2)
                elapsed = time.monotonic() - start
                cpu = cpu_seconds(pid) - cpu0
                bench_calls = tool.calls - calls0
                reads1, writes1 = apiserver_writes(self.info, reads=True), apiserver_writes(self.info)
                queries = prometheus_queries(self.info) - queries0
                row["not_done"] = {ns: f"{tool.phase(ns)}: {tool.reason(ns)}" for ns in released if ns not in finished}
        finally:
            for ns in names:
                self.mesh.delete_service(ns, "web")
                core.delete_namespace(ns)
        all_requests = sum(reads1.values()) - sum(reads0.values()) - bench_calls
        done_times = sorted(finished.values())
        row.update(
            {
                "window_s": round(elapsed, 1),
                "done": len(finished),
                "released": len(released),
                "to_done_p50_s": round(percentile(done_times, 50), 1),
                "to_done_p99_s": round(percentile(done_times, 99), 1),
                "rss_max_mib": round(max(rss) / 1024, 1) if rss else float("nan"),
                "cpu_pct": round(100 * cpu / elapsed, 1),
                "api_rps_all_clients": round(all_requests / elapsed, 1),
                "tool_writes_per_s": round(sum(tool_writes(writes0, writes1).values()) / elapsed, 2),
                "tool_writes": tool_writes(writes0, writes1),
                "prometheus_queries_per_s": round(queries / elapsed, 2),
                "load": os.getloadavg(),
            }
        )
        print(f"  {tool.name} x{n}: {json.dumps(row)}", flush=True)
        self.results.setdefault("scale", {})[tool.name] = row


def mesh_endpoints(mesh: dict[str, dict[str, Any]], namespaces: list[str]) -> dict[str, int]:
    """How many of `namespaces` meshsim sees with each set of ready endpoints ("web=4": its Service `web`
    has 4 ready pods it can route to), from meshsim's GET /mesh: what the mesh's proxies would route by."""
    seen: dict[str, list[str]] = {ns: [] for ns in namespaces}
    for key, count in sorted(mesh.get("endpoints", {}).items()):
        ns, service = key.split("/", 1)
        if ns in seen:
            seen[ns].append(f"{service}={count}")
    return dict(collections.Counter(",".join(v) or "none" for v in seen.values()).most_common())


def summary(results: dict[str, Any]) -> str:
    lines = []
    rb = results.get("rollback", {})
    if rb:
        when = {"step": "as 30 % is seen", "random": "a random moment of the step's first hold"}
        lines.append(
            f"\nScenario 2: canary answers 30 % 5xx at 30 % ({when[results.get('break_at', 'step')]}) "
            "-> VS canary weight 0 (s)"
        )
        lines.append(f"{'tool':10} {'runs':>4} {'min':>7} {'median':>7} {'max':>7}  ratio coalmine/peer (median)")
        base = statistics.median(r["seconds"] for r in rb["coalmine"]) if "coalmine" in rb else None
        for name, rows in rb.items():
            secs = [r["seconds"] for r in rows]
            med = statistics.median(secs)
            ratio = f"{base / med:.2f}" if base is not None and name != "coalmine" else ""
            lines.append(f"{name:10} {len(secs):>4} {min(secs):>7.2f} {med:>7.2f} {max(secs):>7.2f}  {ratio}")
    ok = results.get("healthy", {})
    if ok:
        lines.append("\nScenario 1: healthy release 10/30/50/100, equal 10-s holds")
        lines.append(f"{'tool':10} {'to done s':>9} {'writes':>7} {'wl wr':>6} {'queries':>8} {'q/s':>6}  weights seen")
        for name, row in ok.items():
            lines.append(
                f"{name:10} {row['seconds']:>9.1f} {row['writes_total']:>7.0f} {row['workload_writes_total']:>6.0f} "
                f"{row['queries']:>8.0f} "
                f"{row['query_rate']:>6.2f}  {row['weights']}"
            )
            lines.append(f"{'':10} writes: {json.dumps(row['writes'])}; workloads {json.dumps(row['workload_writes'])}")
    scale = results.get("scale", {})
    if scale:
        lines.append(
            f"\nScenario 4: N concurrent healthy releases ({results.get('settings', {}).get('profile', 'tight')} settings, "
            "5 rps each)"
        )
        keys = (
            "n",
            "ready_s",
            "done",
            "to_done_p50_s",
            "to_done_p99_s",
            "rss_max_mib",
            "cpu_pct",
            "api_rps_all_clients",
            "tool_writes_per_s",
            "prometheus_queries_per_s",
        )
        lines.append(f"{'tool':10} " + " ".join(f"{k:>14}" for k in keys))
        for name, row in scale.items():
            lines.append(f"{name:10} " + " ".join(f"{row.get(k, ''):>14}" for k in keys))
    outage = results.get("prometheus_outage", {})
    if outage:
        lines.append("\nScenario 3: Prometheus stopped 60 s at canary 30 % ((s, canary weight, phase))")
        for name, events in outage.items():
            lines.append(f"{name:10} {events}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no {path}")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    rb = results.get("rollback", {})
    names = list(rb)
    axes[0].boxplot([[r["seconds"] for r in rb[n]] for n in names], tick_labels=names) if names else None
    for i, n in enumerate(names, start=1):
        axes[0].scatter([i] * len(rb[n]), [r["seconds"] for r in rb[n]], s=12)
    axes[0].set_title("break at 30 % -> VS canary 0 (s), tightest settings")
    axes[0].set_ylabel("seconds")
    for name, row in results.get("healthy", {}).items():
        xs = [t for t, w, _ in row["timeline"] if w is not None]
        ys = [w for _, w, _ in row["timeline"] if w is not None]
        axes[1].step(xs, ys, where="post", label=f"{name} ({row['seconds']:.0f} s)")
    axes[1].set_title("healthy release: VS canary weight over time")
    axes[1].set_xlabel("seconds after the release")
    axes[1].set_ylabel("canary weight %")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def install_peer_crds(info: devstack.StackInfo) -> None:
    kubectl = str(binaries.kubectl())
    for path in (peer_dir("flagger") / "crd.yaml", peer_dir("argo") / "crds.yaml"):
        subprocess.run(
            [
                kubectl,
                f"--kubeconfig={info.kubeconfig}",
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                str(path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    ext = client.ApiextensionsV1Api(config.new_client_from_config(config_file=str(info.kubeconfig)))
    deadline = time.monotonic() + 60
    for name in (
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "rollouts.argoproj.io",
        "analysisruns.argoproj.io",
        "analysistemplates.argoproj.io",
    ):
        while not any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition(name).status.conditions or [])
        ):
            assert time.monotonic() < deadline, f"CRD {name} not Established"
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="rollback runs per tool (scenario 2)")
    parser.add_argument("--scenarios", default="2,1,3")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--output", type=Path, default=Path("peers-output"))
    parser.add_argument("--state-dir", type=Path, help="a running devstack to use (default: start one)")
    parser.add_argument("--settings", choices=sorted(PROFILES), default="tight")
    parser.add_argument(
        "--scrape-interval",
        default="1s",
        help="Prometheus's scrape interval (own stack only); scenario 4 needs 5s: at 1 s a scrape of 100 services' "
        "series does not finish within the scrape timeout on a loaded 2-core machine",
    )
    parser.add_argument(
        "--break-at",
        choices=("step", "random"),
        default="step",
        help="scenario 2 breaks the canary as the VS shows 30 %% (step), or at a random moment of the step's first "
        "hold after it (random; the same delays for every tool, drawn from --seed)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of --break-at random")
    parser.add_argument("--n", type=int, default=100, help="concurrent releases in scenario 4")
    parser.add_argument("--scale-limit", type=float, default=300.0, help="seconds scenario 4 waits for them")
    args = parser.parse_args()
    profile = PROFILES[args.settings]
    if (missing := peers_built()) is not None:
        sys.exit(missing)
    tools = [t for t in args.tools.split(",") if t]
    args.output.mkdir(parents=True, exist_ok=True)
    # kwok's nodes take 110 pods each: scenario 4 has up to 4 pods per release (Flagger: primary and canary).
    nodes = 1 + (4 * args.n) // 100 if "4" in args.scenarios.split(",") else 1
    with bench_stack("coalmine-peers-", args.state_dir, args.scrape_interval, nodes) as (info, workdir, procs):
        install_peer_crds(info)
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        mesh = start_meshsim(procs, info, workdir, f"bench-peers-{uuid.uuid4().hex[:6]}")
        bench = Bench(info, api, mesh.client, procs, workdir, profile, break_at=args.break_at, seed=args.seed)
        bench.results["break_at"] = args.break_at
        bench.results["settings"] = {"profile": profile.name, **profile.text}
        print(f"settings: {json.dumps(bench.results['settings'], indent=1)}", flush=True)
        print(f"load average at start: {os.getloadavg()}", flush=True)
        try:
            wait_scraped(info, [mesh.job])
            for scenario in args.scenarios.split(","):
                for name in tools:
                    tool = bench.tool(name)
                    print(f"scenario {scenario}, {name}:", flush=True)
                    try:
                        if scenario == "2":
                            bench.rollback(tool, args.runs)
                        elif scenario == "1":
                            bench.healthy(tool)
                        elif scenario == "3":
                            bench.prometheus_outage(tool)
                        elif scenario == "4":
                            bench.scale(tool, args.n, args.scale_limit)
                    except (TimeoutError, ApiException) as error:
                        print(f"  {name}: FAILED: {error}", flush=True)
                        bench.results.setdefault("failed", []).append(f"scenario {scenario} {name}: {error}")
                    (args.output / "results.json").write_text(json.dumps(bench.results, indent=1))
        finally:
            devstack.remove_scrape_target(info.state_dir, mesh.job)
            mesh.client.close()
            for log in workdir.glob("*.log"):
                (args.output / log.name).write_bytes(log.read_bytes())
    print(summary(bench.results))
    print(f"load average at the end: {os.getloadavg()}")
    plot(bench.results, args.output / "peers.png")


if __name__ == "__main__":
    main()
