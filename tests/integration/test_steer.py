"""Steering a rollout by hand on the real stack: `coalmine promote|abort|pause|resume|retry` (and the same
as `kubectl coalmine ...`) against a real API server, the operator as a process, Prometheus and meshsim.

Each test checks the VirtualService's weights after each command (the status's word is not enough), and
that a request is applied exactly once: across an operator that was down when it was made, restarts,
and two operators racing for it. The commands run as a ServiceAccount bound to exactly the ClusterRole
`coalmine-steer` of examples/steering/rbac.yaml, as the README's RBAC table says a person needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from rollout_support import COALMINE, OperatorProcess, Shop, ts

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RPS = 150.0
ANNOTATION = "coalmine.dev/request"
LONG = [{"weight": 10, "hold": "10m"}, {"weight": 30, "hold": "10m"}, {"weight": 50, "hold": "10m"}, {"weight": 100}]
SHORT = [{"weight": 10, "hold": "2s"}, {"weight": 30, "hold": "2s"}, {"weight": 50, "hold": "2s"}, {"weight": 100}]


@pytest.fixture(scope="session")
def steering_roles(api_client: client.ApiClient) -> Iterator[list[dict[str, Any]]]:
    """examples/steering/rbac.yaml applied as it is (cluster-wide ClusterRoles)."""
    docs = [d for d in yaml.safe_load_all((REPO / "examples/steering/rbac.yaml").read_text()) if d]
    rbac = client.RbacAuthorizationV1Api(api_client)
    for doc in docs:
        assert doc["kind"] == "ClusterRole"
        rbac.create_cluster_role(doc)
    yield docs
    for doc in docs:
        rbac.delete_cluster_role(doc["metadata"]["name"])


@dataclass
class Person:
    """Someone who runs the commands, with a kubeconfig of their own."""

    name: str  # as the API server knows them
    kubeconfig: Path


@pytest.fixture
def person_factory(
    api_client: client.ApiClient,
    stack: devstack.StackInfo,
    namespace: str,
    steering_roles: list[dict[str, Any]],
    tmp_path: Path,
) -> Callable[..., Person]:
    """`person(name, roles)`: a ServiceAccount in the test namespace bound to those ClusterRoles there
    (none: it can do nothing), with a kubeconfig holding a TokenRequest token and no namespace."""
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)

    def person(name: str, roles: tuple[str, ...] = ("coalmine-steer",)) -> Person:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        for role in roles:
            rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": f"{name}-{role}"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            )
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        path = tmp_path / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(devstack.render_kubeconfig(stack.apiserver_url, stack.ca_file, token)))
        return Person(f"system:serviceaccount:{namespace}:{name}", path)

    return person


def steer(
    kubeconfig: Path, namespace: str, verb: str, *args: str, plugin: bool = False, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command as a person would: `coalmine VERB order ...`, or `kubectl coalmine VERB order ...`
    with the stack's kubectl finding the plugin on PATH (the venv's bin, where pip put kubectl-coalmine)."""
    tail = [verb, "order", "-n", namespace, "--kubeconfig", str(kubeconfig), "--timeout", str(timeout), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(binaries.kubectl()), "coalmine", *tail] if plugin else [sys.executable, "-m", "coalmine", *tail]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout + 30, env=env)
    print(f"$ {' '.join(['kubectl coalmine' if plugin else 'coalmine', verb, *args])}\n{done.stdout}{done.stderr}")
    return done


def _healthy(shop: Shop, meshsim: Any) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)


def _passed_at_step(status: dict[str, Any]) -> bool:
    """A passing check of the current step is on record (what promote needs)."""
    check = status.get("analysis") or {}
    started = status.get("stepStartedAt")
    return bool(started and check.get("verdict") == "Pass" and ts(check["checkedAt"]) > ts(started))


def _reasons(shop: Shop) -> list[str]:
    return [e.reason for e in shop.events()]


