"""The start gate: the operator acts only once kopf watches every resource it must (issue 16, chaos seed 7).

kopf resolves the watched resources once, from API discovery at start-up; here kopf's own Insights are
filled as its resource observer would fill them, and the gate's decision is checked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import kopf
import pytest

from coalmine import handlers
from coalmine.adapters.kube import Unavailable

ALL = {kopf.Resource(w.group, w.version, w.plural) for w in handlers.WATCHED}


@dataclass
class _Kube:
    served: dict[str, bool] = field(default_factory=dict)
    failures: int = 0  # answers Unavailable this many times first
    asked: list[str] = field(default_factory=list)

    async def serves(self, group: str, version: str, plural: str) -> bool:
        self.asked.append(plural)
        if self.failures:
            self.failures -= 1
            raise Unavailable("storage is (re)initializing")
        return self.served.get(plural, False)


@dataclass
class _Ports:
    kube: _Kube


@dataclass
class _Operator:
    ports: _Ports
    acting: bool = False

    async def act(self) -> None:
        self.acting = True


async def _decide(resolved: set[kopf.Resource], kube: _Kube | None = None) -> tuple[handlers.StartGate, _Operator]:
    gate = handlers.StartGate(retry_every=0.01)
    operator = _Operator(_Ports(kube or _Kube()))
    gate.open_when_resolved(operator)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not operator.acting, "the gate waits for kopf's resolution"
    gate.insights.watched_resources.update(resolved)
    gate.insights.ready_resources.set()
    await asyncio.wait_for(gate._task, timeout=5)  # type: ignore[arg-type]
    return gate, operator


def test_unresolved_names_what_kopf_did_not_find() -> None:
    resolved = ALL - {kopf.Resource("coalmine.dev", "v1alpha1", "rollouts")}
    assert handlers.unresolved(handlers.WATCHED, resolved) == [handlers.ROLLOUTS]
    assert handlers.unresolved(handlers.WATCHED, ALL) == []
    assert [str(w) for w in handlers.unresolved(handlers.WORKLOADS, set())] == [
        "services.v1",
        "endpointslices.v1.discovery.k8s.io",
        "pods.v1",
    ]


async def test_every_resource_resolved_the_operator_acts() -> None:
    gate, operator = await _decide(ALL)
    assert operator.acting
    assert not gate.stop.is_set()
    assert not gate.failed


@pytest.mark.parametrize("missing", [w for w in handlers.WATCHED if w.required], ids=str)
async def test_a_required_resource_unresolved_stops_the_operator_before_it_campaigns(
    missing: handlers.Watched,
) -> None:
    gate, operator = await _decide(ALL - {kopf.Resource(missing.group, missing.version, missing.plural)})
    assert not operator.acting, "a replica without this watch would take the Lease and do nothing"
    assert gate.stop.is_set()
    assert gate.failed == [missing]


async def test_http_routes_absent_from_discovery_the_operator_runs_the_rest() -> None:
    kube = _Kube(served={"httproutes": False})
    gate, operator = await _decide(ALL - {kopf.Resource("gateway.networking.k8s.io", "v1", "httproutes")}, kube)
    assert kube.asked == ["httproutes"]
    assert operator.acting
    assert not gate.stop.is_set()


async def test_http_routes_served_but_missed_by_kopf_stop_the_operator_after_discovery_answers() -> None:
    kube = _Kube(served={"httproutes": True}, failures=3)
    gate, operator = await _decide(ALL - {kopf.Resource("gateway.networking.k8s.io", "v1", "httproutes")}, kube)
    assert kube.asked == ["httproutes"] * 4, "asked again while the API server could not answer"
    assert not operator.acting
    assert gate.stop.is_set()
    assert gate.failed == [handlers.HTTP_ROUTES]
