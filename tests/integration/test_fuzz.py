"""Property-based fuzzing (hypothesis) of what users and clusters hand the operator, against the real API server,
Istio's validation webhook and the operator as a process.

Two targets:

rollout specs        Rollout specs of every shape: wrong types, out-of-range numbers, missing and extra fields,
                     durations (huge, zero, malformed), unicode and long names, steps like [100], [1, 100],
                     duplicates, decreasing. Each case ends rejected at apply with a message naming the field,
                     or Invalid/Pending with a message naming the field (`spec....`) and the VirtualService
                     untouched, or running with the routes exactly as the README says.
virtualservice shapes VirtualServices the operator meets in the wild: routes without names, delegate
                     VirtualServices, several hosts, tcp and tls routes next to http, destinations without
                     weight, weights not summing to 100, ports by number, a canary equal to the stable, two
                     Rollouts claiming one route. A shape Istio's webhook refuses is checked to be refused with
                     Istio's message; the rest get one or two Rollouts, judged as above, and with two, one owns
                     the route and the other waits, naming it.

For every case: no traceback and no failed tick in the operator's log, and coalmine_reconcile_errors_total
stays 0. The short form (COALMINE_FUZZ_EXAMPLES, default 25 per target, derandomized) runs in `make test`;
`bench/fuzz.py` runs the long form (2,000 per target) and prints the counts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rollout_support import COALMINE, ISTIO, OperatorProcess, destination_rule, virtual_service

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("COALMINE_FUZZ_EXAMPLES", "25"))
LONG = EXAMPLES > 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # the short form in `make test` is the same cases every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
VERDICT_TIMEOUT = 20.0
FIELD = re.compile(r"\bspec\.|\bspec\b|metadata\.name")


# --- the operator under test, and what it writes -----------------------------------------------------------


@dataclass
class Harness:
    custom: client.CustomObjectsApi
    ns: str
    operator: OperatorProcess
    metrics_url: str
    outcomes: Counter[str] = field(default_factory=Counter)
    log_offset: int = 0

    def new_log(self) -> str:
        text = self.operator.log.read_text(errors="replace")
        fresh, self.log_offset = text[self.log_offset :], len(text)
        return fresh

    def reconcile_errors(self) -> float:
        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("coalmine_reconcile_errors_total")
        )

    def create(self, plural: str, body: dict[str, Any], group: tuple[str, str] = ISTIO) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(*group, self.ns, plural, body)
        return result

    def delete(self, plural: str, name: str, group: tuple[str, str] = ISTIO) -> None:
        try:
            self.custom.delete_namespaced_custom_object(*group, self.ns, plural, name)
        except ApiException as error:
            if error.status != 404:
                raise

    def get(self, plural: str, name: str, group: tuple[str, str] = ISTIO) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(*group, self.ns, plural, name)
        return result

    def verdict(self, name: str) -> dict[str, Any]:
        """The Rollout once the operator has decided on its generation (phase set, observedGeneration caught up)."""
        deadline = time.monotonic() + VERDICT_TIMEOUT
        while True:
            obj = self.get("rollouts", name, COALMINE)
            status = obj.get("status") or {}
            if status.get("phase") and status.get("observedGeneration") == obj["metadata"]["generation"]:
                return obj
            if time.monotonic() > deadline or not self.operator.alive():
                pytest.fail(
                    f"Rollout {self.ns}/{name} has no verdict after {VERDICT_TIMEOUT:.0f} s: {status}\n"
                    f"spec: {json.dumps(obj.get('spec'))}\noperator log:\n{self.operator.tail()}"
                )
            time.sleep(0.05)

    def assert_operator_quiet(self, case: str) -> None:
        fresh = self.new_log()
        # kopf's own retries (e.g. 429 'storage is (re)initializing' on its first watch) are not the operator's.
        problems = [
            line for line in fresh.splitlines() if "Traceback" in line or re.search(r"tick of \S+ failed", line)
        ]
        assert not problems, f"the operator failed on {case}:\n" + "\n".join(problems) + "\n" + fresh[-4000:]


@pytest.fixture(scope="module")
def harness(
    api_client: client.ApiClient, stack: devstack.StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """One namespace and one operator process for all the cases of a module (a case takes about half a second)."""
    core = client.CoreV1Api(api_client)
    ns = f"fuzz-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    port = devstack.free_ports(1)[0]
    argv = [sys.executable, "-m", "coalmine", "run", "--namespace", ns, "--prometheus-url", stack.prometheus_url]
    argv += ["--scrape-interval", stack.scrape_interval, "--health-port", "0", "--metrics-port", str(port)]
    argv += ["--listen-address", "127.0.0.1"]
    log = tmp_path_factory.mktemp("fuzz") / "operator.log"
    operator = OperatorProcess("fuzz-operator", argv, log, env={"KUBECONFIG": str(stack.kubeconfig)}).start()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(metrics_url, timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"the operator never served /metrics:\n{operator.tail()}"
            assert operator.alive(), operator.tail()
            time.sleep(0.2)
    h = Harness(client.CustomObjectsApi(api_client), ns, operator, metrics_url)
    try:
        yield h
    finally:
        operator.stop()
        core.delete_namespace(ns)


def report(target: str, h: Harness, examples: int) -> None:
    summary = {"target": target, "examples": examples, "outcomes": dict(sorted(h.outcomes.items()))}
    print(f"\nfuzz {target}: {json.dumps(summary)}")
    if path := os.environ.get("COALMINE_FUZZ_REPORT"):
        with open(path, "a") as out:
            out.write(json.dumps(summary) + "\n")


# --- checks on what the operator did -----------------------------------------------------------------------


def refused(error: ApiException) -> str:
    try:
        message = str(json.loads(error.body or "{}").get("message") or error.body)
    except ValueError:
        message = str(error.body)
    return message


def try_create(h: Harness, plural: str, body: dict[str, Any], group: tuple[str, str] = ISTIO) -> tuple[int, str] | None:
    """Create `body`; None when created, else the HTTP status and the server's message."""
    try:
        h.create(plural, body, group)
    except ApiException as error:
        return error.status, refused(error)
    return None


