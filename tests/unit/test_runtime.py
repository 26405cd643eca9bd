"""The running operator's memory of Rollouts (runtime.Operator): a deleted Rollout is forgotten, and stays
forgotten, whatever its last tick wrote. reconcile.tick is replaced by a fake here: what is under test is what
the runtime does with a tick's outcome, not the tick."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from coalmine import reconcile, runtime
from coalmine.runtime import Operator, OperatorConfig


def _body(rv: int, uid: str = "u1") -> dict[str, Any]:
    return {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order", "namespace": "shop", "uid": uid, "resourceVersion": str(rv), "generation": 1},
        "spec": {"virtualService": {"name": "order"}},
    }


def _operator() -> Operator:
    op = Operator(config=OperatorConfig())
    op.ports = object()  # type: ignore[assignment]  # only checked for None: the fake tick never uses it
    op.observe("ADDED", _body(10))
    return op


async def test_a_rollout_deleted_while_its_tick_ran_is_not_brought_back_by_the_tick_s_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = _operator()

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        op.observe("DELETED", _body(11))  # the watch's DELETED arrives while the tick awaits its writes
        return reconcile.Outcome(body=_body(11), wake_at=datetime(2026, 12, 1))

    monkeypatch.setattr(runtime.reconcile, "tick", tick)
    await op.tick("shop/order")
    assert "shop/order" not in op.bodies, "a ghost would be ticked forever, each status write a 404"
    assert "order" not in op.claims.get("shop", {})


async def test_a_rollout_found_gone_by_its_tick_is_forgotten_without_a_deleted_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = _operator()

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        return reconcile.Outcome(body=None, wake_at=None, gone=True)

    monkeypatch.setattr(runtime.reconcile, "tick", tick)
    assert await op.tick("shop/order") is None
    assert "shop/order" not in op.bodies
    assert "order" not in op.claims.get("shop", {})


async def test_gone_forgets_only_the_object_that_was_ticked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Rollout re-created under the same name (a new uid) while the old one's tick ran is kept."""
    op = _operator()

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        op.observe("DELETED", _body(11))
        op.observe("ADDED", _body(12, uid="u2"))
        return reconcile.Outcome(body=None, wake_at=None, gone=True)

    monkeypatch.setattr(runtime.reconcile, "tick", tick)
    await op.tick("shop/order")
    assert op.bodies["shop/order"]["metadata"]["uid"] == "u2"


async def test_each_tick_is_told_the_rollouts_last_check_until_the_rollout_is_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick's checked_at (a routine pass is not written) is handed to the Rollout's next tick, and forgotten
    with the Rollout: a re-created one starts without it."""
    op = _operator()
    told: list[Any] = []
    moment = datetime(2026, 12, 1, 12, 0, 20)

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        told.append(checked)
        return reconcile.Outcome(body=None, wake_at=None, checked_at=moment if len(told) == 1 else None)

    monkeypatch.setattr(runtime.reconcile, "tick", tick)
    await op.tick("shop/order")
    await op.tick("shop/order")
    await op.tick("shop/order")
    op.observe("DELETED", _body(11))
    op.observe("ADDED", _body(12, uid="u2"))
    await op.tick("shop/order")
    assert told == [None, moment, moment, None]


def _claiming(name: str, route: str, rv: int = 1) -> dict[str, Any]:
    body = _body(rv, uid=name)
    body["metadata"]["name"] = name
    body["spec"] = {"virtualService": {"name": route, "routes": ["primary"]}}
    return body


async def test_a_tick_gets_the_claims_on_its_own_route_object_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route ownership is decided among the Rollouts naming one route object; a tick is handed those, kept
    current as Rollouts change route or go, not every claim of the namespace (1,000 in a crowded one)."""
    op = Operator(config=OperatorConfig())
    op.ports = object()  # type: ignore[assignment]
    for name, route in [("a", "order"), ("b", "order"), ("c", "cart"), *[(f"x{i}", f"svc-{i}") for i in range(50)]]:
        op.observe("ADDED", _claiming(name, route))
    handed: list[tuple[str, ...]] = []

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        handed.append(tuple(sorted(c.name for c in claims)))
        return reconcile.Outcome(body=None, wake_at=None)

    monkeypatch.setattr(reconcile, "tick", tick)
    await op.tick("shop/a")
    op.observe("MODIFIED", _claiming("b", "cart", rv=2))  # b now names another route object
    await op.tick("shop/a")
    await op.tick("shop/c")
    op.observe("DELETED", _claiming("c", "cart", rv=3))
    await op.tick("shop/b")
    assert handed == [("a", "b"), ("a",), ("b", "c"), ("b",)]


def _object(kind: str, name: str, rv: int, namespace: str = "shop") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(rv)}}


async def test_a_settled_rollout_is_not_ticked_again_until_something_it_reads_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished Rollout's tick that found nothing to do (Outcome.settled) is remembered with what it read;
    its resyncs are skipped until any of it changes: its own object, a Rollout, VirtualService, HTTPRoute,
    DestinationRule or workload of its namespace, a webhook answer or delivery outcome waiting, or the shard
    being taken again. A tick that does something forgets it; other namespaces' changes do not count."""
    op = _operator()
    ran: list[str] = []
    settles = True

    async def tick(body: dict[str, Any], ports: Any, claims: Any = (), checked: Any = None) -> reconcile.Outcome:
        ran.append(body["metadata"]["resourceVersion"])
        return reconcile.Outcome(body=None, wake_at=datetime(2026, 12, 1), settled=settles)

    monkeypatch.setattr(reconcile, "tick", tick)

    async def runs() -> bool:
        before = len(ran)
        wake = await op.tick("shop/order")
        assert wake is not None
        return len(ran) > before

    assert await runs()
    assert not await runs(), "nothing changed: skipped"
    changes: list[Callable[[], object]] = [
        lambda: op.observe("MODIFIED", _body(20)),
        lambda: op.observe("ADDED", _claiming("other", "cart")),
        lambda: op.observe_istio("virtualservices", "MODIFIED", _object("VirtualService", "order", 5)),
        lambda: op.observe_istio("httproutes", "ADDED", _object("HTTPRoute", "web", 6)),
        lambda: op.observe_istio("destinationrules", "ADDED", _object("DestinationRule", "order", 7)),
        lambda: op.observe_workload("pods", "ADDED", _object("Pod", "order-v2-1", 8)),
        lambda: op.observe("DELETED", _claiming("other", "cart", rv=9)),
    ]
    for change in changes:
        change()
        assert await runs(), "a change in what it reads: ticked"
        assert not await runs()
    op.observe_istio("virtualservices", "MODIFIED", _object("VirtualService", "order", 30, namespace="cart"))
    op.observe_workload("pods", "ADDED", _object("Pod", "cart-1", 31, namespace="cart"))
    assert not await runs(), "another namespace's changes do not count"

    class Owed:
        owed = True

        def observed(self, uid: str) -> tuple[list[Any], list[Any]]:
            return ([object()], []) if self.owed else ([], [])

    owed = Owed()
    op.dispatcher = owed  # type: ignore[assignment]
    assert await runs(), "a webhook answer waits to be recorded"
    owed.owed = False
    assert not await runs()
    op._lead(0)
    op._follow(0)
    await op._drain(0)
    assert await runs(), "a shard taken again starts from what it reads"
    settles = False
    op.observe("MODIFIED", _body(40))
    assert await runs()
    assert await runs(), "a tick that did something is not remembered"
