"""The operator against a real kube-apiserver, Prometheus and Istio CRDs, with meshsim traffic."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rollout_support import (
    COALMINE,
    OperatorProcess,
    Shop,
    destination_rule,
    rollback_bound,
    rollback_deadline,
    rollout,
    ts,
    without_owned_route,
)

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

RPS = 150.0  # meshsim requests per second to `order`: 15/s reach the canary at 10 %


def _traffic(meshsim: Any, namespace: str, rps: float = RPS) -> None:
    meshsim.client.set_service(namespace, "order", rps=rps, headers=[(0.9, {}), (0.1, {"user-group": "beta"})])


def test_healthy_canary_is_promoted_step_by_step(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    _traffic(meshsim, namespace)
    before = shop.get_vs()
    dr_before = shop.get_dr()
    op = operator_factory(namespace)
    shop.create_rollout(steps=[{"weight": 10, "hold": "4s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}])

    seen: list[tuple[int, float]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        weight = shop.canary_weight()
        if not seen or seen[-1][0] != weight:
            seen.append((weight, time.monotonic()))
        if shop.status().get("phase") == "Succeeded":
            break
        time.sleep(0.1)
    status = shop.wait_for_phase("Succeeded", 5, op)

    assert [w for w, _ in seen] == [0, 10, 30, 50, 100], f"weights seen on the VS: {seen}"
    history = status["history"]
    assert [h["weight"] for h in history] == [10, 30, 50, 100]
    holds = [4, 3, 3, 3]
    starts = [ts(h["startedAt"]) for h in history] + [ts(status["finishedAt"])]
    for i, hold in enumerate(holds):
        assert (starts[i + 1] - starts[i]).total_seconds() >= hold, f"step {i + 1} held {starts[i + 1] - starts[i]}"
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert status["canaryWeight"] == 100
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == status["observedGeneration"] == 1
    verdicts = {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}
    assert verdicts == {
        "success-rate": "Pass",
        "latency-p99": "Pass",
        "circuit-breaker": "Pass",
        "traffic": "Skipped",
    }, verdicts
    assert 'destination_version="v2"' in status["analysis"]["metrics"][0]["query"]
    traffic = next(m for m in status["analysis"]["metrics"] if m["name"] == "traffic")
    assert "route beta also sends to the stable or canary" in traffic["reason"], "the seed's A/B route shares v2"

    # Who moved the weights is on record: the operator's writes name it (`--show-managed-fields`).
    vs_managers = {(m["manager"], m["operation"]) for m in shop.get_vs()["metadata"]["managedFields"]}
    assert ("coalmine", "Update") in vs_managers, vs_managers
    rollout = shop.custom.get_namespaced_custom_object(*COALMINE, namespace, "rollouts", "order")
    status_managers = {m["manager"] for m in rollout["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert status_managers == {"coalmine"}, status_managers

    # Everything but the owned route's destinations is as the user wrote it; the DR is untouched.
    assert without_owned_route(shop.get_vs()) == without_owned_route(before)
    assert shop.get_dr()["spec"] == dr_before["spec"]
    assert shop.get_dr()["metadata"]["resourceVersion"] == dr_before["metadata"]["resourceVersion"]

    reasons = [e.reason for e in shop.events()]
    assert reasons.count("StepAdvanced") == 3
    assert reasons[0] == "RolloutStarted"
    assert reasons[-1] == "Succeeded"

    # Flux and `kubectl wait` read the same condition.
    done = subprocess.run(
        [
            str(binaries.kubectl()),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "wait",
            "rollout/order",
            "--for=condition=Ready",
            "--timeout=5s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _watch_weight(shop: Shop, until: Callable[[int], bool], timeout: float) -> tuple[int, float]:
    """Poll the VS every 20 ms until `until(canary weight)`; return the weight and when it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        weight = shop.canary_weight()
        if until(weight):
            return weight, time.monotonic()
        time.sleep(0.02)
    pytest.fail(f"canary weight did not change as expected within {timeout} s (now {shop.canary_weight()})")


def _at_30(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess], **spec: Any
) -> OperatorProcess:
    """Traffic on, an operator running, and a Rollout that has reached its 30 % step."""
    _traffic(meshsim, namespace)
    op = operator_factory(namespace)
    shop.create_rollout(**spec)
    _watch_weight(shop, lambda w: w == 30, 60)
    return op


def _second_step_holds(hold: str) -> list[dict[str, Any]]:
    return [{"weight": 10}, {"weight": 30, "hold": hold}, {"weight": 50}, {"weight": 100}]