def owned_indices(vs: dict[str, Any], routes: list[str] | None) -> list[int] | None:
    http = (vs.get("spec") or {}).get("http") or []
    if not routes:
        return [0] if len(http) == 1 else None
    found = [next((i for i, r in enumerate(http) if r.get("name") == n), None) for n in routes]
    return None if any(i is None for i in found) else [i for i in found if i is not None]


def canary_share(vs: dict[str, Any], obj: dict[str, Any]) -> int | None:
    """The share the routes give the Rollout's recorded canary (Istio's weights are relative), None if unknown."""
    status = obj.get("status") or {}
    owned = owned_indices(vs, (obj["spec"].get("virtualService") or {}).get("routes"))
    subset = (status.get("canary") or {}).get("subset")
    if owned is None or subset is None:
        return None
    shares = []
    for i in owned:
        entries = [e for e in vs["spec"]["http"][i].get("route") or [] if isinstance(e.get("destination"), dict)]
        weights = [int(e.get("weight") or 0) if len(entries) > 1 else 100 for e in entries]
        total = sum(weights) or 1
        shares.append(
            sum(
                round(100 * w / total)
                for e, w in zip(entries, weights, strict=True)
                if e["destination"].get("subset") == subset
            )
        )
    return max(shares)


def judge(h: Harness, before: dict[str, Any], names: list[str], case: str) -> list[dict[str, Any]]:
    """Check each Rollout's verdict and the VirtualService against it; return the Rollouts as judged.

    A running Rollout's weight is recorded after its traffic write: wait (briefly) until the status and the
    routes agree, then judge both."""
    vs_name = before["metadata"]["name"]
    deadline = time.monotonic() + 10
    while True:
        rollouts = [h.get("rollouts", name, COALMINE) for name in names]
        after = h.get("virtualservices", vs_name)
        running = [o for o in rollouts if (o.get("status") or {}).get("phase") in ("Progressing", "Succeeded")]
        if all(canary_share(after, o) in (None, o["status"].get("canaryWeight")) for o in running):
            break
        if time.monotonic() > deadline:
            break  # judged as it is: the assertions below say what disagrees
        time.sleep(0.1)
    written = after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    for obj in rollouts:
        status = obj.get("status") or {}
        phase, message = status.get("phase"), str(status.get("message") or "")
        if phase in ("Invalid", "Pending"):
            assert FIELD.search(message), f"{case}: {phase} without naming the field: {message!r}"
        else:
            assert phase in ("Progressing", "Succeeded"), f"{case}: a new Rollout went {phase}: {message}"
    if not written:
        return rollouts
    assert len(running) == 1, f"{case}: the VirtualService changed, but {len(running)} Rollouts run"
    obj = running[0]
    status, spec = obj["status"], obj["spec"]
    owned = owned_indices(after, (spec.get("virtualService") or {}).get("routes"))
    assert owned is not None, case
    old, new = copy.deepcopy(before["spec"]), copy.deepcopy(after["spec"])
    for i in owned:
        entries = new["http"][i].pop("route")
        old["http"][i].pop("route", None)
        subsets = [(e["destination"].get("subset"), e.get("weight")) for e in entries]
        weight = status["canaryWeight"]
        assert subsets == [(status["stable"]["subset"], 100 - weight), (status["canary"]["subset"], weight)], (
            f"{case}: owned route {i} is {subsets}, status {status['stable']} / {status['canary']} at {weight}"
        )
    assert old == new, (
        f"{case}: the operator changed what it does not own:\n{json.dumps(before['spec'])}\n{json.dumps(after['spec'])}"
    )
    for key in ("labels", "annotations"):
        assert before["metadata"].get(key) == after["metadata"].get(key), case
    return rollouts


