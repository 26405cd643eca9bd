"""bench/scale.py's fleet at rest: the objects it creates are ones the operator finds promoted (`Succeeded` at
once, nothing to move), so a 10,000-Rollout run measures the caches and the in-flight ticks, not 10,000 releases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale
from builders import T0

from coalmine.core import plan, validation
from coalmine.core.models import Phase, Rollout
from coalmine.core.validation import Cluster

ARGS = argparse.Namespace(hold="30s", check_every="30s", min_requests=2)


def decided(ns: str, name: str, fleet: str, serving: str) -> plan.Decision:
    body: dict[str, Any] = scale.rollout(ns, name, ARGS, fleet)
    body["metadata"] |= {"generation": 1, "resourceVersion": "1", "creationTimestamp": "2026-12-02T12:00:00Z"}
    r = Rollout.from_body(body)
    cluster = Cluster(scale.virtual_service(ns, name, serving), [scale.destination_rule(ns, name)], ())
    return plan.decide(r, validation.resolve(r, cluster), None, T0, plan.Policy())


def test_the_fleet_plan_keeps_the_rollouts_at_rest_apart_from_those_in_flight() -> None:
    fleet = scale.Fleet.plan(300, 10, at_rest=9700)
    assert (len(fleet.services), len(fleet.rest_services)) == (300, 9700)
    assert set(fleet.namespaces).isdisjoint(fleet.rest_namespaces), "meshsim watches only the in-flight namespaces"
    assert {ns for ns, _ in fleet.rest_services} == set(fleet.rest_namespaces)
    assert scale.Fleet.plan(300, 10).rest_namespaces == []


def test_a_rollout_at_rest_is_succeeded_at_once_and_moves_nothing() -> None:
    ns, name = scale.Fleet.plan(1, 1, at_rest=1).rest_services[0]
    decision = decided(ns, name, scale.AT_REST, "v2")
    assert decision.status.phase is Phase.SUCCEEDED
    assert decision.weight is None, "nothing to write"


def test_a_rollout_in_flight_starts_at_its_first_step() -> None:
    ns, name = scale.Fleet.plan(1, 1).services[0]
    decision = decided(ns, name, scale.IN_FLIGHT, "v1")
    assert (decision.status.phase, decision.weight) == (Phase.PROGRESSING, 10)
