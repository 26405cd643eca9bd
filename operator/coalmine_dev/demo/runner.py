"""The demo's imperative shell: start what is needed, apply examples/, drive two scenarios, report.

Why it exists: one command must show the operator at work on a real API server and a real
Prometheus. This module owns every side effect of the demo (the devstack, the meshsim and
operator processes, API writes, Prometheus reads, files) and stops what it started on the way
out, also on Ctrl-C or SIGTERM. Decisions and data shaping live in `scenario` and `timeline`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from coalmine.core.models import format_duration
from coalmine.core.plan import describe_match
from coalmine.status import render
from coalmine.status.cli import Reader, Snapshot
from coalmine_dev import processes
from coalmine_dev.demo import scenario, timeline
from coalmine_dev.devstack import stack as devstack
from coalmine_dev.meshsim.client import MeshsimClient
from coalmine_dev.processes import Child

ISTIO = ("networking.istio.io", "v1")
COALMINE = ("coalmine.dev", "v1alpha1")
RPS = 150.0  # requests/s meshsim sends to `order`
# Who sends them: a tenth are the seed's beta group (`user-group: beta`, which the user's own `beta` route
# sends to v2 whatever the rollout does), a tenth have opted in to try releases first (cookie `beta=1`, the
# match of examples/strategies/ab-rollout.yaml's A/B step), the rest are everyone else.
HEADER_MIX: list[tuple[float, dict[str, str]]] = [
    (0.8, {}),
    (0.1, {"user-group": "beta"}),
    (0.1, {"cookie": "theme=dark; beta=1"}),
]
SCRAPE_JOB = "coalmine-demo-meshsim"
SETTLE_TIMEOUT = 10.0  # seconds the VirtualService may lag the status's end phase
GATED_WEIGHT = 50  # scenario 1's step that waits for a person
GATE_SHOWN_FOR = 3.0  # seconds the live view shows the waiting step before the demo's person promotes
START_TIMEOUT = 90.0  # a ceiling for children to start on a loaded machine, not a measure
PLOT_WINDOW = "5s"  # sliding rate window of the timeline's series


class DemoError(RuntimeError):
    """Something the demo needs did not happen; the message says what."""


@dataclass
class Options:
    state_dir: Path
    output: Path
    namespace: str
    hold: timedelta
    interactive: bool
    examples_dir: Path
    out: TextIO = field(default=sys.stdout)


@dataclass
class Outcome:
    """What one scenario ended with, read from the cluster."""

    label: str
    rollout: dict[str, Any]
    vs_weights: list[int]
    started: datetime
    ended: datetime
    notes: list[tuple[datetime, str]] = field(default_factory=list)
    # What the VirtualService had, read after read (repeats dropped): the canary's weight on the owned
    # route, and whether the operator's A/B route was there; and that route as first seen.
    ab_readings: list[tuple[int, bool]] = field(default_factory=list)
    ab_route: dict[str, Any] | None = None

    @property
    def ab_problem(self) -> str:
        return scenario.ab_problem(self.ab_readings) if self.ab_route is not None or self.has_ab_step else ""

    @property
    def has_ab_step(self) -> bool:
        return any(s.get("match") for s in (self.rollout.get("spec") or {}).get("steps") or [])

    @property
    def vs_story(self) -> list[str]:
        """The owned route's canary weight, read after read, with `A/B` while the operator's A/B route was there."""
        return scenario.changes(["A/B" if present else str(weight) for weight, present in self.ab_readings])

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.rollout.get("status") or {}
        return status


# --- display ------------------------------------------------------------------------------------------


class Display:
    """Narration plus the Rollout view: rich Live on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, interactive: bool, namespace: str) -> None:
        self.out = out
        self.interactive = interactive
        self.namespace = namespace
        self.console = Console(file=out) if interactive else None
        self.live: Live | None = None
        self.header = ""
        self._printed: tuple[Any, ...] | None = None

    @contextmanager
    def running(self) -> Iterator[Display]:
        if self.console is None:
            yield self
            return
        with Live(console=self.console, auto_refresh=False, transient=False) as live:
            self.live = live
            try:
                yield self
            finally:
                self.live = None

    def say(self, text: str, style: str = "") -> None:
        if self.console is not None:
            self.console.print(Text(text, style=style))
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def show(self, snap: Snapshot) -> None:
        now = datetime.now(UTC)
        if self.live is not None:
            parts: list[RenderableType] = [Text(self.header, style="bold cyan")] if self.header else []
            parts.append(render.all_renderable(snap.views(now), self.namespace))
            self.live.update(Group(*parts), refresh=True)
            return
        if self.console is not None:
            return
        key = snap.fingerprint()
        if key != self._printed:
            self._printed = key
            lines = render.all_lines(snap.views(now), self.namespace)
            self.out.write("\n".join(f"    | {line}" for line in lines) + "\n")
            self.out.flush()

    def clear(self) -> None:
        if self.live is not None:
            self.live.update(Text(""), refresh=True)