def _entries(status: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    return [h for h in status.get("history") or [] if (h.get("request") or {}).get("id") == request_id]


def _request_id(shop: Shop) -> str:
    annotation = shop.get_rollout()["metadata"]["annotations"][ANNOTATION]
    return str(json.loads(annotation)["id"])


def test_each_verb_moves_the_routes_as_it_says_for_a_person_with_only_get_and_patch(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], person_factory: Callable[..., Person]
) -> None:
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    oncall = person_factory("oncall")
    shop.create_rollout(steps=LONG)
    shop.wait_for(lambda s: s.get("canaryWeight") == 10 and _passed_at_step(s), 60, "at 10 % with a pass", op)
    generation = shop.get_rollout()["metadata"]["generation"]

    done = steer(oncall.kubeconfig, shop.ns, "pause", "--reason", "checking dashboards", plugin=True)
    assert done.returncode == 0, done.stderr
    assert f"pause requested for Rollout {shop.ns}/order by {oncall.name}" in done.stdout
    assert "applied: pause by" in done.stdout
    assert shop.primary_weights() == {"v1": 90, "v2": 10}
    status = shop.status()
    assert (status["paused"]["by"], status["paused"]["reason"]) == (oncall.name, "checking dashboards")

    done = steer(oncall.kubeconfig, shop.ns, "promote")
    assert done.returncode == 1
    assert "refused" in done.stderr
    assert f"resume it first (coalmine resume order -n {shop.ns})" in done.stderr
    assert shop.primary_weights() == {"v1": 90, "v2": 10}

    done = steer(oncall.kubeconfig, shop.ns, "resume", plugin=True)
    assert done.returncode == 0, done.stderr
    assert shop.primary_weights() == {"v1": 90, "v2": 10}
    assert "paused" not in shop.status()

    shop.wait_for(_passed_at_step, 30, "a passing check", op)
    done = steer(oncall.kubeconfig, shop.ns, "promote", "--reason", "dashboards fine")
    assert done.returncode == 0, done.stderr
    assert "step 1/4 (10%) -> step 2/4 (30%)" in done.stdout
    assert "canary order/v2 30%, stable order/v1 70%" in done.stdout, "it waits until the routes have it"
    assert shop.primary_weights() == {"v1": 70, "v2": 30}
    assert shop.status()["stepIndex"] == 1

    done = steer(oncall.kubeconfig, shop.ns, "abort", "--reason", "error budget")
    assert done.returncode == 0, done.stderr
    assert shop.primary_weights() == {"v1": 100, "v2": 0}
    status = shop.status()
    assert (status["phase"], status["canaryWeight"]) == ("RolledBack", 0)
    assert (status["rollback"]["reason"], status["rollback"]["by"]) == ("Aborted", oncall.name)
    assert status["message"] == f"rolled back at step 2/4 (30%): aborted by {oncall.name}: error budget"

    done = steer(oncall.kubeconfig, shop.ns, "promote")
    assert done.returncode == 1
    assert "only a Progressing rollout can be promoted; this one is RolledBack" in done.stderr

    done = steer(oncall.kubeconfig, shop.ns, "retry", plugin=True)
    assert done.returncode == 0, done.stderr
    assert shop.primary_weights() == {"v1": 90, "v2": 10}
    status = shop.wait_for(_passed_at_step, 30, "a passing check after the retry", op)
    assert (status["phase"], status["stepIndex"], status["observedGeneration"]) == ("Progressing", 0, generation)

    done = steer(oncall.kubeconfig, shop.ns, "promote", "--full")
    assert done.returncode == 0, done.stderr
    assert "skipping the remaining steps and their analysis" in done.stdout
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    status = shop.status()
    assert (status["phase"], status["canaryWeight"]) == ("Succeeded", 100)
    assert shop.get_rollout()["metadata"]["generation"] == generation, "no request touched the spec"

    verbs = [(h["request"]["verb"], h["request"].get("full", False)) for h in status["history"] if h.get("request")]
    assert verbs == [
        ("pause", False),
        ("resume", False),
        ("promote", False),
        ("abort", False),
        ("retry", False),
        ("promote", True),
    ]
    assert all(h["request"]["by"] == oncall.name for h in status["history"] if h.get("request"))
    shop.wait_for_event("Succeeded")
    reasons = _reasons(shop)
    for reason, count in [("Paused", 1), ("Resumed", 1), ("Promoted", 2), ("Aborted", 1), ("Retried", 1)]:
        assert reasons.count(reason) == count, reasons
    assert "RequestRefused" not in reasons, "the CLI refused those itself; nothing reached the operator"