# --- target 1: Rollout specs ---------------------------------------------------------------------------------

units = st.sampled_from(["ms", "s", "m", "h"])
durations = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 120), units),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**20), units),  # far past what a timedelta holds
    st.sampled_from(["1h30m", "1.5s", "0s", "0ms", "500ms", "-5s", "10", "", "5 s", "PT5S", "1d", "1m0.5s"]),
    st.text(max_size=8),
    st.integers(-10, 10),
    st.none(),
)
numbers = st.one_of(
    st.integers(-5, 105),
    st.floats(-10, 200, allow_nan=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 0.5, 0.999, 1.0, 100, 99.9]),
    st.text(max_size=4),
    st.none(),
)
names = st.one_of(
    st.sampled_from(["order", "primary", "beta", "nope", "v1", "v2", "v3", "v9"]),
    st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    st.text(max_size=40),
    st.text(min_size=250, max_size=300),
    st.sampled_from(["ünïcödé", "名前", "x" * 64, "-bad-", "UPPER", "a.b", "a/b", " "]),
)


def weight_steps(weights: list[Any]) -> list[dict[str, Any]]:
    return [{"weight": w} for w in weights]


steps = st.one_of(
    st.sampled_from(
        [[100], [1, 100], [10, 30, 50, 100], [50, 50, 100], [30, 10, 100], [], [0, 100], [100, 100], [99]]
    ).map(weight_steps),
    st.lists(
        st.fixed_dictionaries({"weight": numbers}, optional={"hold": durations, "extra": st.integers()}), max_size=22
    ),
    st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(lambda ws: weight_steps([*sorted(ws), 100])),
    st.text(max_size=5),
    st.none(),
)
destinations = st.one_of(
    st.fixed_dictionaries(
        {"subset": st.one_of(st.sampled_from(["v1", "v2", "v3", "v9"]), names)},
        optional={
            "host": st.sampled_from(["order", "order.{ns}", "order.{ns}.svc.cluster.local", "other", ""]),
            "port": numbers,
        },
    ),
    st.fixed_dictionaries({"subset": st.sampled_from(["v1", "v2"])}),
    st.none(),
    st.just({}),
    st.text(max_size=3),
)
metrics = st.fixed_dictionaries(
    {"name": names, "query": st.sampled_from(["up", "sum(rate(x[{{ window }}]))", "{{ bogus }}", "", "{{namespace}}"])},
    optional={"min": numbers, "max": numbers, "dryRun": st.one_of(st.booleans(), st.text(max_size=2))},
)
analysis = st.fixed_dictionaries(
    {},
    optional={
        "interval": durations,
        "checkEvery": durations,
        "maxNoData": durations,
        "minRequests": numbers,
        "failureLimit": numbers,
        "successRate": st.fixed_dictionaries({}, optional={"min": numbers, "maxDropVsStable": numbers}),
        "latency": st.fixed_dictionaries(
            {}, optional={"quantile": numbers, "maxMs": numbers, "maxRatioVsStable": numbers}
        ),
        "metrics": st.lists(metrics, max_size=3),
        "judge": st.fixed_dictionaries(
            {}, optional={"kind": st.text(max_size=12), "confidence": numbers, "minSamples": numbers}
        ),
        "slo": st.fixed_dictionaries(
            {"objective": numbers}, optional={"burnRate": numbers, "windows": st.lists(durations, max_size=5)}
        ),
        "trafficCheck": st.fixed_dictionaries(
            {}, optional={"enabled": st.booleans(), "tolerance": numbers, "checks": numbers}
        ),
        "failFast": st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "confidence": numbers}),
        "prometheus": st.fixed_dictionaries(
            {}, optional={"address": st.sampled_from(["http://127.0.0.1:1", "ftp://x", ""])}
        ),
        "selector": st.fixed_dictionaries(
            {}, optional={"canary": st.dictionaries(names, st.text(max_size=5), max_size=2)}
        ),
        "surplus": st.integers(),
    },
)
wild_specs = st.fixed_dictionaries(
    {
        "virtualService": st.one_of(
            st.fixed_dictionaries(
                {"name": st.one_of(st.just("{vs}"), names)},
                optional={
                    "routes": st.one_of(
                        st.lists(st.one_of(st.sampled_from(["primary", "beta", "nope"]), names), max_size=3),
                        st.text(max_size=3),
                    )
                },
            ),
            st.just({"name": "{vs}", "routes": ["primary"]}),
            st.none(),
        ),
        "canary": destinations,
    },
    optional={
        "stable": destinations,
        "steps": steps,
        "analysis": analysis,
        "onUnexpectedTraffic": st.one_of(st.sampled_from(["Wait", "Reset"]), st.text(max_size=8)),
        "destinationRule": st.fixed_dictionaries({"name": st.one_of(st.just("{vs}"), names)}),
        "unknownField": st.integers(),
    },
).map(lambda spec: {k: v for k, v in spec.items() if v is not None or k == "canary"})


