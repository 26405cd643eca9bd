"""A small client for meshsim's HTTP control API, used by tests and the demo.

Why it exists: so callers change destinations and read counts through named methods instead of
hand-built URLs and JSON. It must not grow simulation logic; it only speaks the API that
`runtime.py` documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx


class MeshsimClient:
    """`MeshsimClient("http://127.0.0.1:PORT")`; raises httpx.HTTPStatusError on a 4xx/5xx answer."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeshsimClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def set_destination(
        self,
        namespace: str,
        host: str,
        subset: str,
        error_ratio: float = 0.0,
        p50_ms: float | None = None,
        p99_ms: float | None = None,
        error_code: int | None = None,
        overflow_ratio: float | None = None,
        sidecarless: float | None = None,
        grpc_error_ratio: float | None = None,
        grpc_error_code: int | None = None,
    ) -> dict[str, Any]:
        """Replace how `<namespace>/<host>/<subset>` answers; unset values come from the defaults."""
        body: dict[str, Any] = {"errorRatio": error_ratio}
        if overflow_ratio is not None:
            body["overflowRatio"] = overflow_ratio
        if sidecarless is not None:
            body["sidecarless"] = sidecarless
        if grpc_error_ratio is not None:
            body["grpcErrorRatio"] = grpc_error_ratio
        if grpc_error_code is not None:
            body["grpcErrorCode"] = grpc_error_code
        latency = {k: v for k, v in (("p50Ms", p50_ms), ("p99Ms", p99_ms)) if v is not None}
        if latency:
            body["latency"] = latency
        if error_code is not None:
            body["errorCode"] = error_code
        result: dict[str, Any] = self._call("PUT", f"/destinations/{namespace}/{host}/{subset}", body)
        return result

    def reset_destination(self, namespace: str, host: str, subset: str) -> None:
        self._call("DELETE", f"/destinations/{namespace}/{host}/{subset}")

    def set_service(
        self,
        namespace: str,
        host: str,
        rps: float,
        headers: Sequence[tuple[float, Mapping[str, str]]] | None = None,
        source_workload: str | None = None,
        protocol: str | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Send `rps` requests/s to `host` in `namespace`; `headers` is a mix of (weight, headers);
        `protocol="grpc"` sends gRPC requests; `mode="ambient"` reports them as a waypoint would."""
        body: dict[str, Any] = {"rps": rps}
        if mode is not None:
            body["mode"] = mode
        if protocol is not None:
            body["protocol"] = protocol
        if headers is not None:
            body["headers"] = [{"weight": w, "headers": dict(h)} for w, h in headers]
        if source_workload is not None:
            body["sourceWorkload"] = source_workload
        result: dict[str, Any] = self._call("PUT", f"/services/{namespace}/{host}", body)
        return result

    def delete_service(self, namespace: str, host: str) -> None:
        self._call("DELETE", f"/services/{namespace}/{host}")

    def counts(self) -> dict[str, Any]:
        """{"total", "since", "destinations": {"ns/host/subset": n}, "routes": {...}, "responses": {...}}"""
        result: dict[str, Any] = self._call("GET", "/counts")
        return result

    def reset_counts(self) -> None:
        self._call("POST", "/counts/reset")

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def mesh(self) -> dict[str, dict[str, Any]]:
        """What meshsim has seen: {"virtualservices": {"ns/name": rv}, "destinationrules": {...},
        "endpoints": {"ns/service": ready endpoints}} (endpoints of the Services it follows)."""
        result: dict[str, dict[str, Any]] = self._call("GET", "/mesh")
        return result

    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    def metrics_text(self) -> str:
        response = self._http.get("/metrics")
        response.raise_for_status()
        return response.text
