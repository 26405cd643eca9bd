"""Ask Prometheus instant queries, concurrently but bounded, and turn every answer into a Sample.

Built on httpx's async client rather than prometheus-api-client: the operator runs every Rollout on
one event loop (no thread per rollout), and prometheus-api-client blocks. A request that fails in
any way (connection refused, timeout, HTTP error, a query error, more than one series) becomes a
Sample with `error` set, which the analysis treats as "no data", never as a pass.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import httpx

from coalmine.analysis import Query, Sample


class PrometheusClient:
    def __init__(self, *, concurrency: int = 16, timeout: float = 5.0) -> None:
        self._http = httpx.AsyncClient(timeout=timeout)
        self._limit = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self._http.aclose()

    async def query(self, address: str, promql: str) -> Sample:
        url = address.rstrip("/") + "/api/v1/query"
        try:
            async with self._limit:
                response = await self._http.get(url, params={"query": promql})
        except httpx.HTTPError as exc:
            return Sample(None, f"Prometheus at {address} unreachable: {type(exc).__name__}: {exc}".rstrip(": "))
        try:
            body = response.json()
        except ValueError:
            return Sample(None, f"Prometheus at {address} answered HTTP {response.status_code} without JSON")
        if response.status_code >= 400 or body.get("status") != "success":
            return Sample(None, f"Prometheus at {address} refused the query: {body.get('error', response.status_code)}")
        return parse(body.get("data", {}))

    async def ask(self, address: str, queries: Sequence[Query]) -> dict[str, Sample]:
        answers = await asyncio.gather(*(self.query(address, q.promql) for q in queries))
        return {q.name: a for q, a in zip(queries, answers, strict=True)}


def parse(data: dict[str, object]) -> Sample:
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
