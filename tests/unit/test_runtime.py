"""The running operator's memory of Rollouts (runtime.Operator): a deleted Rollout is forgotten, and stays
forgotten, whatever its last tick wrote. reconcile.tick is replaced by a fake here: what is under test is what
the runtime does with a tick's outcome, not the tick."""

from __future__ import annotations

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
