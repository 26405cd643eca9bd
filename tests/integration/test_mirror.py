"""Mirror steps on the real stack: the operator's mirror is written through Istio's validation webhook, users
stay on the stable (0 % canary weight) throughout, the canary is judged on the mirrored copies its own proxy
reports, and the route's own mirror is put back byte-equal after a rollback or the weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from rollout_support import OperatorProcess, Shop, VsReader, without_owned_route

pytestmark = pytest.mark.integration

RPS = 150.0
MIRROR_KEYS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirrors")
SHADOW = {"host": "order-shadow", "port": {"number": 8080}}
CANARY = {"host": "order", "subset": "v2", "port": {"number": 8080}}


class PrimaryWatch(VsReader):
    """Keeps every distinct canary weight and mirror the owned route shows."""

    def __init__(self, shop: Shop) -> None:
        self.weights: set[int] = set()
        self.mirrors: list[dict[str, Any]] = []
        super().__init__(shop)

    def observe(self, vs: dict[str, Any]) -> None:
        self.weights.add(self.shop.primary_weights(vs).get("v2", 0))
        fields = _mirror_fields(vs)
        if not self.mirrors or self.mirrors[-1] != fields:
            self.mirrors.append(fields)


def _mirror_fields(vs: dict[str, Any]) -> dict[str, Any]:
    primary = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return {k: primary[k] for k in MIRROR_KEYS if k in primary}


def test_a_failing_mirror_step_never_gives_users_to_the_canary_and_puts_the_users_mirror_back(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], request: pytest.FixtureRequest
) -> None:
    index = shop.route_index("primary")
    own = {"mirror": SHADOW, "mirrorPercentage": {"value": 10}}
    shop.patch_vs([{"op": "add", "path": f"/spec/http/{index}/{key}", "value": value} for key, value in own.items()])
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.5)
    before = without_owned_route(shop.get_vs())
    op = operator_factory(shop.ns)
    watch = PrimaryWatch(shop)
    request.addfinalizer(watch.stop)
    shop.create_rollout(steps=[{"mirror": 100, "hold": "1m"}, {"weight": 100}])
    during = shop.wait_for(lambda s: (s.get("mirror") or {}).get("active") is True, 60, "the mirror written", op)
    assert during["mirror"]["saved"] == own, "the route's own mirror on record"
    status = shop.wait_for_phase("RolledBack", 90, op)
    watch.stop()
    assert watch.weights == {0}, "no user reached the canary, ever"
    ours = {"destination": CANARY, "percentage": {"value": 100}}
    assert {"mirrors": [{"destination": SHADOW, "percentage": {"value": 10}}, ours]} in watch.mirrors, (
        "the user's mirror kept working beside the canary's"
    )
    assert status["rollback"]["reason"] in ("FailureLimit", "FailFast")
    assert status["rollback"]["metric"] == "success-rate", "judged on the mirrored copies the canary answered"
    assert 'reporter=~"destination|waypoint"' in status["rollback"]["query"]
    assert "mirror" not in status
    assert not any(c["type"] == "Stalled" and c["reason"] == "TrafficNotMoved" for c in status["conditions"]), (
        "every write passed Istio's validation webhook"
    )
    vs = shop.get_vs()
    assert _mirror_fields(vs) == own, "put back byte-equal"
    assert without_owned_route(vs) == before, "everything the operator does not own is byte-equal"
    assert shop.canary_weight() == 0


def test_a_mirror_step_then_weights_to_success(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess], request: pytest.FixtureRequest
) -> None:
    # Without the seed's beta route (it sends users to v2 too, which turns the traffic check off).
    shop.patch_vs(
        [{"op": "test", "path": "/spec/http/0/name", "value": "beta"}, {"op": "remove", "path": "/spec/http/0"}]
    )
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    before = without_owned_route(shop.get_vs())
    op = operator_factory(shop.ns)
    watch = PrimaryWatch(shop)
    request.addfinalizer(watch.stop)
    shop.create_rollout(steps=[{"mirror": 100, "hold": "12s"}, {"weight": 50, "hold": "3s"}, {"weight": 100}])
    during = shop.wait_for(lambda s: (s.get("mirror") or {}).get("active") is True, 60, "the mirror written", op)
    assert during["canaryWeight"] == 0
    assert "mirror 100% to the canary, 0% users" in during["message"]
    status = shop.wait_for_phase("Succeeded", 120, op)
    watch.stop()
    shop.wait_for_event("Succeeded")
    # The check that ended the mirror step, as the StepAdvanced event reports it: it passed, so the canary had
    # at least minRequests requests, and in that step its only requests were the mirror's copies.
    left = next(
        e.message
        for e in shop.events()
        if e.reason == "StepAdvanced" and "0% users and a 100% mirror -> 50%" in e.message
    )
    assert "success-rate 100 (>= 95)" in left, "judged on the mirrored copies the canary answered"
    assert "circuit-breaker skipped" in left, "the breaker's source-reported 503s do not apply to copies"
    assert "traffic 0 (0% ± " in left, "no user request reached the canary"
    assert "of users (mirrored copies not counted)" in left
    ours = {"mirror": CANARY, "mirrorPercentage": {"value": 100}}
    assert ours in watch.mirrors
    assert watch.mirrors[-1] == {}, "removed"
    assert "mirror" not in status
    assert "TrafficNotMoved" not in [e.reason for e in shop.events()], "every write passed Istio's webhook"
    vs = shop.get_vs()
    assert without_owned_route(vs) == before
    assert shop.canary_weight() == 100


def test_istio_refuses_mirror_and_mirrors_together(shop: Shop) -> None:
    """Why the operator puts its mirror beside a user's in a `mirrors` list: the webhook is in force here."""
    index = shop.route_index("primary")
    both = [
        {"op": "add", "path": f"/spec/http/{index}/mirror", "value": SHADOW},
        {"op": "add", "path": f"/spec/http/{index}/mirrors", "value": [{"destination": copy.deepcopy(CANARY)}]},
    ]
    with pytest.raises(ApiException) as refused:
        shop.patch_vs(both)
    assert "cannot contain both mirror and mirrors" in str(refused.value.body)