valid_durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 90), st.sampled_from(["s", "m"]))


@st.composite
def near_valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec the operator runs, then maybe one field of it replaced by anything: the edges of valid."""
    spec: dict[str, Any] = {
        "virtualService": {"name": "{vs}", "routes": ["primary"]},
        "stable": {"host": "order", "subset": "v1"},
        "canary": {"host": "order", "subset": draw(st.sampled_from(["v2", "v2", "v3", "v1"]))},
        "steps": [{"weight": w} for w in draw(st.lists(st.integers(1, 99), max_size=5, unique=True).map(sorted))]
        + [{"weight": 100}],
        "analysis": {"interval": "1h", "checkEvery": draw(valid_durations), "maxNoData": draw(valid_durations)},
    }
    if draw(st.booleans()):
        spec["steps"][0]["hold"] = draw(durations)
    if draw(st.booleans()):
        del spec["stable"]
    mutation = draw(
        st.sampled_from(["none", "none", "steps", "analysis", "canary", "stable", "virtualService", "extra"])
    )
    if mutation == "steps":
        spec["steps"] = draw(steps)
    elif mutation == "analysis":
        spec["analysis"] = {**spec["analysis"], **draw(analysis)}
    elif mutation in ("canary", "stable"):
        spec[mutation] = draw(destinations)
    elif mutation == "virtualService":
        spec["virtualService"] = {"name": "{vs}", "routes": draw(st.lists(names, max_size=3))}
    elif mutation == "extra":
        spec[draw(names)] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    return spec


rollout_specs = st.one_of(wild_specs, near_valid_specs())


def fill(value: Any, ns: str, vs: str) -> Any:
    """Put the case's namespace and VirtualService name where the strategies left placeholders."""
    if isinstance(value, str):
        return value.replace("{vs}", vs).replace("{ns}", ns)
    if isinstance(value, list):
        return [fill(v, ns, vs) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ns, vs) for k, v in value.items()}
    return value


