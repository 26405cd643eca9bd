"""Plain-dict Istio objects and Rollouts for the unit tests of the pure core."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from coalmine.core import validation
from coalmine.core.models import Destination, Ref, Rollout, RolloutSpec, RolloutStatus
from coalmine.core.validation import Claim, Cluster, Problem, Target

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def virtual_service(
    name: str = "order", *, stable_weight: int = 100, canary_weight: int | None = None, extra: bool = True
) -> dict[str, Any]:
    """The seed scenario: an A/B route for beta users ahead of the weighted default route."""
    default_route: list[dict[str, Any]] = [
        {"destination": {"host": "order", "subset": "v1", "port": {"number": 8080}}, "weight": stable_weight}
    ]
    if canary_weight is not None:
        default_route.append(
            {"destination": {"host": "order", "subset": "v2", "port": {"number": 8080}}, "weight": canary_weight}
        )
    http: list[dict[str, Any]] = []
    if extra:
        http.append(
            {
                "name": "beta",
                "match": [{"headers": {"user-group": {"exact": "beta"}}}],
                "route": [{"destination": {"host": "order", "subset": "v2"}}],
            }
        )
    http.append(
        {
            "name": "primary",
            "route": default_route,
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure"},
            "timeout": "5s",
        }
    )
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"},
        "spec": {"hosts": ["order"], "http": http},
    }


def destination_rule(name: str = "order", *, subsets: tuple[str, ...] = ("v1", "v2")) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "host": "order",
            "trafficPolicy": {"outlierDetection": {"consecutiveGatewayErrors": 5, "baseEjectionTime": "30s"}},
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "virtualService": {"name": "order", "routes": ["primary"]},
        "stable": {"host": "order", "subset": "v1"},
        "canary": {"host": "order", "subset": "v2"},
        "steps": [{"weight": 10, "hold": "30s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}],
        "analysis": {"interval": "30s", "checkEvery": "10s", "maxNoData": "1m", "failureLimit": 2},
    }
    for key, value in overrides.items():
        body[key] = value
    return body


def rollout(
    spec_body: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1
) -> Rollout:
    return Rollout.from_body(
        {
            "metadata": {
                "name": "order",
                "namespace": "shop",
                "generation": generation,
                "resourceVersion": "1",
                "creationTimestamp": "2026-11-30T12:00:00Z",
            },
            "spec": copy.deepcopy(spec_body if spec_body is not None else spec()),
            "status": status or {},
        }
    )


def parsed_spec(**overrides: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(spec(**overrides))


def resolve(
    spec_body: RolloutSpec,
    namespace: str,
    vs: dict[str, Any] | None,
    rules: list[dict[str, Any]],
    *,
    recorded_stable: Destination | None = None,
    claims: tuple[Claim, ...] = (),
) -> Target | Problem:
    """validation.resolve for a Rollout with this spec: the whole Target, or the first Problem."""
    status: dict[str, Any] = {}
    if recorded_stable is not None:  # a started generation: the stable it started with is on record
        status = {"phase": "Progressing", "observedGeneration": 1, "stable": recorded_stable.to_wire()}
    rollout = Rollout(
        ref=Ref(namespace=namespace, name="order", created_at=T0),
        spec=spec_body,
        status=RolloutStatus.from_body(status),
    )
    resolution = validation.resolve(rollout, Cluster(vs, rules, claims))
    if resolution.target is not None:
        return resolution.target
    assert resolution.problem is not None
    return resolution.problem