# --- processes ----------------------------------------------------------------------------------------


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Child:
    return Child(name, argv, log, env=env, inherit_env=False).start()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, child: Child | None = None) -> None:
    try:
        processes.wait_until(what, predicate, timeout, child)
    except processes.WaitTimeout as exc:
        raise DemoError(str(exc)) from exc


# --- the demo -------------------------------------------------------------------------------------------


class Demo:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.display = Display(options.out, options.interactive, options.namespace)
        self.children: list[Child] = []
        self.started_stack = False
        self.info: devstack.StackInfo | None = None
        self.scrape_registered = False
        self.api: client.ApiClient | None = None
        self.meshsim: MeshsimClient | None = None

    # The whole run; returns the exit code.
    def run(self) -> int:
        t_begin = time.monotonic()
        previous = signal.signal(signal.SIGTERM, _interrupt)
        # Ctrl-C must stop the demo even when started with SIGINT ignored (e.g. `cmd &` from a script).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with self.display.running():
                outcomes, untouched, png = self._run()
            code = self._report(outcomes, untouched, png, time.monotonic() - t_begin)
        except KeyboardInterrupt:
            self.display.say("interrupted: stopping what the demo started", "bold yellow")
            code = 130
        except (DemoError, devstack.StackError) as error:
            self.display.say(f"demo failed: {error}", "bold red")
            code = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            try:
                self._cleanup()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)
        return code

    def _run(self) -> tuple[list[Outcome], list[scenario.Untouched], Path]:
        say = self.display.say
        examples = scenario.load_examples(self.o.examples_dir, self.o.namespace)
        info = self._stack()
        api = self.api = config.new_client_from_config(config_file=str(info.kubeconfig))  # type: ignore[no-untyped-call]
        custom = client.CustomObjectsApi(api)
        reader = Reader(api)
        ns = self.o.namespace
        env = {**os.environ, "KUBECONFIG": str(info.kubeconfig)}
        logs = self.o.output / "logs"

        self._clean_namespace(examples)
        workloads = self._apply_workloads(examples, info)
        meshsim = self._start_meshsim(info, env, logs)
        say(f"applying {self.o.examples_dir}/ to namespace {ns}: DestinationRule order, VirtualService order")
        custom.create_namespaced_custom_object(*ISTIO, ns, "destinationrules", examples.destination_rule)
        vs_created: dict[str, Any] = custom.create_namespaced_custom_object(  # type: ignore[assignment]
            *ISTIO, ns, "virtualservices", examples.virtual_service
        )
        if workloads:  # before any request: meshsim answers 503 UH for a subset without ready endpoints, as Envoy
            wait_until(
                f"{workloads} ready endpoints of Service order", lambda: self._ready() >= workloads, START_TIMEOUT
            )
            say(f"Service order has {workloads} ready pods (v1, v2 and v3): readiness gates every shift")
        meshsim.set_service(ns, "order", rps=RPS, headers=HEADER_MIX)
        wait_until(
            "meshsim seeing the VirtualService",
            lambda: (
                meshsim.mesh().get("virtualservices", {}).get(f"{ns}/order")
                == vs_created["metadata"]["resourceVersion"]
            ),
            START_TIMEOUT,
        )
        operator = self._start_operator(info, env, logs)
        vs_before = self._get("virtualservices", "order")
        dr_before = self._get("destinationrules", "order")
        routes = scenario.owned_routes(examples.rollout)

        # Scenario 1: v1 -> v2, healthy; its 50 % step waits for a person (approval: manual), who promotes.
        body = scenario.demo_rollout(examples.rollout, self.o.hold)
        gated = next((i for i, s in enumerate(body["spec"]["steps"]) if s["weight"] == GATED_WEIGHT), None)
        if gated is not None:
            body["spec"]["steps"][gated]["approval"] = "manual"
        analysis = body["spec"]["analysis"]
        say(
            f"scenario 1: {_dest(body, 'stable')} -> {_dest(body, 'canary')} (healthy), steps "
            f"{', '.join(str(s['weight']) for s in body['spec']['steps'])}, each held {analysis['interval']}, "
            f"checks every {analysis['checkEvery']} (examples/30-rollout.yaml with demo timings)",
            "bold",
        )
        self.display.header = "scenario 1: a healthy canary (v2) is promoted"
        started = datetime.now(UTC)
        custom.create_namespaced_custom_object(*COALMINE, ns, "rollouts", body)
        first = self._follow(
            "scenario 1", reader, operator, generation=1, canary="v2", routes=routes, on_read=self._person(info)
        )
        first.started = started
        say(f"scenario 1 ended {first.status.get('phase')}: {first.status.get('message', '')}", _style(first))

        # Scenario 2: v2 becomes stable, v3 is the canary: first for the users who opted in (the A/B step of
        # examples/strategies/ab-rollout.yaml), then by weight; it starts failing once it has 30 %.
        meshsim.reset_destination(ns, "order", "v3")
        generation = int(first.rollout["metadata"]["generation"]) + 1
        steps = body["spec"]["steps"]
        if examples.ab_step is not None:
            steps = [examples.ab_step, *steps]
            who = describe_match(examples.ab_step["match"])
            say(
                f"scenario 2: promote v2 to stable and roll out v3 (a new spec generation restarts at step 1): "
                f"first to the users with {who} (A/B step, from examples/{scenario.AB_EXAMPLE}), then "
                f"{', '.join(str(s['weight']) for s in steps if 'weight' in s)} %; "
                "v3 will start failing (40 % 5xx, p50 800 ms) once it has 30 %",
                "bold",
            )
        else:
            say(
                "scenario 2: promote v2 to stable and roll out v3 (a new spec generation restarts at step 1); "
                "v3 will start failing (40 % 5xx, p50 800 ms) once it has 30 %",
                "bold",
            )
        self.display.header = "scenario 2: v3 goes to beta users first (A/B), starts failing at 30 %, is rolled back"
        started = datetime.now(UTC)
        custom.patch_namespaced_custom_object(
            *COALMINE,
            ns,
            "rollouts",
            "order",
            {
                "spec": {
                    "stable": {"host": "order", "subset": "v2"},
                    "canary": {"host": "order", "subset": "v3"},
                    "steps": steps,
                }
            },
        )
        notes: list[tuple[datetime, str]] = []

        def break_v3(snap: Snapshot) -> None:
            status = (snap.rollouts[0][0].get("status") or {}) if snap.rollouts else {}
            if not notes and status.get("observedGeneration") == generation and status.get("canaryWeight", 0) >= 30:
                meshsim.set_destination(ns, "order", "v3", error_ratio=0.4, p50_ms=800, p99_ms=2000)
                notes.append((datetime.now(UTC), "v3 starts failing (meshsim)"))
                say("meshsim: v3 now answers 40 % 5xx with p50 800 ms", "bold yellow")

        second = self._follow(
            "scenario 2", reader, operator, generation=generation, canary="v3", routes=routes, on_read=break_v3
        )
        second.started = started
        second.notes = notes
        say(f"scenario 2 ended {second.status.get('phase')}: {second.status.get('message', '')}", _style(second))
        self.display.header = ""

        vs_after = self._get("virtualservices", "order")
        dr_after = self._get("destinationrules", "order")
        untouched = scenario.check_untouched(
            vs_before, vs_after, dr_before, dr_after, routes, match_route=scenario.MATCH_ROUTE
        )
        for check in untouched:
            say(
                f"untouched: {check.name}: {'equal' if check.equal else 'CHANGED'} "
                f"(sha256 {check.before_sha256} -> {check.after_sha256}) {check.detail}",
                "green" if check.equal else "bold red",
            )
        png = self._timeline([first, second], info)
        return [first, second], untouched, png

    # --- pieces ------------------------------------------------------------------------------------

    def _person(self, info: devstack.StackInfo) -> Callable[[Snapshot], None]:
        """The person at the keyboard: once the live view has shown a step waiting for promote for a few
        seconds, run `coalmine promote` as anyone would, and show what it answered."""
        seen: list[float] = []
        done: list[bool] = []

        def act(snap: Snapshot) -> None:
            status = (snap.rollouts[0][0].get("status") or {}) if snap.rollouts else {}
            reasons = {c.get("type"): c.get("reason") for c in status.get("conditions") or []}
            if done or reasons.get("Reconciling") != "WaitingForPromotion":
                return
            if not seen:
                seen.append(time.monotonic())
                self.display.say(f"step {status.get('stepLabel')} waits for a person (approval: manual)", "bold")
                return
            if time.monotonic() - seen[0] < GATE_SHOWN_FOR:
                return
            done.append(True)
            argv = ["promote", "order", "-n", self.o.namespace, "--reason", "the demo's person at the keyboard"]
            self.display.say(f"$ coalmine {' '.join(argv)}", "bold")
            result = subprocess.run(
                [sys.executable, "-m", "coalmine", *argv, "--kubeconfig", str(info.kubeconfig)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            for line in (result.stdout + result.stderr).splitlines():
                self.display.say(f"  {line}", "" if result.returncode == 0 else "bold red")

        return act

    def _stack(self) -> devstack.StackInfo:
        try:
            self.display.say(f"starting the local stack in {self.o.state_dir} ...")
            t = time.monotonic()
            info = devstack.up(self.o.state_dir)
            self.started_stack = True
            self.display.say(f"local stack ready in {time.monotonic() - t:.1f} s (will be stopped at the end)")
        except devstack.AlreadyRunningError as running:
            info = running.info
            self.display.say(f"reusing the local stack already running in {info.state_dir} (left running)")
        self.info = info
        return info

    def _clean_namespace(self, examples: scenario.Examples) -> None:
        """Make a second run start from scratch: delete the previous run's objects and Events."""
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)
        ns = self.o.namespace
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        except ApiException as error:
            if error.status != 409:
                raise
        for (group, version), plural in (
            (COALMINE, "rollouts"),
            (ISTIO, "virtualservices"),
            (ISTIO, "destinationrules"),
        ):

            def delete(group: str = group, version: str = version, plural: str = plural) -> None:
                custom.delete_namespaced_custom_object(group, version, ns, plural, "order")

            def get(group: str = group, version: str = version, plural: str = plural) -> None:
                custom.get_namespaced_custom_object(group, version, ns, plural, "order")

            _ignore_404(delete)
            wait_until(f"{plural}/order deleted", partial(_missing, get), START_TIMEOUT)
        apps = client.AppsV1Api(self.api)
        for body in examples.workloads:
            name = body["metadata"]["name"]
            if body["kind"] == "Service":
                _ignore_404(partial(core.delete_namespaced_service, name, ns))
            else:
                _ignore_404(partial(apps.delete_namespaced_deployment, name, ns, propagation_policy="Background"))
        if examples.workloads:
            wait_until(
                "the previous run's order pods gone",
                lambda: (
                    not core.list_namespaced_pod(ns, label_selector="app=order").items
                    and not apps.list_namespaced_deployment(ns, label_selector="app=order").items
                ),
                START_TIMEOUT,
            )
        core.delete_collection_namespaced_event(ns, field_selector="involvedObject.kind=Rollout")

    def _start_meshsim(self, info: devstack.StackInfo, env: dict[str, str], logs: Path) -> MeshsimClient:
        address_file = logs / "meshsim.address"
        address_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "coalmine", "meshsim", "--kubeconfig", str(info.kubeconfig)]
        argv += ["--listen", "127.0.0.1:0", "--address-file", str(address_file), "--seed", "1"]
        argv += ["--namespace", self.o.namespace]
        child = spawn("meshsim", argv, logs / "meshsim.log", env)
        self.children.append(child)
        wait_until("meshsim address", address_file.exists, START_TIMEOUT, child)
        address = address_file.read_text().strip()
        self.meshsim = meshsim = MeshsimClient(f"http://{address}")
        devstack.add_scrape_target(info.state_dir, SCRAPE_JOB, address)
        self.scrape_registered = True
        wait_until(
            "Prometheus scraping meshsim", lambda: _prom_up(info.prometheus_url, SCRAPE_JOB), START_TIMEOUT, child
        )
        wait_until("meshsim watching the API server", lambda: bool(meshsim.healthz()["synced"]), START_TIMEOUT, child)
        self.display.say(f"meshsim (simulated Istio telemetry for namespace {self.o.namespace}) on {address}")
        return meshsim

    def _start_operator(self, info: devstack.StackInfo, env: dict[str, str], logs: Path) -> Child:
        argv = [sys.executable, "-m", "coalmine", "run", "--namespace", self.o.namespace]
        argv += ["--prometheus-url", info.prometheus_url, "--scrape-interval", info.scrape_interval]
        argv += ["--health-port", "0", "--metrics-port", "0"]
        child = spawn("operator", argv, logs / "operator.log", env)
        self.children.append(child)
        self.display.say(f"operator started (log: {child.log})")
        return child

    def _get(self, plural: str, name: str) -> dict[str, Any]:
        assert self.api is not None
        result: dict[str, Any] = client.CustomObjectsApi(self.api).get_namespaced_custom_object(  # type: ignore[assignment]
            *ISTIO, self.o.namespace, plural, name
        )
        return result

    def _follow(
        self,
        label: str,
        reader: Reader,
        operator: Child,
        *,
        generation: int,
        canary: str,
        routes: tuple[str, ...],
        on_read: Callable[[Snapshot], None] = lambda _: None,
    ) -> Outcome:
        """Show the Rollout until this generation ends (Succeeded, RolledBack or Invalid) and the
        VirtualService carries the final weight.

        The operator records a decision in the status before it moves traffic, so the end phase can be
        read while the VirtualService still has the old weight; the demo then keeps reading (a few
        seconds at most) so the weights it reports end with the one the operator set.
        """
        steps = 5  # at most: scenario 2's A/B step and four weights
        timeout = 60 + steps * 3 * self.o.hold.total_seconds()
        deadline = time.monotonic() + timeout
        settle_deadline: float | None = None
        weights: list[int] = []
        readings: list[tuple[int, bool]] = []
        ab_route: dict[str, Any] | None = None
        while True:
            if not operator.alive():
                raise DemoError(f"the operator exited during {label}:\n{operator.tail()}")
            snap = reader.snapshot(self.o.namespace, "order")
            vs = self._get("virtualservices", "order")
            weight = scenario.canary_weight(vs, routes, canary)
            weights = scenario.changes([*weights, weight])
            route = scenario.route_named(vs, scenario.MATCH_ROUTE)
            if (route is not None) != (readings[-1][1] if readings else False):
                self._say_ab(route, vs, weight)
            ab_route = ab_route or route
            readings = scenario.changes([*readings, (weight, route is not None)])
            self.display.show(snap)
            on_read(snap)
            if snap.rollouts:
                obj = snap.rollouts[0][0]
                status = obj.get("status") or {}
                if status.get("observedGeneration") == generation and status.get("phase") in (
                    "Succeeded",
                    "RolledBack",
                    "Invalid",
                ):
                    settle_deadline = settle_deadline or time.monotonic() + SETTLE_TIMEOUT
                    settled = status.get("phase") == "Invalid" or weights[-1:] == [status.get("canaryWeight")]
                    if settled or time.monotonic() > settle_deadline:
                        now = datetime.now(UTC)
                        return Outcome(label, obj, weights, now, now, ab_readings=readings, ab_route=ab_route)
            if time.monotonic() > deadline:
                raise DemoError(f"{label} did not finish in {timeout:.0f} s; operator log:\n{operator.tail()}")
            time.sleep(0.25)

    def _say_ab(self, route: dict[str, Any] | None, vs: dict[str, Any], weight: int) -> None:
        """Narrate the operator's A/B route appearing in the VirtualService or leaving it."""
        if route is None:
            self.display.say(
                f"VirtualService order: route {scenario.MATCH_ROUTE} removed (canary {weight}% on primary)", "bold"
            )
            return
        names = [r.get("name", "?") for r in vs["spec"].get("http") or []]
        dest = ", ".join(d.get("destination", {}).get("subset", "?") for d in route.get("route") or [])
        self.display.say(
            f"VirtualService order: route {scenario.MATCH_ROUTE} added (routes now {', '.join(names)}): "
            f"users with {describe_match(route.get('match') or [])} go to {dest}",
            "bold",
        )

    def _apply_workloads(self, examples: scenario.Examples, info: devstack.StackInfo) -> int:
        """Create the examples' Service and Deployments (kwok makes their pods Ready); the pods to wait for."""
        if not examples.workloads:
            return 0
        if not info.workloads:
            self.display.say("this stack runs no workloads (no kwok): readiness is not checked", "yellow")
            return 0
        assert self.api is not None
        core, apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        pods = 0
        for body in examples.workloads:
            if body["kind"] == "Service":
                core.create_namespaced_service(self.o.namespace, body)  # type: ignore[arg-type]  # a dict body is sent as is
            else:
                apps.create_namespaced_deployment(self.o.namespace, body)  # type: ignore[arg-type]
                pods += int(body["spec"].get("replicas", 1))
        names = ", ".join(f"{b['kind']} {b['metadata']['name']}" for b in examples.workloads)
        self.display.say(f"applying {names} (kwok runs the pods)")
        return pods

    def _ready(self) -> int:
        """Ready endpoints of Service order, as the operator counts them (EndpointSlice ready true or unset)."""
        assert self.api is not None
        slices = client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(
            self.o.namespace, label_selector="kubernetes.io/service-name=order"
        )
        return sum(
            1
            for s in slices.items
            for e in s.endpoints or []
            if e.conditions is None or e.conditions.ready is None or e.conditions.ready
        )

    def _timeline(self, outcomes: list[Outcome], info: devstack.StackInfo) -> Path:
        time.sleep(2.5)  # let Prometheus scrape the last seconds
        scenarios = []
        for outcome in outcomes:
            status = outcome.status
            started = render.parse_time(status.get("startedAt")) or outcome.started
            end = datetime.now(UTC) if outcome is outcomes[-1] else outcomes[outcomes.index(outcome) + 1].started
            measured: dict[str, list[dict[str, Any]]] = {}
            selector = timeline.selector_from_status(status)
            if selector is None:
                self.display.say(f"{outcome.label}: no query in the status, so no measured series", "yellow")
            else:
                quantile = float(
                    ((outcome.rollout["spec"].get("analysis") or {}).get("latency") or {}).get("quantile", 0.99)
                )
                for name, promql in timeline.range_queries(selector, quantile, PLOT_WINDOW).items():
                    measured[name] = _query_range(info.prometheus_url, promql, started - timedelta(seconds=2), end)
            scenarios.append(timeline.assemble(outcome.label, outcome.rollout, end, measured, outcome.notes))
        png = self.o.output / "timeline.png"
        timeline.plot(
            scenarios, png, title="coalmine demo: v2 promoted; v3 to beta users first (A/B), then rolled back"
        )
        self.display.say(f"timeline written to {png}")
        return png

    def _report(self, outcomes: list[Outcome], untouched: list[scenario.Untouched], png: Path, seconds: float) -> int:
        first, second = outcomes
        ok1 = first.status.get("phase") == "Succeeded"
        ok2 = second.status.get("phase") == "RolledBack" and second.status.get("canaryWeight") == 0
        ok2 = ok2 and not any(o.ab_problem for o in outcomes)
        for o in outcomes:
            if o.ab_problem:
                self.display.say(f"{o.label}: {o.ab_problem}", "bold red")
        ok3 = all(u.equal for u in untouched)
        summary = {
            "namespace": self.o.namespace,
            "hold": format_duration(self.o.hold),
            "seconds": round(seconds, 1),
            "timeline": str(png),
            "scenarios": [_outcome_dict(o) for o in outcomes],
            "untouched": [u.__dict__ for u in untouched],
            "ok": ok1 and ok2 and ok3,
        }
        (self.o.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        rows = [
            (
                o.label,
                f"{_dest(o.rollout, 'stable')} -> {_dest(o.rollout, 'canary')}",
                str(o.status.get("phase")),
                " -> ".join(_history(o.rollout)),
                " -> ".join(o.vs_story),
                _duration_of(o.status),
                _why(o.status),
            )
            for o in outcomes
        ]
        headers = ("scenario", "rollout", "phase", "steps (status)", "canary weight on VS", "took", "why")
        if self.display.console is not None:
            table = Table(title="coalmine demo", title_justify="left")
            for h in headers:
                table.add_column(h, overflow="fold")
            for row in rows:
                table.add_row(*row, style="green" if row[2] == "Succeeded" else "red")
            self.display.console.print(table)
        else:
            self.display.say("summary:")
            for row in rows:
                self.display.say("  " + " | ".join(f"{h}: {v}" for h, v in zip(headers, row, strict=True)))
        verdict = (
            "untouched: the user's A/B route, retries, timeout, circuit breaker and the whole DestinationRule; "
            f"the operator's A/B route {scenario.MATCH_ROUTE} gone"
        )
        self.display.say(f"{verdict}: {'yes' if ok3 else 'NO'}", "green" if ok3 else "bold red")
        self.display.say(f"timeline: {png}   summary: {self.o.output / 'summary.json'}   took {seconds:.0f} s")
        self.display.say(
            "production-sized holds: `coalmine demo --hold 1m` (about 10 minutes), or on your cluster with Istio "
            "and Prometheus: `kubectl apply -f examples/`, `coalmine run --prometheus-url URL`, then "
            "`coalmine status -n shop --watch`"
        )
        return 0 if ok1 and ok2 and ok3 else 1

    def _cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.meshsim is not None:
            self.meshsim.close()
        if self.scrape_registered and self.info is not None:
            devstack.remove_scrape_target(self.info.state_dir, SCRAPE_JOB)
        if self.api is not None:
            self.api.close()  # type: ignore[no-untyped-call]
        if self.started_stack:
            devstack.down(self.o.state_dir)
            self.display.say("local stack stopped")
        elif self.info is not None:
            self.display.say(
                f"the Rollout stays in namespace {self.o.namespace}: "
                f"KUBECONFIG={self.info.kubeconfig} coalmine status -n {self.o.namespace}"
            )


# --- helpers --------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_404(call: Callable[[], Any]) -> None:
    try:
        call()
    except ApiException as error:
        if error.status != 404:
            raise


def _missing(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _prom_up(url: str, job: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/v1/query", params={"query": f'up{{job="{job}"}} == 1'}, timeout=5)
        return bool(response.json()["data"]["result"])
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def _query_range(url: str, promql: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": promql, "start": start.timestamp(), "end": end.timestamp(), "step": "1s"},
        timeout=30,
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def _dest(rollout: dict[str, Any], side: str) -> str:
    return str((rollout.get("spec") or {}).get(side, {}).get("subset", "?"))


def _history(rollout: dict[str, Any]) -> list[str]:
    """The steps the status's history went through: their weights, `A/B` for an A/B step."""
    steps = (rollout.get("spec") or {}).get("steps") or []
    out = []
    for entry in (rollout.get("status") or {}).get("history") or []:
        index = entry.get("stepIndex")
        ab = isinstance(index, int) and 0 <= index < len(steps) and bool(steps[index].get("match"))
        out.append("A/B" if ab else str(entry.get("weight")))
    return out


def _style(outcome: Outcome) -> str:
    return {"Succeeded": "bold green", "RolledBack": "bold red"}.get(str(outcome.status.get("phase")), "bold")


def _duration_of(status: dict[str, Any]) -> str:
    start, end = timeline.rollout_span(status)
    if start is None or end is None:
        return "?"
    return render.format_seconds(end - start)


def _why(status: dict[str, Any]) -> str:
    rb = status.get("rollback")
    if status.get("phase") == "RolledBack" and rb:
        return timeline.rollback_text(rb)
    return "every check passed" if status.get("phase") == "Succeeded" else str(status.get("message", ""))


def _outcome_dict(o: Outcome) -> dict[str, Any]:
    status = o.status
    return {
        "label": o.label,
        "stable": _dest(o.rollout, "stable"),
        "canary": _dest(o.rollout, "canary"),
        "phase": status.get("phase"),
        "canaryWeight": status.get("canaryWeight"),
        "history": [h.get("weight") for h in status.get("history") or []],
        "vsWeights": o.vs_weights,
        "vsStory": o.vs_story,
        "abRoute": o.ab_route,
        "abReadings": [list(r) for r in o.ab_readings],
        "abProblem": o.ab_problem,
        "rollback": status.get("rollback"),
        "startedAt": status.get("startedAt"),
        "finishedAt": status.get("finishedAt"),
    }