def test_fuzz_rollout_specs(harness: Harness) -> None:
    h = harness
    h.new_log()
    h.outcomes.clear()
    count = 0

    @FUZZ
    @given(spec=rollout_specs, odd_name=st.one_of(st.none(), names))
    def case(spec: dict[str, Any], odd_name: str | None) -> None:
        nonlocal count
        count += 1
        tag = uuid.uuid4().hex[:8]
        vs_name = f"fz-{tag}"
        spec = fill(spec, h.ns, vs_name)
        name = odd_name if odd_name is not None else vs_name
        description = f"spec {json.dumps(spec)[:1500]}, name {name!r}"
        dr = destination_rule(h.ns)
        dr["metadata"]["name"] = vs_name
        dr["spec"]["subsets"].append({"name": "v3", "labels": {"app": "order"}})  # no version label to select by
        vs = virtual_service(h.ns)
        vs["metadata"]["name"] = vs_name
        h.create("destinationrules", dr)
        before = h.create("virtualservices", vs)
        body = {"apiVersion": "coalmine.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": spec}
        try:
            refusal = try_create(h, "rollouts", body, COALMINE)
            if refusal is not None:
                code, message = refusal
                assert code in (400, 422), f"{description}: HTTP {code}: {message}"
                assert FIELD.search(message), f"{description}: refused without naming the field: {message}"
                h.outcomes["rejected at apply"] += 1
                return
            h.verdict(name)
            (obj,) = judge(h, before, [name], description)
            outcome = obj["status"]["phase"]
            if os.environ.get("COALMINE_FUZZ_DEBUG"):
                print(outcome, obj["status"].get("message"), description[:300])
            h.outcomes[outcome] += 1
            h.assert_operator_quiet(description)
        finally:  # every case has the namespace to itself: each DestinationRule has host `order`
            with_suppressed_delete(h, name)
            h.delete("virtualservices", vs_name)
            h.delete("destinationrules", vs_name)

    case()
    report("rollout specs", h, count)
    assert h.reconcile_errors() == 0
    assert count >= EXAMPLES
    assert h.outcomes["rejected at apply"] > 0
    assert h.outcomes["Invalid"] + h.outcomes["Pending"] > 0
    assert h.outcomes["Progressing"] + h.outcomes["Succeeded"] > 0


def with_suppressed_delete(h: Harness, name: str) -> None:
    with contextlib.suppress(ApiException, ValueError):  # a name the API server refused has nothing to delete
        h.delete("rollouts", name, COALMINE)


# --- target 2: VirtualService shapes ----------------------------------------------------------------------

hosts = st.sampled_from(["order", "order.{ns}.svc.cluster.local", "order.{ns}", "other"])
subsets = st.sampled_from(["v1", "v1", "v1", "v2", "v3", None])


@st.composite
def destination_entries(draw: st.DrawFn) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": draw(hosts)}
    if (subset := draw(subsets)) is not None:
        destination["subset"] = subset
    if draw(st.booleans()):
        destination["port"] = {"number": draw(st.sampled_from([8080, 80, 9090]))}
    entry: dict[str, Any] = {"destination": destination}
    weight = draw(st.one_of(st.none(), st.integers(0, 100), st.sampled_from([100, 90, 10, 0, 50])))
    if weight is not None:
        entry["weight"] = weight
    return entry