def test_a_rollback_decided_before_a_crash_puts_the_users_mirror_back_from_the_status(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """The record of the route's own mirror survives in the Rollout's status (the CRD keeps it as written):
    an operator killed mid mirror step, after a rollback was decided and before the VirtualService write,
    is followed by one that puts the mirror back from that record alone, once."""
    index = shop.route_index("primary")
    own = {"mirrors": [{"destination": SHADOW, "percentage": {"value": 12.5}}]}
    shop.patch_vs([{"op": "add", "path": f"/spec/http/{index}/mirrors", "value": own["mirrors"]}])
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    before = without_owned_route(shop.get_vs())
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=[{"mirror": 50, "hold": "10m"}, {"weight": 100}])
    shop.wait_for(lambda s: (s.get("mirror") or {}).get("active") is True, 60, "the mirror written", op)
    op.kill()
    assert _mirror_fields(shop.get_vs()) == {
        "mirrors": [*own["mirrors"], {"destination": CANARY, "percentage": {"value": 50}}]
    }
    current = shop.get_rollout()
    assert current["status"]["mirror"]["saved"] == own, "stored as written (preserve-unknown-fields)"
    decided = {**current["status"], "phase": "RolledBack", "canaryWeight": 0, "message": "rolled back (test)"}
    shop.custom.patch_namespaced_custom_object_status(
        "coalmine.dev", "v1alpha1", shop.ns, "rollouts", "order", {"status": decided}
    )
    restarted = operator_factory(shop.ns)
    status = shop.wait_for(lambda s: "mirror" not in s, 30, "the mirror record cleared", restarted)
    assert status["phase"] == "RolledBack"
    vs = shop.get_vs()
    assert _mirror_fields(vs) == own, "put back byte-equal, once"
    assert without_owned_route(vs) == before
