"""What happens to traffic when the objects around a running Rollout change, disappear or are claimed twice.

Each test runs the operator as a process against the real API server, Prometheus and meshsim, and checks
the two promises: the status is true of the VirtualService (never a weight the routes do not have), and
the operator moves no traffic nobody asked it to move.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kubernetes import client
from rollout_support import COALMINE, ISTIO, OperatorProcess, Shop, ignore_not_found

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

RPS = 150.0
HOLD_30 = [{"weight": 10}, {"weight": 30, "hold": "60s"}, {"weight": 50}, {"weight": 100}]


def _metrics_args() -> tuple[list[str], str]:
    port = devstack.free_ports(1)[0]
    return ["--metrics-port", str(port), "--listen-address", "127.0.0.1"], f"http://127.0.0.1:{port}/metrics"


def _metric(url: str, metric: str, **labels: str) -> float | None:
    text = httpx.get(url, timeout=5).text
    for line in text.splitlines():
        if not line.startswith(metric + "{") and line.split(" ")[0] != metric:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _at_30(shop: Shop, meshsim: Any, operator: OperatorProcess, steps: list[dict[str, Any]] = HOLD_30) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    shop.create_rollout(steps=steps)
    shop.wait_for(lambda s: s.get("canaryWeight") == 30, 60, "at 30 %", operator)


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def test_a_deleted_canary_subset_rolls_back_at_once(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Users routed to a subset Istio does not know get 503s now: the canary goes to 0 at once, not after maxNoData."""
    op = operator_factory(shop.ns)
    _at_30(shop, meshsim, op)
    dr = shop.get_dr()
    dr["spec"]["subsets"] = [s for s in dr["spec"]["subsets"] if s["name"] != "v2"]
    shop.custom.replace_namespaced_custom_object(*ISTIO, shop.ns, "destinationrules", "order", dr)
    deleted_at = time.monotonic()
    while shop.canary_weight() != 0:
        assert time.monotonic() - deleted_at < 10, f"canary still at {shop.canary_weight()} %"
        time.sleep(0.05)
    took = time.monotonic() - deleted_at
    status = shop.wait_for_phase("RolledBack", 5, op)
    print(f"\nsubset deleted -> canary 0 on the VirtualService: {took:.2f} s (maxNoData is 30 s)")
    assert status["rollback"]["reason"] == "ObjectsChanged"
    assert "defines no subset 'v2'" in status["message"]
    assert status["canaryWeight"] == 0
    assert shop.primary_weights() == {"v1": 100, "v2": 0}


@pytest.mark.parametrize("change", ["route-renamed", "vs-deleted"])
def test_a_rollback_that_cannot_move_traffic_says_where_traffic_is_and_keeps_trying(
    change: str, shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    metrics_args, metrics_url = _metrics_args()
    op = operator_factory(shop.ns, args=metrics_args)
    _at_30(shop, meshsim, op)
    vs = shop.get_vs()
    if change == "route-renamed":
        index = shop.route_index("primary", vs)
        shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/name", "value": "main"}])
    else:
        shop.custom.delete_namespaced_custom_object(*ISTIO, shop.ns, "virtualservices", "order")

    status = shop.wait_for(
        lambda s: s.get("phase") == "RollingBack" and "traffic not moved" in s.get("message", ""), 15, "stuck", op
    )
    assert status["canaryWeight"] == 30, "the routes still give the canary 30 %, and so does the status"
    stalled = _conditions(status)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "TrafficNotMoved")
    expected = "has no http route named 'primary'" if change == "route-renamed" else "not found"
    assert expected in stalled["message"]
    assert "wants 0% and has 30%" in stalled["message"]
    shop.wait_for_event("TrafficNotMoved")
    assert _metric(metrics_url, "coalmine_rollout_traffic_stuck", namespace=shop.ns, name="order") == 1.0
    assert (_metric(metrics_url, "coalmine_traffic_not_moved_total", namespace=shop.ns) or 0) >= 1
    if change == "route-renamed":
        route = next(r for r in shop.get_vs()["spec"]["http"] if r["name"] == "main")
        assert {d["destination"]["subset"]: d["weight"] for d in route["route"]} == {"v1": 70, "v2": 30}

    # The route comes back (renamed back, or Git re-creates the VS): the rollback completes on its own.
    if change == "route-renamed":
        vs = shop.get_vs()
        index = shop.route_index("main", vs)
        shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/name", "value": "primary"}])
    else:
        vs["metadata"] = {"name": "order", "namespace": shop.ns}
        shop.custom.create_namespaced_custom_object(*ISTIO, shop.ns, "virtualservices", vs)
    status = shop.wait_for_phase("RolledBack", 15, op)
    assert shop.primary_weights() == {"v1": 100, "v2": 0}
    assert status["canaryWeight"] == 0
    assert _conditions(status)["Stalled"]["reason"] == "RolledBack"
    assert _metric(metrics_url, "coalmine_rollout_traffic_stuck", namespace=shop.ns, name="order") == 0.0


