"""The kopf wiring's settings: kopf builds no diff base (no handler reads one) and posts no Events of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kopf._core.intents.causes import Activity

from coalmine import handlers


class _Operator:
    started = False
    acting = False

    async def start(self) -> None:
        self.started = True

    async def act(self) -> None:
        self.acting = True


def test_startup_turns_off_what_no_handler_reads() -> None:
    registry = kopf.OperatorRegistry()
    operator: Any = _Operator()
    gate = handlers.StartGate()
    handlers.register(registry, operator, gate)
    settings = kopf.OperatorSettings()
    startup = [h for h in registry._activities.get_handlers(activity=Activity.STARTUP)]
    assert len(startup) == 1

    async def start_up() -> None:
        await startup[0].fn(settings=settings)  # type: ignore[call-arg]
        await gate.close()

    asyncio.run(start_up())
    assert operator.started
    assert not operator.acting, "acting waits for the start gate (test_start_gate.py)"
    assert settings.posting.enabled is False
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, handlers._NoDiffBase)
    body = kopf.Body({"metadata": {"name": "r", "annotations": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 2}})
    patch = kopf.Patch()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch, "nothing written to the Rollout for kopf's bookkeeping"
    assert not registry._changing.has_handlers(resource=kopf.Resource("coalmine.dev", "v1alpha1", "rollouts")), (
        "a change-detecting handler would need kopf's diff base"
    )