@st.composite
def http_routes(draw: st.DrawFn, delegate_to: str | None) -> dict[str, Any]:
    route: dict[str, Any] = {}
    if (
        name := draw(st.one_of(st.none(), st.sampled_from(["primary", "beta", "canary", "ünï", "primary"])))
    ) is not None:
        route["name"] = name
    if draw(st.booleans()):
        route["match"] = [{"headers": {"user-group": {"exact": draw(st.sampled_from(["beta", "qa"]))}}}]
    kind = draw(
        st.sampled_from(
            ["route", "route", "route", "redirect", "delegate"] if delegate_to else ["route", "route", "redirect"]
        )
    )
    if kind == "route":
        route["route"] = draw(st.lists(destination_entries(), min_size=1, max_size=3))
        if draw(st.booleans()):
            route["timeout"] = "5s"
    elif kind == "redirect":
        route["redirect"] = {"uri": "/elsewhere"}
    else:
        route["delegate"] = {"name": delegate_to}
    return route


@st.composite
def virtual_services(draw: st.DrawFn) -> dict[str, Any]:
    """{"root": VS spec, "child": delegate VS spec or None, "target": "root"|"child"}"""
    has_child = draw(st.booleans()) and draw(st.booleans())
    root_hosts = draw(st.lists(hosts, min_size=1, max_size=3, unique=True))
    spec: dict[str, Any] = {
        "hosts": root_hosts,
        "http": draw(st.lists(http_routes("{child}" if has_child else None), min_size=1, max_size=4)),
    }
    if draw(st.booleans()):
        spec["tcp"] = [
            {"match": [{"port": 9000}], "route": [{"destination": {"host": "order", "port": {"number": 9000}}}]}
        ]
    if draw(st.booleans()):
        spec["tls"] = [
            {
                "match": [{"port": 443, "sniHosts": [root_hosts[0]]}],
                "route": [{"destination": {"host": "order", "port": {"number": 443}}}],
            }
        ]
    child = None
    if has_child:
        child = {"http": draw(st.lists(http_routes(None), min_size=1, max_size=3))}
    target = draw(st.sampled_from(["root", "child"])) if has_child else "root"
    return {"root": spec, "child": child, "target": target}


@st.composite
def claimants(draw: st.DrawFn, route_names: list[str], vs_hosts: list[str]) -> dict[str, Any]:
    """A Rollout for the drawn VirtualService: mostly naming routes it has, sometimes ones it has not."""
    spec: dict[str, Any] = {
        "virtualService": {"name": "{vs}"},
        "canary": {"subset": draw(st.sampled_from(["v2", "v2", "v1", "v3"]))},
    }
    names = st.sampled_from([*route_names, "nope", "ünï"]) if route_names else st.sampled_from(["primary", "nope"])
    routes = draw(st.one_of(st.none(), st.lists(names, min_size=1, max_size=2, unique=True)))
    if routes is not None:
        spec["virtualService"]["routes"] = routes
    if (stable := draw(st.one_of(st.none(), st.sampled_from(["v1", "v1", "v2", "v3"])))) is not None:
        spec["stable"] = {"subset": stable}
    if draw(st.booleans()):
        spec["canary"]["host"] = draw(st.sampled_from(vs_hosts) if vs_hosts and draw(st.booleans()) else hosts)
        if "stable" in spec:
            spec["stable"]["host"] = spec["canary"]["host"]
    if draw(st.booleans()):
        spec["canary"]["port"] = draw(st.sampled_from([8080, 9090]))
    if draw(st.booleans()):
        spec["steps"] = [{"weight": w} for w in draw(st.sampled_from([[100], [1, 100], [10, 100], [50, 100]]))]
    spec["analysis"] = {"interval": "1h", "checkEvery": "1m", "maxNoData": "1h"}
    return spec