def test_two_rollouts_claiming_one_route_leave_the_owner_alone(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = operator_factory(shop.ns)
    _at_30(shop, meshsim, op, steps=[{"weight": 10}, {"weight": 30, "hold": "8s"}, {"weight": 50}, {"weight": 100}])
    second = Shop(shop.custom.api_client, shop.ns)
    body = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order-2", "namespace": shop.ns},
        "spec": {
            "virtualService": {"name": "order", "routes": ["primary"]},
            "stable": {"host": "order", "subset": "v2"},
            "canary": {"host": "order", "subset": "v1"},
        },
    }
    second.custom.create_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", body)

    def status_of_second() -> dict[str, Any]:
        obj = shop.custom.get_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", "order-2")
        return obj.get("status") or {}

    deadline = time.monotonic() + 20
    while status_of_second().get("phase") != "Pending":
        assert time.monotonic() < deadline, status_of_second()
        time.sleep(0.1)
    s2 = status_of_second()
    assert f"owned by Rollout {shop.ns}/order" in s2["message"]
    assert _conditions(s2)["Stalled"]["reason"] == "RouteClaimed"
    # A restarted operator decides the same way; the owner goes on undisturbed to the end.
    op.stop()
    op = operator_factory(shop.ns)
    status = shop.wait_for_phase("Succeeded", 60, op)
    assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert status_of_second()["phase"] == "Pending"
    # The owner goes: the second starts, from the routes as the owner left them (v2 serves, its stable).
    shop.custom.delete_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", "order")
    deadline = time.monotonic() + 20
    while status_of_second().get("phase") != "Progressing":
        assert time.monotonic() < deadline, status_of_second()
        time.sleep(0.1)
    assert status_of_second()["stable"]["subset"] == "v2"


