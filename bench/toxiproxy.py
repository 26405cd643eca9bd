"""toxiproxy-server (Shopify's TCP fault proxy, built by tools/build-toxiproxy.sh) and its HTTP API.

The chaos run puts one proxy between each operator replica and the API server, and one between each
replica and Prometheus, then adds and removes toxics: latency, connection resets, blackholes. The
proxies carry TCP; TLS passes through untouched, so the operator still verifies the API server's
certificate (issued for 127.0.0.1, which the proxy listens on too) exactly as its kubeconfig says.

The API is small and documented (https://github.com/Shopify/toxiproxy#http-api): this is the handful of
calls the run needs, on httpx. The one Python client on PyPI (toxiproxy-python 0.1.1) dates from 2019
and brings `requests` and `future`; these few lines are easier to keep than that dependency.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from _common import Processes, free_port

from coalmine_dev import processes
from coalmine_dev.devstack import binaries
from coalmine_dev.processes import Child

VERSION = "v2.5.0"  # tools/build-toxiproxy.sh and tools/toxiproxy/go.mod


def binary() -> Path:
    """$TOXIPROXY_SERVER, else what tools/build-toxiproxy.sh cached; says how to build it when missing."""
    override = os.environ.get("TOXIPROXY_SERVER")
    path = Path(override) if override else binaries.cache_root() / "toxiproxy" / VERSION / "toxiproxy-server"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"toxiproxy-server not found at {path}: run `make binaries` (tools/build-toxiproxy.sh)")
    return path


class Toxiproxy:
    """The API of a running toxiproxy-server at `http://127.0.0.1:<port>`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.status_code >= 400:
            raise RuntimeError(f"toxiproxy {method} {path}: HTTP {response.status_code} {response.text.strip()}")
        return response.json() if response.content else None

    def version(self) -> str:
        return self._http.get("/version").text.strip()

    def create(self, name: str, upstream: str) -> str:
        """A proxy to `upstream` (host:port) on a free port of 127.0.0.1; returns its listen address."""
        listen = f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return listen

    def add(
        self, proxy: str, name: str, kind: str, *, stream: str = "downstream", toxicity: float = 1.0, **attributes: int
    ) -> None:
        """Add toxic `name` of type `kind` (latency, timeout, reset_peer, ...) to `proxy`."""
        body = {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        self._call("POST", f"/proxies/{proxy}/toxics", body)

    def remove(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/proxies/{proxy}/toxics")
        return result

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")


def start(procs: Processes, workdir: Path, seed: int) -> tuple[Child, Toxiproxy]:
    """toxiproxy-server on a free port of 127.0.0.1 (its toxics' randomness seeded), ready to take proxies."""
    port = free_port()
    argv = [str(binary()), "-host", "127.0.0.1", "-port", str(port), "-seed", str(seed)]
    child = procs.start("toxiproxy", argv, workdir / "toxiproxy.log")
    api = Toxiproxy(f"http://127.0.0.1:{port}")

    def answers() -> bool:
        try:
            return api.version() != ""
        except httpx.HTTPError:
            return False

    processes.wait_until("toxiproxy's API", answers, 30.0, child)
    return child, api
