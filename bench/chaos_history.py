"""What the chaos run's invariant checker reads: every write to Rollouts, VirtualServices and DestinationRules,
in the order etcd committed them, from etcd itself.

A watch on the API server would do, but the run restarts the API server, and a watch resumed on a new
one starts from a watch cache that no longer holds the recent past (410 Gone, then a re-list that skips
writes). etcd keeps every revision until the API server compacts it (every 5 minutes), so a watch on
etcd's own HTTP gateway (/v3/watch) resumed at the next revision after an etcd restart misses nothing,
and every write is seen with its revision, the global order of all writes. Custom resources are stored
as JSON. Nothing here uses the operator's code or the API server.

Each write becomes a `Write(revision, at, plural, namespace, name, obj)`; `at` is when the watch delivered it
(wall clock, this machine: the same clock as the operator's timestamps), `obj` None for a delete.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

PREFIXES = {
    "rollouts": "/registry/coalmine.dev/rollouts/",
    "virtualservices": "/registry/networking.istio.io/virtualservices/",
    "destinationrules": "/registry/networking.istio.io/destinationrules/",
}


@dataclass(frozen=True)
class Write:
    revision: int
    at: float
    plural: str
    namespace: str
    name: str
    obj: dict[str, Any] | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def compact_rollout(obj: dict[str, Any]) -> dict[str, Any]:
    """What the checker needs of a Rollout: the analysis' per-metric rows and the conditions are left out
    (they are most of its size, and thousands of writes are kept)."""
    meta = obj.get("metadata") or {}
    status = dict(obj.get("status") or {})
    analysis = status.get("analysis") or {}
    if analysis:
        status["analysis"] = {k: analysis.get(k) for k in ("checkedAt", "verdict", "consecutiveFailures")}
    status.pop("conditions", None)
    return {
        "metadata": {k: meta.get(k) for k in ("generation", "annotations", "creationTimestamp", "uid")},
        "spec": obj.get("spec") or {},
        "status": status,
    }


class History:
    """Watches the three prefixes in `namespaces` from `start_revision` on, each in a thread, until `stop`."""

    def __init__(self, etcd_url: str, namespaces: set[str], start_revision: int) -> None:
        self.etcd_url = etcd_url
        self.namespaces = namespaces
        self.start_revision = start_revision
        self.writes: list[Write] = []
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}  # (plural, ns/name) -> the object now
        self.revisions: dict[tuple[str, str], int] = {}  # (plural, ns/name) -> its resourceVersion now
        self.reconnects = 0
        self.compacted: list[str] = []  # watches that lost history (not expected: resumed within seconds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._follow, args=(p,), daemon=True) for p in PREFIXES]

    @staticmethod
    def current_revision(etcd_url: str) -> int:
        response = httpx.post(f"{etcd_url}/v3/kv/range", json={"key": _b64("/"), "limit": 1}, timeout=10)
        return int(response.json()["header"]["revision"])

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def sorted_writes(self) -> list[Write]:
        with self._lock:
            return sorted(self.writes, key=lambda w: w.revision)

    def _follow(self, plural: str) -> None:
        prefix = PREFIXES[plural]
        next_revision = self.start_revision
        while not self._stop.is_set():
            request = {
                "create_request": {
                    "key": _b64(prefix),
                    "range_end": _b64(_range_end(prefix)),
                    "start_revision": next_revision,
                }
            }
            try:
                with httpx.stream(
                    "POST", f"{self.etcd_url}/v3/watch", json=request, timeout=httpx.Timeout(5.0, read=15.0)
                ) as response:
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        result = json.loads(line).get("result") or {}
                        if result.get("compact_revision"):
                            self.compacted.append(f"{plural}: compacted at {result['compact_revision']}")
                            next_revision = int(result["compact_revision"])
                            break
                        for event in result.get("events") or []:
                            self._record(plural, prefix, event)
                            next_revision = int(event["kv"]["mod_revision"]) + 1
            except (httpx.HTTPError, OSError, ValueError):
                pass  # etcd restarting: resume at the next revision
            if not self._stop.is_set():
                self.reconnects += 1
                time.sleep(0.2)

    def _record(self, plural: str, prefix: str, event: dict[str, Any]) -> None:
        kv = event["kv"]
        key = base64.b64decode(kv["key"]).decode()
        namespace, _, name = key[len(prefix) :].partition("/")
        revision = int(kv["mod_revision"])
        if namespace not in self.namespaces:
            return
        obj: dict[str, Any] | None = None
        if event.get("type") != "DELETE":
            obj = json.loads(base64.b64decode(kv["value"]))
            if plural == "rollouts":
                obj = compact_rollout(obj)
            else:
                meta = obj.get("metadata") or {}
                obj = {
                    "metadata": {k: meta.get(k) for k in ("labels", "annotations", "generation")},
                    "spec": obj.get("spec"),
                }
        with self._lock:
            self.writes.append(Write(revision, time.time(), plural, namespace, name, obj))
            if obj is None:
                self.latest.pop((plural, f"{namespace}/{name}"), None)
                self.revisions.pop((plural, f"{namespace}/{name}"), None)
            else:
                self.latest[plural, f"{namespace}/{name}"] = obj
                self.revisions[plural, f"{namespace}/{name}"] = revision

    def revision(self, plural: str, key: str) -> int | None:
        with self._lock:
            return self.revisions.get((plural, key))

    def get(self, plural: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self.latest.get((plural, key))