def test_what_a_person_without_the_role_gets_is_a_clear_refusal_and_no_write(
    shop: Shop, operator_factory: Callable[..., OperatorProcess], person_factory: Callable[..., Person]
) -> None:
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=LONG)
    shop.wait_for_phase("Progressing", 30, op)
    viewer = person_factory("viewer", roles=("coalmine-view",))
    nobody = person_factory("nobody", roles=())
    done = steer(viewer.kubeconfig, shop.ns, "pause")
    assert done.returncode == 2
    assert "coalmine pause: not allowed" in done.stderr
    assert f'cannot patch resource "rollouts" in API group "coalmine.dev" in the namespace "{shop.ns}"' in done.stderr
    assert "steering needs get and patch on rollouts.coalmine.dev" in done.stderr
    done = steer(nobody.kubeconfig, shop.ns, "abort")
    assert done.returncode == 2
    assert 'cannot get resource "rollouts"' in done.stderr
    assert ANNOTATION not in (shop.get_rollout()["metadata"].get("annotations") or {}), "nothing was written"


def test_promote_is_refused_while_the_last_check_failed_at_once_and_in_the_status(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    # Failing checks, never a rollback here (neither after failureLimit nor at once by failFast).
    shop.create_rollout(steps=LONG, analysis={"failureLimit": 1000, "failFast": {"enabled": False}})
    shop.wait_for(lambda s: s.get("canaryWeight") == 10 and _passed_at_step(s), 60, "at 10 %", op)
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.5)
    shop.wait_for(lambda s: (s.get("analysis") or {}).get("verdict") == "Fail", 30, "a failed check", op)

    done = steer(kubeconfig, shop.ns, "promote")
    assert done.returncode == 1
    assert "refused: Rollout" in done.stderr
    assert "the last check failed (success-rate" in done.stderr
    assert "promote needs a passing check" in done.stderr
    assert shop.primary_weights() == {"v1": 90, "v2": 10}

    # Written past the CLI (by hand, or a CLI that read an older status): the operator refuses it too.
    request = {"id": "by-hand-1", "verb": "promote", "by": "someone", "generation": 1}
    shop.custom.patch_namespaced_custom_object(
        *COALMINE, shop.ns, "rollouts", "order", {"metadata": {"annotations": {ANNOTATION: json.dumps(request)}}}
    )
    status = shop.wait_for(lambda s: (s.get("lastRequest") or {}).get("id") == "by-hand-1", 15, "handled", op)
    assert status["lastRequest"]["result"] == "Refused"
    assert "the last check failed" in status["lastRequest"]["message"]
    assert shop.wait_for_event("RequestRefused").message.startswith("promote by someone refused: the last check")
    assert shop.primary_weights() == {"v1": 90, "v2": 10}
    assert status["stepIndex"] == 0

    request = {"id": "by-hand-2", "verb": "restart", "by": "someone"}
    shop.custom.patch_namespaced_custom_object(
        *COALMINE, shop.ns, "rollouts", "order", {"metadata": {"annotations": {ANNOTATION: json.dumps(request)}}}
    )
    status = shop.wait_for(lambda s: (s.get("lastRequest") or {}).get("id") == "by-hand-2", 15, "handled", op)
    assert status["lastRequest"]["message"].startswith("unknown verb 'restart'")


def test_pause_never_stops_a_rollback_and_retry_then_succeeds_with_the_same_generation(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    # 30 % held 20 s, not 2: on a loaded CI machine the pause landed after the 2-s hold, at 50 % (the test, not
    # the operator, was wrong: the pause held the weight it found).
    steps = [SHORT[0], {"weight": 30, "hold": "20s"}, *SHORT[2:]]
    shop.create_rollout(steps=steps)
    shop.wait_for(lambda s: s.get("canaryWeight") == 30, 60, "at 30 %", op)
    done = steer(kubeconfig, shop.ns, "pause")
    assert done.returncode == 0, done.stderr
    assert shop.primary_weights() == {"v1": 70, "v2": 30}

    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.5)
    status = shop.wait_for_phase("RolledBack", 30, op)
    assert status["rollback"]["reason"] in ("FailureLimit", "FailFast"), "paused, and still rolled back on its checks"
    assert "paused" not in status
    assert shop.primary_weights() == {"v1": 100, "v2": 0}

    meshsim.client.reset_destination(shop.ns, "order", "v2")  # the dependency that broke it is fixed
    # The first checks of a retry look back 4 scrape intervals (4 s here), as every step's do: retried
    # sooner, they would still see the failed attempt's requests (the README says so).
    rolled_back = ts(status["rollback"]["at"])
    while (datetime.now(rolled_back.tzinfo) - rolled_back).total_seconds() < 6:
        time.sleep(0.1)
    done = steer(kubeconfig, shop.ns, "retry", "--reason", "dependency fixed")
    assert done.returncode == 0, done.stderr
    assert "generation 1 starts again" in done.stdout
    status = shop.wait_for_phase("Succeeded", 90, op)
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert status["observedGeneration"] == shop.get_rollout()["metadata"]["generation"] == 1
    weights = [h["weight"] for h in status["history"]]
    assert weights[-4:] == [10, 30, 50, 100], f"the retry went through every step: {weights}"
    assert status["history"][-4]["request"]["verb"] == "retry"