def test_deleting_and_recreating_a_rollout_moves_nothing(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = operator_factory(shop.ns)
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    shop.create_rollout(steps=[{"weight": 10, "hold": "2s"}, {"weight": 100, "hold": "1s"}])
    shop.wait_for_phase("Succeeded", 60, op)
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    rollout = shop.get_rollout()
    assert not rollout["metadata"].get("finalizers"), "nothing blocks a delete"
    assert not [a for a in rollout["metadata"].get("annotations") or {} if "kopf" in a], "no kopf bookkeeping"
    vs_before = shop.get_vs()

    shop.custom.delete_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", "order")
    time.sleep(2)
    assert shop.get_vs()["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]

    # Argo CD re-creates it (no status): the canary already has everything, so nothing moves.
    shop.create_rollout(steps=[{"weight": 10, "hold": "2s"}, {"weight": 100, "hold": "1s"}])
    status = shop.wait_for_phase("Succeeded", 20, op)
    assert "already had all the traffic" in status["message"]
    time.sleep(2)
    assert shop.get_vs()["metadata"]["resourceVersion"] == vs_before["metadata"]["resourceVersion"]


@pytest.mark.parametrize("weight", [100, None], ids=["weight-100", "no-weight"])
def test_a_finished_rollout_leaves_a_route_written_as_canary_only_as_it_is(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], weight: int | None
) -> None:
    """Git holds the route as `[canary]` (the release is done, the stable's entry deleted). A finished Rollout
    re-asserts its weight every `--resync`; 100 % is what the route already sends, so it must not be rewritten
    as `[stable 0, canary 100]`: a write that moves nothing, and drift that Argo CD would sync back, every
    resync. bench/scale.py --at-rest found it: 0 of 9,700 such VirtualServices left as written at the end of a run."""
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    vs = shop.get_vs()
    index = shop.route_index("primary", vs)
    destination = {**vs["spec"]["http"][index]["route"][0]["destination"], "subset": "v2"}
    entry = {"destination": destination, **({"weight": weight} if weight is not None else {})}
    written = shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/route", "value": [entry]}])
    op = operator_factory(shop.ns, args=["--resync", "1s"])
    shop.create_rollout(steps=[{"weight": 10, "hold": "2s"}, {"weight": 100, "hold": "1s"}])
    status = shop.wait_for_phase("Succeeded", 30, op)
    assert "already had all the traffic" in status["message"]
    time.sleep(5)  # five resyncs
    after = shop.get_vs()
    assert after["spec"]["http"][index]["route"] == [entry]
    assert after["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"], "not written at all"
    assert f"VirtualService {shop.ns}/order: canary" not in op.log.read_text(errors="replace"), op.log_tail()


def test_a_settled_rollout_skips_its_resyncs_yet_puts_back_a_reverted_route(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """A finished Rollout whose last tick found nothing to do is not ticked again by its resync until
    something it reads changes (coalmine_settled_ticks_total counts the skipped ones). Git reverting the
    route to all-stable is such a change: the canary's 100 % is put back at once, and the skipping resumes."""
    metrics_args, metrics_url = _metrics_args()
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    op = operator_factory(shop.ns, args=["--resync", "1s", *metrics_args])
    shop.create_rollout(steps=[{"weight": 10, "hold": "2s"}, {"weight": 100, "hold": "1s"}])
    shop.wait_for_phase("Succeeded", 60, op)
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    time.sleep(4)  # four resyncs
    skipped = _metric(metrics_url, "coalmine_settled_ticks_total") or 0.0
    assert skipped >= 2, f"resyncs skipped: {skipped}\n{op.log_tail()}"

    vs = shop.get_vs()
    index = shop.route_index("primary", vs)
    shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/route", "value": virtual_service_route_v1()}])
    deadline = time.monotonic() + 10
    while shop.primary_weights() != {"v1": 0, "v2": 100}:
        assert time.monotonic() < deadline, f"the revert was left in place: {shop.get_vs()['spec']}\n{op.log_tail()}"
        time.sleep(0.1)
    written = shop.get_vs()["metadata"]["resourceVersion"]
    time.sleep(4)
    assert (_metric(metrics_url, "coalmine_settled_ticks_total") or 0.0) >= skipped + 2, "settled again"
    assert shop.get_vs()["metadata"]["resourceVersion"] == written, "and nothing written since"
    assert shop.get_rollout()["status"]["phase"] == "Succeeded"


def virtual_service_route_v1() -> list[dict[str, Any]]:
    return [{"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 100}]


def test_a_rollout_created_over_a_split_resumes_or_waits_and_moves_nothing(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    vs = shop.get_vs()
    index = shop.route_index("primary", vs)

    def put(route: list[dict[str, Any]]) -> str:
        result = shop.patch_vs([{"op": "replace", "path": f"/spec/http/{index}/route", "value": route}])
        return str(result["metadata"]["resourceVersion"])

    # A split someone left between two steps: wait, say what was found, move nothing.
    rv = put(
        [
            {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 75},
            {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 25},
        ]
    )
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=HOLD_30)
    status = shop.wait_for_phase("Pending", 20, op)
    assert "order/v1 75%, order/v2 25%" in status["message"]
    assert "nothing moved" in status["message"]
    assert _conditions(status)["Stalled"]["reason"] == "UnexpectedTraffic"
    time.sleep(2)
    assert shop.get_vs()["metadata"]["resourceVersion"] == rv

    # Someone puts it at a step's weight: the rollout resumes at that step without moving anything.
    rv = put(
        [
            {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": 70},
            {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": 30},
        ]
    )
    status = shop.wait_for(lambda s: s.get("phase") == "Progressing", 20, "resumed", op)
    assert (status["stepIndex"], status["canaryWeight"]) == (1, 30)
    assert [h["weight"] for h in status["history"]] == [30]
    assert shop.get_vs()["metadata"]["resourceVersion"] == rv


def test_a_tight_loop_of_concurrent_edits_is_refused_re_read_and_kept(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Another writer edits the owned route's destinations again and again while the operator moves them:
    the API server refuses the operator's stale patches (failed `test` ops), the operator re-reads, and in
    the end the routes carry both the writer's edit and the operator's weights."""
    op = operator_factory(shop.ns)
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    shop.create_rollout(
        steps=[{"weight": 10, "hold": "4s"}, {"weight": 30, "hold": "60s"}, {"weight": 50}, {"weight": 100}]
    )
    shop.wait_for(lambda s: s.get("canaryWeight") == 10, 60, "at 10 %", op)
    stop = threading.Event()
    edits = [0]

    def writer() -> None:
        # Its own client: the kubernetes client is not thread-safe.
        with client.ApiClient(shop.custom.api_client.configuration) as api:
            custom = client.CustomObjectsApi(api)
            while not stop.is_set():
                vs = custom.get_namespaced_custom_object(*ISTIO, shop.ns, "virtualservices", "order")
                index = shop.route_index("primary", vs)
                ops = [
                    {
                        "op": "add",
                        "path": f"/spec/http/{index}/route/0/headers",
                        "value": {"request": {"set": {"x-edit": str(edits[0])}}},
                    }
                ]
                custom.patch_namespaced_custom_object(
                    *ISTIO, shop.ns, "virtualservices", "order", ops, _content_type="application/json-patch+json"
                )
                edits[0] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        status = shop.wait_for(lambda s: s.get("stepIndex") == 1, 30, "the 30 % step decided", op)
        time.sleep(3)
    finally:
        stop.set()
        thread.join(timeout=10)
    last_edit = edits[0] - 1
    status = shop.wait_for(lambda s: s.get("canaryWeight") == 30, 20, "at 30 %", op)
    log = op.log.read_text()
    refused = log.count("changed concurrently")
    print(f"\n{edits[0]} concurrent edits; {refused} operator patches refused by the API server and re-read")
    assert refused >= 1, "the writer never raced the operator: the test proved nothing"
    vs = shop.get_vs()
    route = next(r for r in vs["spec"]["http"] if r["name"] == "primary")
    assert route["route"][0]["headers"] == {"request": {"set": {"x-edit": str(last_edit)}}}, "the last edit is kept"
    assert shop.primary_weights(vs) == {"v1": 70, "v2": 30}
    assert status["canaryWeight"] == 30


def test_a_write_the_api_server_refuses_is_reported_with_its_message_not_retried_as_a_conflict(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], api_client: client.ApiClient
) -> None:
    """An admission policy refuses the 50 % step (422, not a failed `test` op): the status carries the API
    server's message, the operator does not hammer it, the canary keeps being judged at 30 %, and the step
    goes ahead once the policy is gone."""
    name = f"no-fifty-{shop.ns}"
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["networking.istio.io"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["virtualservices"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!object.spec.http.exists(r, has(r.route) && r.route.exists(d, has(d.weight) && d.weight == 50))",
                        "message": "a 50% canary step is not allowed in this namespace",
                        "reason": "Invalid",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": shop.ns}}},
            },
        }
    )
    try:
        op = operator_factory(shop.ns)
        meshsim.client.set_service(shop.ns, "order", rps=RPS)
        time.sleep(1)  # the policy is enforced once the API server has loaded it
        shop.create_rollout(steps=[{"weight": 10}, {"weight": 30, "hold": "3s"}, {"weight": 50}, {"weight": 100}])
        status = shop.wait_for(lambda s: "traffic not moved" in s.get("message", ""), 60, "the 50 % step refused", op)
        assert status["stepIndex"] == 2
        assert status["canaryWeight"] == 30 == shop.canary_weight()
        assert "a 50% canary step is not allowed in this namespace" in status["message"]
        assert _conditions(status)["Stalled"]["reason"] == "TrafficNotMoved"
        first = op.log.read_text().count("the API server refused the write")
        time.sleep(10)
        attempts = op.log.read_text().count("the API server refused the write") - first
        print(f"\nwrites refused by the admission policy in 10 s (checks every 1 s): {attempts}")
        assert 1 <= attempts <= 6, f"{attempts} writes in 10 s: it should back off (1, 2, 4, 8 s), not retry each check"
        assert "kept changing" not in op.log.read_text(), "a refusal is not a concurrent edit"
        assert shop.status()["phase"] == "Progressing"
        assert shop.status()["analysis"]["verdict"] == "Pass", "the canary is still judged at 30 %"
    finally:
        ignore_not_found(lambda: admission.delete_validating_admission_policy_binding(name))
        ignore_not_found(lambda: admission.delete_validating_admission_policy(name))
    status = shop.wait_for(lambda s: s.get("canaryWeight") == 50, 60, "at 50 % once allowed", op)
    assert shop.canary_weight() == 50
    status = shop.wait_for_phase("Succeeded", 60, op)
    assert [h["weight"] for h in status["history"]] == [10, 30, 50, 100]