def test_canary_failing_at_30_is_rolled_back_to_zero_fast(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = _at_30(shop, meshsim, namespace, operator_factory, steps=_second_step_holds("60s"))
    time.sleep(1.5)  # let the step run on healthy data first
    broken_at = time.monotonic()
    meshsim.client.set_destination(namespace, "order", "v2", error_ratio=0.5, p50_ms=40, p99_ms=120)
    weight, rolled_back_at = _watch_weight(shop, lambda w: w != 30, 30)
    latency = rolled_back_at - broken_at
    print(f"\ndetection-to-rollback (meshsim starts failing -> VS canary weight 0 seen): {latency:.2f} s")

    assert weight == 0, "a failed step goes straight back to 0, never forward"
    status = shop.wait_for_phase("RolledBack", 5, op)
    bound = rollback_bound(failure_limit=2, check_every=1.0, scrape_interval=1.0)
    deadline = rollback_deadline(failure_limit=2, check_every=1.0, scrape_interval=1.0)
    print(
        f"README's bound {bound:.0f} s (bench/rollback_latency.py measures it); this test's deadline {deadline:.0f} s"
    )
    assert latency < deadline, f"rollback took {latency:.1f} s, over {deadline:.0f} s (README's bound {bound:.0f} s)"
    assert shop.primary_weights() == {"v1": 100, "v2": 0}
    rollback = status["rollback"]
    assert rollback["reason"] in ("FailFast", "FailureLimit"), "one overwhelming check, or failureLimit in a row"
    assert rollback["metric"] == "success-rate"
    assert rollback["value"] < 95
    assert rollback["threshold"] == ">= 95"
    assert 'response_code!~"5.."' in rollback["query"]
    assert "success-rate" in status["message"]
    assert f"{rollback['value']:.4g}" in status["message"], "the message carries the number that failed"
    assert status["stepIndex"] == 1
    assert status["canaryWeight"] == 0
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    assert shop.wait_for_event("RolledBack").reason == "RolledBack"
    # Traffic really moved: of what meshsim sends to `order` now, v2 gets only the beta A/B route's share
    # (10 %, untouched by design), not 10 % + 90 % x 30 % = 37 % as it would at 30.
    time.sleep(1.5)  # requests routed before the write have been counted
    meshsim.client.reset_counts()
    deadline = time.monotonic() + 20
    while sum(meshsim.client.counts()["destinations"].values()) < 300:
        assert time.monotonic() < deadline, "meshsim sent too little traffic to measure"
        time.sleep(0.2)
    counts = meshsim.client.counts()["destinations"]
    v1, v2 = counts.get(f"{namespace}/order/v1", 0), counts.get(f"{namespace}/order/v2", 0)
    assert v2 / (v1 + v2) < 0.2, f"v2 still gets {v2 / (v1 + v2):.0%} of the requests: traffic did not move"


def test_canary_without_traffic_holds_then_rolls_back_after_max_no_data(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    # meshsim runs but sends nothing to `order`: every check has no data.
    op = operator_factory(namespace)
    started = time.monotonic()
    shop.create_rollout(analysis={"maxNoData": "6s"})
    status = shop.wait_for(lambda s: s.get("analysis", {}).get("verdict") == "NoData", 20, "a no-data check", op)
    assert status["phase"] == "Progressing"
    assert "no canary requests" in status["message"]
    status = shop.wait_for_phase("RolledBack", 30, op)
    elapsed = time.monotonic() - started
    assert elapsed >= 6, "no data held the step for maxNoData before rolling back"
    assert [h["weight"] for h in status["history"]] == [10], "no data never advances a step"
    assert status["rollback"]["reason"] == "NoData"
    assert "maxNoData 6s" in status["message"]
    _watch_weight(shop, lambda w: w == 0, 2)  # the VS write follows the status write
    assert shop.primary_weights() == {"v1": 100, "v2": 0}
    assert "NoData" in [e.reason for e in shop.events()]


@pytest.mark.parametrize("outcome", ["recovers", "rolls-back"])
def test_prometheus_stopped_mid_step(
    outcome: str,
    shop: Shop,
    meshsim: Any,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    stack: devstack.StackInfo,
) -> None:
    max_no_data = "40s" if outcome == "recovers" else "5s"
    op = _at_30(shop, meshsim, namespace, operator_factory, analysis={"maxNoData": max_no_data})
    devstack.stop_prometheus(stack.state_dir)
    try:
        status = shop.wait_for(
            lambda s: "unreachable" in s.get("message", ""), 15, "a check noting Prometheus unreachable", op
        )
        assert status["phase"] == "Progressing"
        assert status["analysis"]["verdict"] == "NoData"
        time.sleep(3)
        assert shop.status()["stepIndex"] == 1, "no data holds the step"
        if outcome == "recovers":
            devstack.start_prometheus(stack.state_dir)
            status = shop.wait_for_phase("Succeeded", 60, op)
            assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
        else:
            status = shop.wait_for_phase("RolledBack", 30, op)
            assert status["rollback"]["reason"] == "NoData"
            assert "unreachable" in status["message"]
            _watch_weight(shop, lambda w: w == 0, 2)  # the VS write follows the status write
            assert shop.primary_weights() == {"v1": 100, "v2": 0}
    finally:
        if not devstack.status(stack.state_dir) or not devstack.status(stack.state_dir).get("prometheus"):
            devstack.start_prometheus(stack.state_dir)


def test_invalid_rollout_writes_nothing_and_says_why(
    shop: Shop, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = operator_factory(namespace)
    vs_before = shop.get_vs()
    shop.create_rollout(canary={"host": "order", "subset": "v3"})
    status = shop.wait_for_phase("Invalid", 20, op)
    assert "spec.canary.subset" in status["message"]
    assert f"DestinationRule {namespace}/order defines no subset 'v3'" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    time.sleep(2)
    assert shop.get_vs()["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]
    assert "Invalid" in [e.reason for e in shop.events()]
    # Fixing the spec (a new generation) starts the rollout.
    shop.patch_rollout_spec({"canary": {"host": "order", "subset": "v2"}})
    shop.wait_for(lambda s: s.get("phase") == "Progressing" and s.get("observedGeneration") == 2, 20, "Progressing", op)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        pytest.param(
            [{"weight": 30}, {"weight": 10}, {"weight": 100}], "step weights must strictly increase", id="order"
        ),
        pytest.param([{"weight": 10}, {"weight": 50}], "the last step must have weight 100", id="last"),
        pytest.param([{"weight": 10, "hold": "soon"}, {"weight": 100}], "spec.steps[0].hold", id="hold"),
    ],
)
def test_crd_rejects_bad_steps_at_apply(shop: Shop, steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(client.exceptions.ApiException) as error:
        shop.create_rollout(steps=steps)
    assert error.value.status == 422
    assert message in error.value.body


def test_rollout_waits_for_objects_applied_after_it(
    api_client: client.ApiClient, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    shop = Shop(api_client, namespace)
    op = operator_factory(namespace)
    shop.create_rollout()
    status = shop.wait_for_phase("Pending", 20, op)
    assert f"VirtualService {namespace}/order (spec.virtualService.name) not found" in status["message"]
    shop.apply_istio()
    shop.wait_for(lambda s: s.get("phase") == "Progressing", 30, "Progressing", op)
    _watch_weight(shop, lambda w: w == 10, 10)


def test_operator_killed_mid_step_resumes_the_same_step(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    # A 20-s hold: with 8 s, a restart slowed by a loaded machine found the hold over and its first check
    # advanced the step (a clean-clone 4-worker run on ea0a007), so no check "in the same step" was seen.
    op = _at_30(shop, meshsim, namespace, operator_factory, steps=_second_step_holds("20s"))
    time.sleep(2)
    before = shop.status()
    op.kill()
    time.sleep(2)
    restarted = operator_factory(namespace)
    # The new process checks the step it found, and keeps the step's start (so its deadline).
    resumed = shop.wait_for(
        lambda s: s["analysis"]["checkedAt"] > before["analysis"]["checkedAt"] and s.get("stepIndex") == 1,
        20,
        "a check by the restarted operator in the same step",
        restarted,
    )
    assert resumed["stepStartedAt"] == before["stepStartedAt"]
    assert [h["weight"] for h in resumed["history"]] == [10, 30]
    status = shop.wait_for_phase("Succeeded", 90, restarted)
    history = status["history"]
    assert [h["weight"] for h in history] == [10, 30, 50, 100], "no step repeated or skipped"
    step2 = history[1]
    # The history entry is the decision; stepStartedAt, when its traffic arrived (the routes' write just after).
    decided_to_arrived = (ts(before["stepStartedAt"]) - ts(step2["startedAt"])).total_seconds()
    assert 0 <= decided_to_arrived < 5, "the step kept its start, so its deadline"
    held = (ts(history[2]["startedAt"]) - ts(step2["startedAt"])).total_seconds()
    assert held >= 8


def test_decided_rollback_is_finished_after_a_crash(
    shop: Shop,
    meshsim: Any,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    api_client: client.ApiClient,
) -> None:
    """The status says RolledBack but the operator died before moving traffic: the next one moves it."""
    op = _at_30(shop, meshsim, namespace, operator_factory, steps=_second_step_holds("60s"))
    op.kill()
    # Exactly what the dead operator had committed: the decision, written before the VS.
    current = shop.get_rollout()
    decided = {**current["status"], "phase": "RolledBack", "canaryWeight": 0, "message": "rolled back (test)"}
    shop.custom.patch_namespaced_custom_object_status(
        "coalmine.dev", "v1alpha1", namespace, "rollouts", "order", {"status": decided}
    )
    assert shop.canary_weight() == 30
    operator_factory(namespace)
    _watch_weight(shop, lambda w: w == 0, 20)
    assert shop.primary_weights() == {"v1": 100, "v2": 0}


def test_concurrent_edits_of_the_vs_survive_and_reverted_weights_are_restored(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _traffic(meshsim, namespace)
    op = operator_factory(namespace)
    shop.create_rollout(steps=[{"weight": 10, "hold": "6s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}])
    _watch_weight(shop, lambda w: w == 10, 30)
    vs = shop.get_vs()
    index = shop.route_index("primary", vs)
    # Git reverts the weights to what it holds...
    shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/route", "value": virtual_service_route()}])
    # ...and the operator puts its weight back at once (the VirtualService's watch event), not at the next step.
    _watch_weight(shop, lambda w: w == 10, 4)
    # Then a user edits the owned route's other fields and the stable destination's headers mid-rollout.
    shop.patch_vs(
        [
            {"op": "replace", "path": f"/spec/http/{index}/timeout", "value": "7s"},
            {
                "op": "add",
                "path": f"/spec/http/{index}/route/0/headers",
                "value": {"request": {"set": {"x-team": "shop"}}},
            },
            {"op": "add", "path": "/spec/http/0/timeout", "value": "1s"},
        ]
    )
    status = shop.wait_for_phase("Succeeded", 90, op)
    vs = shop.get_vs()
    primary = vs["spec"]["http"][index]
    assert primary["timeout"] == "7s"
    assert primary["route"][0]["headers"] == {"request": {"set": {"x-team": "shop"}}}, "the stable entry's edit is kept"
    assert vs["spec"]["http"][0]["timeout"] == "1s"
    assert shop.primary_weights(vs) == {"v1": 0, "v2": 100}
    assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]


def virtual_service_route() -> list[dict[str, Any]]:
    return [{"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 100}]


def test_kubectl_explains_every_field_and_prints_the_columns(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    kubectl = [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig)]

    def run(*args: str) -> str:
        done = subprocess.run([*kubectl, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    explained = run("explain", "rollout.spec")
    for field in ("virtualService", "stable", "canary", "destinationRule", "steps", "analysis"):
        assert field in explained
    analysis = run("explain", "rollout.spec.analysis")
    for field in ("interval", "checkEvery", "successRate", "latency", "minRequests", "failureLimit", "maxNoData"):
        assert any(line.strip().startswith(field) for line in analysis.splitlines()), field
    assert "Consecutive failed checks that roll the canary back" in analysis

    _traffic(meshsim, namespace)
    op = operator_factory(namespace)
    shop.create_rollout()
    shop.wait_for(lambda s: s.get("canaryWeight") == 10, 20, "at 10 %", op)
    table = run("get", "rollouts", "-n", namespace, "-o", "wide")
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "PHASE", "WEIGHT", "STEP", "AGE"]
    assert "MESSAGE" in header
    assert row.split()[:4] == ["order", "Progressing", "10", "1/4"]


def test_releases_that_change_only_the_canary(
    shop: Shop, meshsim: Any, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """GitOps: spec.stable omitted; each release edits the canary subset alone."""
    _traffic(meshsim, namespace)
    op = operator_factory(namespace)
    body = shop.create_rollout(analysis={"interval": "2s"})
    assert "stable" in body["spec"]
    shop.custom.patch_namespaced_custom_object(
        "coalmine.dev",
        "v1alpha1",
        namespace,
        "rollouts",
        "order",
        [{"op": "remove", "path": "/spec/stable"}],
        _content_type="application/json-patch+json",
    )
    status = shop.wait_for(
        lambda s: s.get("phase") == "Succeeded" and s.get("observedGeneration") == 2, 90, "v2 promoted", op
    )
    assert status["stable"]["subset"] == "v1"
    assert shop.primary_weights() == {"v1": 0, "v2": 100}

    dr = shop.get_dr()
    dr["spec"]["subsets"].append({"name": "v3", "labels": {"app": "order", "version": "v3"}})
    shop.custom.replace_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "destinationrules", "order", dr
    )
    shop.patch_rollout_spec({"canary": {"host": "order", "subset": "v3"}})
    status = shop.wait_for(
        lambda s: s.get("phase") == "Succeeded" and s.get("observedGeneration") == 3, 90, "v3 promoted", op
    )
    assert status["stable"]["subset"] == "v2", "the promoted version became the stable"
    assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
    assert shop.primary_weights() == {"v2": 0, "v3": 100}


def _two_route_vs(namespace: str, gold: str = "v1") -> dict[str, Any]:
    """Two routes the Rollout owns, each with its own match: gold-tier users first, everyone else after."""
    dest = {"host": "order", "port": {"number": 8080}}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "order", "namespace": namespace},
        "spec": {
            "hosts": ["order"],
            "http": [
                {
                    "name": "gold",
                    "match": [{"headers": {"x-tier": {"exact": "gold"}}}],
                    "route": [{"destination": {**dest, "subset": gold}, "weight": 100}],
                    "timeout": "2s",
                },
                {"name": "primary", "route": [{"destination": {**dest, "subset": "v1"}, "weight": 100}]},
            ],
        },
    }


def _unnamed_route_vs(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "order", "namespace": namespace},
        "spec": {"hosts": ["order"], "http": [{"route": [{"destination": {"host": "order", "subset": "v1"}}]}]},
    }


def _weights_by_route(vs: dict[str, Any]) -> list[dict[str, int]]:
    return [{d["destination"]["subset"]: d.get("weight", 100) for d in r["route"]} for r in vs["spec"]["http"]]


@pytest.mark.parametrize("outcome", ["succeeds", "rolls-back"])
@pytest.mark.parametrize("shape", ["two-routes", "unnamed-route"])
def test_multi_route_and_unnamed_route_rollouts(
    shape: str,
    outcome: str,
    api_client: client.ApiClient,
    meshsim: Any,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    shop = Shop(api_client, namespace)
    shop.custom.create_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "destinationrules", destination_rule(namespace)
    )
    vs = _two_route_vs(namespace) if shape == "two-routes" else _unnamed_route_vs(namespace)
    shop.custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", vs)
    meshsim.client.set_service(namespace, "order", rps=RPS, headers=[(0.5, {"x-tier": "gold"}), (0.5, {})])
    op = operator_factory(namespace)
    routes = {"routes": ["gold", "primary"]} if shape == "two-routes" else {}
    steps = [{"weight": 20, "hold": "3s"}, {"weight": 100, "hold": "2s"}]
    if outcome == "rolls-back":
        meshsim.client.set_destination(namespace, "order", "v2", error_ratio=0.5)
    shop.create_rollout(virtualService={"name": "order", **routes}, steps=steps)
    status = shop.wait_for_phase("Succeeded" if outcome == "succeeds" else "RolledBack", 60, op)
    weights = _weights_by_route(shop.get_vs())
    every = len(weights)
    if outcome == "succeeds":
        assert weights == [{"v1": 0, "v2": 100}] * every, weights
        assert status["canaryWeight"] == 100
    else:
        assert weights == [{"v1": 100, "v2": 0}] * every, weights
        assert status["canaryWeight"] == 0
    if shape == "two-routes":
        after = shop.get_vs()["spec"]["http"]
        assert after[0]["match"] == vs["spec"]["http"][0]["match"]
        assert after[0]["timeout"] == "2s"


def test_an_inferred_stable_is_refused_when_the_owned_routes_disagree(
    api_client: client.ApiClient, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    shop = Shop(api_client, namespace)
    dr = destination_rule(namespace)
    dr["spec"]["subsets"].append({"name": "v3", "labels": {"app": "order", "version": "v3"}})
    shop.custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "destinationrules", dr)
    vs = _two_route_vs(namespace, gold="v3")
    created = shop.custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", vs)
    op = operator_factory(namespace)
    body = rollout(namespace, virtualService={"name": "order", "routes": ["gold", "primary"]})
    del body["spec"]["stable"]
    shop.custom.create_namespaced_custom_object("coalmine.dev", "v1alpha1", namespace, "rollouts", body)
    status = shop.wait_for_phase("Invalid", 20, op)
    assert "spec.stable: omitted, and the routes are served by different destinations" in status["message"]
    assert "gold: order/v3" in status["message"]
    assert "primary: order/v1" in status["message"]
    time.sleep(2)
    assert shop.get_vs()["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
