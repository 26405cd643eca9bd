"""Ask Prometheus instant queries, concurrently but bounded, and turn every answer into a Sample.

Built-in queries of many Rollouts are batched: checks fall on a grid (plan.next_check_at) that the
Rollouts with the same offset share, so queries with the same batch key that arrive within `linger` become one PromQL grouped by the
selector labels, and each Rollout picks its own series out of the answer.

Built on httpx's async client rather than prometheus-api-client: the operator runs every Rollout on
one event loop (no thread per rollout), and prometheus-api-client blocks. A request that fails in
any way (connection refused, timeout, HTTP error, a query error, more than one series) becomes a
Sample with `error` set, which the analysis treats as "no data", never as a pass.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

import httpx

from coalmine.core.analysis import Batch, Query, Range, Sample, batched_promql, index_series, pick_from
from coalmine.core.analysis import BatchKey as QueryKey

BatchKey = tuple[str, QueryKey]


class PrometheusClient:
    def __init__(self, *, concurrency: int = 16, timeout: float = 5.0, linger: float = 0.025) -> None:
        self._http = httpx.AsyncClient(timeout=timeout)
        self._limit = asyncio.Semaphore(concurrency)
        self._linger = linger
        self._pending: dict[BatchKey, list[tuple[Batch, asyncio.Future[Sample]]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        await self._http.aclose()

    async def _data(self, address: str, promql: str, params: dict[str, str] | None = None) -> dict[str, Any] | str:
        """The `data` of a query (a range query when `params` has start/end/step), or why there is none.
        POST: batched queries can be long."""
        url = address.rstrip("/") + ("/api/v1/query_range" if params else "/api/v1/query")
        try:
            async with self._limit:
                response = await self._http.post(url, data={"query": promql, **(params or {})})
        except httpx.HTTPError as exc:
            return f"Prometheus at {address} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
        try:
            body = response.json()
        except ValueError:
            return f"Prometheus at {address} answered HTTP {response.status_code} without JSON"
        if response.status_code >= 400 or body.get("status") != "success":
            return f"Prometheus at {address} refused the query: {body.get('error', response.status_code)}"
        data: dict[str, Any] = body.get("data", {})
        return data

    async def query(self, address: str, promql: str) -> Sample:
        data = await self._data(address, promql)
        return Sample(None, data) if isinstance(data, str) else parse(data)

    async def query_range(self, address: str, promql: str, span: Range, end: datetime) -> Sample:
        start = end - span.span
        params = {
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{span.step.total_seconds():g}",
        }
        data = await self._data(address, promql, params)
        return Sample(None, data) if isinstance(data, str) else parse_range(data)

    async def ask(self, address: str, queries: Sequence[Query], *, at: datetime) -> dict[str, Sample]:
        """Every query's answer: batched ones together with other Rollouts', range queries ending `at`."""

        def one(q: Query) -> Awaitable[Sample]:
            if q.range is not None:
                return self.query_range(address, q.promql, q.range, at)
            return self._batched(address, q.batch) if q.batch else self.query(address, q.promql)

        answers = await asyncio.gather(*(one(q) for q in queries))
        return {q.name: a for q, a in zip(queries, answers, strict=True)}

    def _batched(self, address: str, batch: Batch) -> asyncio.Future[Sample]:
        future: asyncio.Future[Sample] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((address, batch.key), []).append((batch, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._linger)
        pending, self._pending = self._pending, {}
        for (address, key), waiters in pending.items():
            task = asyncio.create_task(self._answer(address, key, waiters))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(
        self,
        address: str,
        key: QueryKey,
        waiters: list[tuple[Batch, asyncio.Future[Sample]]],
    ) -> None:
        data = await self._data(address, batched_promql(key, [batch for batch, _ in waiters]))
        result = data.get("result") if isinstance(data, dict) else None
        index = index_series(result, key[3]) if isinstance(result, list) else {}
        for batch, future in waiters:
            if future.done():
                continue
            if isinstance(data, str):
                future.set_result(Sample(None, data))
            elif data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
                future.set_result(Sample(None, f"batched query returned a {data.get('resultType')}"))
            else:
                future.set_result(pick_from(index, batch))


def parse_range(data: dict[str, Any]) -> Sample:
    """The values of a range query's one series (NaN where Prometheus had none); empty: no values."""
    result = data.get("result")
    if data.get("resultType") != "matrix" or not isinstance(result, list):
        return Sample(None, f"range query returned a {data.get('resultType')}")
    if len(result) > 1:
        return Sample(None, f"range query returned {len(result)} series; it must return one")
    values = tuple(float(v) for _, v in result[0]["values"]) if result else ()
    return Sample(None, values=values)


def parse(data: dict[str, Any]) -> Sample:
    """One number from an instant query's data: empty -> no data; several series -> an error."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return Sample.of(float(result[1]))
    if kind == "vector" and isinstance(result, list):
        if not result:
            return Sample(None)
        if len(result) > 1:
            return Sample(None, f"query returned {len(result)} series; it must return one (aggregate it with sum/max)")
        value = float(result[0]["value"][1])
        return Sample.of(value if math.isfinite(value) else None)
    return Sample(None, f"query returned a {kind}; it must return an instant vector or scalar")