def test_resume_continues_the_hold_where_it_stopped(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    hold = 12.0
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=[{"weight": 10, "hold": f"{hold:.0f}s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}])
    status = shop.wait_for(lambda s: s.get("canaryWeight") == 10, 60, "at 10 %", op)
    step_started = ts(status["stepStartedAt"])
    while (datetime.now(step_started.tzinfo) - step_started).total_seconds() < hold / 2:
        time.sleep(0.1)
    assert steer(kubeconfig, shop.ns, "pause").returncode == 0
    time.sleep(hold / 2 + 2)  # paused past where the hold would have ended
    assert shop.status()["stepIndex"] == 0, "paused: no further step"
    assert steer(kubeconfig, shop.ns, "resume").returncode == 0
    status = shop.wait_for(lambda s: s.get("canaryWeight", 0) >= 30, 60, "the next step's traffic", op)

    entries = {h["request"]["verb"]: ts(h["startedAt"]) for h in status["history"] if h.get("request")}
    paused = (entries["resume"] - entries["pause"]).total_seconds()
    next_started = next(ts(h["startedAt"]) for h in status["history"] if h["stepIndex"] == 1)
    ran = (next_started - step_started).total_seconds() - paused
    after_resume = (next_started - entries["resume"]).total_seconds()
    print(
        f"\nhold {hold} s: ran {ran:.1f} s unpaused ({paused:.1f} s paused); next step {after_resume:.1f} s after resume"
    )
    assert ran >= hold, "the pause did not shorten the hold"
    assert after_resume < hold, "the hold went on where it stopped, not from zero"
    assert shop.primary_weights()["v2"] >= 30


def test_a_request_made_while_the_operator_is_down_is_applied_once_when_it_starts(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=LONG)
    shop.wait_for(lambda s: s.get("canaryWeight") == 10, 60, "at 10 %", op)
    op.kill()

    done = steer(kubeconfig, shop.ns, "pause", "--reason", "while down", timeout=2)
    assert done.returncode == 3, done.stderr
    assert "not handled yet: the request stays on the Rollout" in done.stderr
    request_id = _request_id(shop)
    assert "lastRequest" not in shop.status()

    op = operator_factory(shop.ns)
    status = shop.wait_for(lambda s: (s.get("lastRequest") or {}).get("id") == request_id, 30, "applied", op)
    assert status["lastRequest"]["result"] == "Applied"
    assert status["paused"]["reason"] == "while down"
    shop.wait_for_event("Paused")
    # Restarted again, and given time: the same annotation is never applied a second time.
    op.kill()
    op = operator_factory(shop.ns)
    shop.wait_for(lambda s: ts(s["analysis"]["checkedAt"]) > ts(status["lastRequest"]["handledAt"]), 30, "checks", op)
    time.sleep(2)
    status = shop.status()
    assert len(_entries(status, request_id)) == 1
    assert _reasons(shop).count("Paused") == 1
    assert shop.primary_weights() == {"v1": 90, "v2": 10}


def test_two_operators_apply_each_request_once(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], kubeconfig: Path
) -> None:
    """Without leader election both act; the status write that applies a request is guarded by the
    resourceVersion it was decided on, so the second gets 409 and finds the request handled."""
    _healthy(shop, meshsim)
    ops = [operator_factory(shop.ns) for _ in range(2)]
    shop.create_rollout(steps=LONG)
    shop.wait_for(lambda s: s.get("canaryWeight") == 10 and _passed_at_step(s), 60, "at 10 %", ops[0])
    ids = []
    for verb in ("pause", "resume", "promote"):
        if verb == "promote":
            shop.wait_for(_passed_at_step, 30, "a passing check", ops[0])
        done = steer(kubeconfig, shop.ns, verb)
        assert done.returncode == 0, done.stderr
        ids.append(_request_id(shop))
    assert shop.primary_weights() == {"v1": 70, "v2": 30}
    time.sleep(2)  # both have had every chance to apply them again
    status = shop.status()
    for request_id in ids:
        assert len(_entries(status, request_id)) == 1, status["history"]
    assert [h["weight"] for h in status["history"]] == [10, 10, 10, 30], "one step: promote applied once"
    reasons = _reasons(shop)
    assert (reasons.count("Paused"), reasons.count("Resumed"), reasons.count("Promoted")) == (1, 1, 1), reasons
    refused = sum(op.log.read_text().count("status not written") for op in ops)
    print(f"\nstatus writes refused with 409 across the two operators: {refused}")


def test_a_manual_step_waits_for_promote_with_checks_running_and_says_so(
    shop: Shop,
    meshsim: Any,
    operator_factory: Callable[..., OperatorProcess],
    kubeconfig: Path,
) -> None:
    _healthy(shop, meshsim)
    op = operator_factory(shop.ns)
    steps = [{"weight": 10, "hold": "2s"}, {"weight": 30, "hold": "2s", "approval": "manual"}, {"weight": 100}]
    shop.create_rollout(steps=steps)
    shop.wait_for_event("WaitingForPromotion", timeout=60)
    status = shop.status()
    assert f"waiting for promote (coalmine promote order -n {shop.ns})" in status["message"]
    first = ts(status["analysis"]["checkedAt"])
    time.sleep(4)  # long past its hold: it stays, and checks go on
    status = shop.status()
    assert (status["phase"], status["stepIndex"]) == ("Progressing", 1)
    assert ts(status["analysis"]["checkedAt"]) > first, "checks keep running at the gate"
    assert shop.primary_weights() == {"v1": 70, "v2": 30}

    view = subprocess.run(
        [sys.executable, "-m", "coalmine", "status", "order", "-n", shop.ns, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(view.stdout)
    assert view.returncode == 0, view.stderr
    assert f"step 2 waits for a person (approval: manual); promote: coalmine promote order -n {shop.ns}" in view.stdout

    done = steer(kubeconfig, shop.ns, "promote")
    assert done.returncode == 0, done.stderr
    status = shop.wait_for_phase("Succeeded", 30, op)
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert [h["weight"] for h in status["history"]] == [10, 30, 100]


def test_with_the_admission_policy_by_is_the_api_servers_word(
    api_client: client.ApiClient,
    shop: Shop,
    operator_factory: Callable[..., OperatorProcess],
    person_factory: Callable[..., Person],
) -> None:
    """examples/steering/admission-policy.yaml, bound to this namespace: the CLI's requests pass, a
    hand-written one naming someone else is refused by the API server, and nothing else is touched."""
    policy, binding = [
        d for d in yaml.safe_load_all((REPO / "examples/steering/admission-policy.yaml").read_text()) if d
    ]
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": shop.ns}}}
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    try:
        op = operator_factory(shop.ns)
        shop.create_rollout(steps=LONG)
        shop.wait_for_phase("Progressing", 30, op)
        forged = {"id": "forged", "verb": "abort", "by": "alice", "generation": 1}
        body = {"metadata": {"annotations": {ANNOTATION: json.dumps(forged, separators=(",", ":"))}}}
        deadline = time.monotonic() + 20
        denied: client.exceptions.ApiException | None = None
        while denied is None:  # the API server takes a moment to start enforcing a new policy
            try:
                shop.custom.patch_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", "order", body, dry_run="All")
            except client.exceptions.ApiException as exc:
                denied = exc
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.2)
        assert denied.status == 403, denied.body
        assert 'must name the user who writes it: \\"by\\":\\"admin\\"' in str(denied.body)

        oncall = person_factory("oncall")
        done = steer(oncall.kubeconfig, shop.ns, "pause")
        assert done.returncode == 0, done.stderr
        assert shop.status()["paused"]["by"] == oncall.name
        with pytest.raises(client.exceptions.ApiException) as refused:
            shop.custom.patch_namespaced_custom_object(*COALMINE, shop.ns, "rollouts", "order", body)
        assert refused.value.status == 403
        assert "forged" not in shop.get_rollout()["metadata"]["annotations"][ANNOTATION]
        shop.patch_rollout_spec({"analysis": {"failureLimit": 3}})  # a spec change (Git) is not its business
        assert shop.primary_weights() == {"v1": 90, "v2": 10}
    finally:
        admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        admission.delete_validating_admission_policy(policy["metadata"]["name"])
