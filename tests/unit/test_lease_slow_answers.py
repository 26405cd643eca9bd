"""A leader whose Lease writes land but whose answers come too late (a slow link to the API server) must not
keep the Lease from a healthy peer: it stops leading at its renew deadline and stops renewing, and the peer
takes over once the Lease has not changed for its duration. Before, the slow replica renewed its own Lease at
once every round: the Lease stayed its, and nobody led for as long as its answers were slow.

The Lease API here is an in-memory fake with the API server's rules (resourceVersion checks, 404, 409); the
real API server runs under tests/integration/test_election.py."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from coalmine.adapters.election import ElectionConfig, LeaseElector

TIMINGS = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.1}


class _Leases:
    """One Lease store; each replica's view of it answers after its own delay (writes land at once)."""

    def __init__(self) -> None:
        self.leases: dict[str, Any] = {}
        self.version = 0

    def view(self) -> _Api:
        return _Api(self)


class _Api:
    def __init__(self, store: _Leases) -> None:
        self.store, self.answer_after = store, 0.0

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        lease = self.store.leases.get(name)
        if lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(lease)

    async def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        if body.metadata.name in self.store.leases:
            raise ApiException(status=409)
        return await self._write(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        if self.store.leases[name].metadata.resource_version != body.metadata.resource_version:
            raise ApiException(status=409)
        return await self._write(body)

    async def _write(self, body: Any) -> Any:
        self.store.version += 1
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(self.store.version)
        self.store.leases[body.metadata.name] = body  # written now...
        await asyncio.sleep(self.answer_after)  # ...answered late
        return body


def _elector(identity: str, api: _Api) -> LeaseElector:
    elector = LeaseElector(
        None,  # type: ignore[arg-type]  # the client is replaced by the fake below
        ElectionConfig("ns", "coalmine", identity, **TIMINGS),
        on_started=lambda: None,
        on_stopped=lambda: None,
    )
    elector._api = api  # type: ignore[assignment]
    return elector


async def test_a_leader_with_late_answers_gives_way_to_a_healthy_peer() -> None:
    store = _Leases()
    slow_api = store.view()
    slow, healthy = _elector("slow", slow_api), _elector("healthy", store.view())
    tasks = [asyncio.create_task(slow.run())]
    try:
        await asyncio.sleep(0.3)
        assert slow.leading
        slow_api.answer_after = 2 * TIMINGS["renew_deadline"]  # every answer now comes after the deadline
        tasks.append(asyncio.create_task(healthy.run()))
        seen: Counter[str] = Counter()
        for _ in range(60):  # 6 s
            await asyncio.sleep(0.1)
            seen["both" if slow.leading and healthy.leading else "healthy" if healthy.leading else "other"] += 1
        assert seen["both"] == 0
        assert healthy.leading, f"the healthy replica never took over: {dict(seen)}"
        assert store.leases["coalmine"].spec.holder_identity == "healthy"
        # It led from at most renew deadline + lease duration + a few rounds after the slow one's last answer.
        assert seen["healthy"] >= 60 - 30, dict(seen)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