def test_fuzz_virtualservice_shapes(harness: Harness) -> None:
    h = harness
    h.new_log()
    h.outcomes.clear()
    count = 0

    @FUZZ
    @given(shape=virtual_services(), data=st.data())
    def case(shape: dict[str, Any], data: st.DataObject) -> None:
        nonlocal count
        count += 1
        target_spec = shape["root"] if shape["target"] == "root" else shape["child"]
        route_names = [r["name"] for r in target_spec["http"] if "name" in r]
        vs_hosts = list(target_spec.get("hosts") or [])
        first = data.draw(claimants(route_names, vs_hosts), label="first Rollout")
        second = data.draw(st.one_of(st.none(), claimants(route_names, vs_hosts)), label="second Rollout")
        tag = uuid.uuid4().hex[:8]
        root_name, child_name = f"fz-{tag}", f"fz-{tag}-child"
        target = root_name if shape["target"] == "root" else child_name
        shape = fill(json.loads(json.dumps(shape).replace("{child}", child_name)), h.ns, target)
        claims = [fill(c, h.ns, target) for c in (first, second) if c is not None]
        description = f"VirtualService {json.dumps(shape)}, Rollouts {json.dumps(claims)}"
        dr = destination_rule(h.ns)
        dr["metadata"]["name"] = root_name
        dr["spec"]["subsets"].append({"name": "v3", "labels": {"app": "order", "version": "v3"}})
        h.create("destinationrules", dr)
        made: list[tuple[str, str, tuple[str, str]]] = [("destinationrules", root_name, ISTIO)]
        try:
            objects = [(child_name, shape["child"])] if shape["child"] is not None else []
            objects.append((root_name, shape["root"]))
            for name, spec in objects:
                vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name}}
                refusal = try_create(h, "virtualservices", {**vs, "spec": spec})
                if refusal is not None:
                    code, message = refusal
                    assert code in (400, 422), f"{description}: HTTP {code}: {message}"
                    istio = 'admission webhook "validation.istio.io" denied the request'
                    assert istio in message or "spec." in message, message
                    h.outcomes["VirtualService refused by Istio"] += 1
                    return
                made.append(("virtualservices", name, ISTIO))
            before = h.get("virtualservices", target)
            names = []
            for i, spec in enumerate(claims):
                name = f"{target}-r{i}"
                h.create(
                    "rollouts",
                    {
                        "apiVersion": "coalmine.dev/v1alpha1",
                        "kind": "Rollout",
                        "metadata": {"name": name},
                        "spec": spec,
                    },
                    COALMINE,
                )
                made.append(("rollouts", name, COALMINE))
                names.append(name)
                time.sleep(0.01)  # distinct creation order; ownership ties break by creationTimestamp, then name
            for name in names:
                h.verdict(name)
            verdicts = judge(h, before, names, description)
            outcomes = [obj["status"]["phase"] for obj in verdicts]
            if os.environ.get("COALMINE_FUZZ_DEBUG"):
                print("CASE", outcomes, [str(o["status"].get("message"))[:150] for o in verdicts])
            for obj, outcome in zip(verdicts, outcomes, strict=True):
                conditions = {c["type"]: c for c in obj["status"].get("conditions") or []}
                reason = conditions.get("Stalled", {}).get("reason") if outcome == "Pending" else None
                h.outcomes[f"{outcome} ({reason})" if reason and reason != "NotStalled" else outcome] += 1
            if len(verdicts) == 2 and all(o in ("Progressing", "Succeeded") for o in outcomes):
                shared = set(owned_indices(before, verdicts[0]["spec"]["virtualService"].get("routes")) or []) & set(
                    owned_indices(before, verdicts[1]["spec"]["virtualService"].get("routes")) or []
                )
                assert not shared, f"{description}: two Rollouts run on route(s) {shared}"
            h.assert_operator_quiet(description)
        finally:  # every case has the namespace to itself: each DestinationRule has host `order`
            for plural, name, group in reversed(made):
                h.delete(plural, name, group)

    case()
    report("virtualservice shapes", h, count)
    assert h.reconcile_errors() == 0
    assert count >= EXAMPLES
    assert h.outcomes["Progressing"] + h.outcomes["Succeeded"] > 0
