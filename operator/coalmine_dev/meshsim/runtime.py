"""meshsim's imperative shell: API-server watches, the tick loop, Prometheus metrics, the control API.

Why it exists: everything stateful and concurrent in meshsim lives here, so the routing and
traffic rules (`routing.py`, `traffic.py`, `endpoints.py`) stay pure. Three kinds of threads run:
- one watcher per (kind, namespace scope) keeps a copy of the VirtualServices,
  DestinationRules, Services, EndpointSlices and Pods (list, then watch; re-list after any error
  or watch expiry); the last three tell which destinations have ready pods (`endpoints.py`);
- the ticker generates each slice's requests from the *current* copy and records metrics;
- the HTTP server answers `/metrics` and the control API.

What it must not do: send real requests, write to the API server, or pretend to be a proxy.
It only reads Istio config and exports numbers shaped like Istio's.

HTTP API (JSON unless noted):
  GET  /metrics                                  Prometheus text exposition
  GET  /healthz                                  {"status": "ok", "synced": bool}
  GET  /config                                   the live configuration
  GET  /mesh                                     VirtualServices/DestinationRules seen (resourceVersions),
                                                 ready endpoints of the Services followed
  GET  /counts                                   requests sent since start / last reset
  POST /counts/reset
  PUT  /destinations/<ns>/<host>/<subset>        {errorRatio, latency: {p50Ms, p99Ms} | {fixedMs}, errorCode,
                                                 sidecarless, grpcErrorRatio, grpcErrorCode, overflowRatio}
  DELETE /destinations/<ns>/<host>/<subset>      back to defaultDestination
  PUT  /services/<ns>/<host>                     {rps, headers: [{weight, headers}], sourceWorkload, protocol, ...}
  DELETE /services/<ns>/<host>                   stop sending to it
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from coalmine_dev.meshsim import routing
from coalmine_dev.meshsim.config import (
    ConfigError,
    MeshsimConfig,
    parse_destination,
    parse_destination_key,
    parse_service,
)
from coalmine_dev.meshsim.endpoints import EndpointIndex
from coalmine_dev.meshsim.traffic import RequestRecord, generate_slice

log = logging.getLogger("coalmine_dev.meshsim")

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
VIRTUAL_SERVICES = "virtualservices"
DESTINATION_RULES = "destinationrules"
SERVICES = "services"
ENDPOINT_SLICES = "endpointslices"
PODS = "pods"
HTTP_ROUTES = "httproutes"  # Gateway API, mesh (GAMMA) routes: see gateway.py
GATEWAY_GROUP = "gateway.networking.k8s.io"
WATCHED = (VIRTUAL_SERVICES, DESTINATION_RULES, SERVICES, ENDPOINT_SLICES, PODS, HTTP_ROUTES)

# Istio's default histogram buckets for istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip

ISTIO_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
    "grpc_response_status",
)


def istio_labels(record: RequestRecord, reporter: str) -> tuple[str, ...]:
    """The label values Istio's stats filter would attach to this request, in ISTIO_LABELS order."""
    service = record.service
    dest = record.decision.destination
    if record.reported_by_destination and dest is not None:
        known = dest.version != "unknown"
        # The pods' owner when meshsim knows them (Istio's rule), else a name made of host and version.
        workload = dest.workload or (f"{dest.host}-{dest.version}" if known else dest.host)
        workload_ns, app, version = dest.namespace, dest.host, dest.version
        canonical_service, revision = dest.host, dest.version if known else "latest"
    else:  # no upstream host was chosen, or it has no sidecar to exchange metadata with: unknown labels
        workload = workload_ns = app = version = canonical_service = revision = "unknown"
    svc_ns, svc_name = (dest.namespace, dest.host) if dest is not None else (service.namespace, service.host)
    return (
        reporter,
        service.source_workload,
        service.client_namespace,
        service.source_workload,
        workload,
        workload_ns,
        app,
        version,
        f"{svc_name}.{svc_ns}.{routing.CLUSTER_DOMAIN}",
        svc_name,
        svc_ns,
        canonical_service,
        revision,
        service.protocol,
        str(record.response_code),
        record.response_flags,
        "mutual_tls" if reporter in ("destination", "waypoint") else "unknown",
        record.grpc_status,
    )


class IstioMetrics:
    """istio_requests_total and istio_request_duration_milliseconds, rendered as prometheus_client would.

    The series, their labels and the text are those of a prometheus_client Counter and Histogram
    (with their `_created` series), but the counts are plain dicts and each label set's text is
    rendered once: at 1,000 services a scrape is ~60 MB of text every 5 s, and prometheus_client's
    generic exposition (escaping every label of every line on every scrape) took more CPU than the
    simulation itself (bench/README.md, "The harness").
    """

    REQUESTS_HELP = "Simulated by coalmine meshsim: requests, as Istio's stats filter counts them."
    DURATION_HELP = "Simulated by coalmine meshsim: request duration in milliseconds."

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, ...], list[float]] = {}  # labels -> [count, created]
        self._durations: dict[tuple[str, ...], _Histogram] = {}
        self._text: dict[tuple[str, ...], tuple[str, str, str]] = {}  # see _labels

    def record(self, records: list[RequestRecord]) -> None:
        """Emit `reporter="source"` for every routed request, `reporter="destination"` for those that
        reached a pod with a sidecar (a no-route or missing cluster never reaches a pod); for an ambient
        service, `reporter="waypoint"` for every routed request and nothing else. A mirrored copy is
        reported by the destination alone (as Istio does: the caller's proxy reports no shadow request);
        under ambient meshsim does not report copies."""
        counts: Tally[tuple[str, ...]] = Tally()
        observed: dict[tuple[str, ...], list[float]] = {}
        for record in records:
            if not record.routed:
                continue
            if record.mirrored:
                reporters: tuple[str, ...] = ()
                if record.service.mode != "ambient" and record.reported_by_destination:
                    reporters = ("destination",)
            elif record.service.mode == "ambient":
                reporters = ("waypoint",)
            elif record.reported_by_destination:
                reporters = ("source", "destination")
            else:
                reporters = ("source",)
            for reporter in reporters:
                labels = istio_labels(record, reporter)
                counts[labels] += 1
                observed.setdefault(labels, []).append(record.duration_ms)
        now = time.time()
        with self._lock:
            for labels, n in counts.items():
                entry = self._requests.get(labels)
                if entry is None:
                    entry = self._requests[labels] = [0.0, now]
                entry[0] += n
            for labels, values in observed.items():
                histogram = self._durations.get(labels)
                if histogram is None:
                    histogram = self._durations[labels] = _Histogram(now)
                histogram.observe(values)

    def _labels(self, labels: tuple[str, ...]) -> tuple[str, str, str]:
        """The label set as text (names sorted, as prometheus_client writes them), and the parts that go
        before and after a histogram's `le`."""
        text = self._text.get(labels)
        if text is None:
            pairs = sorted(zip(ISTIO_LABELS, labels, strict=True))
            before = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs if name < "le")
            after = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs if name > "le")
            text = self._text[labels] = (",".join(p for p in (before, after) if p), before, after)
        return text

    def exposition(self) -> bytes:
        with self._lock:
            requests = [(labels, entry[0], entry[1]) for labels, entry in self._requests.items()]
            durations = [(labels, h.snapshot(), h.created) for labels, h in self._durations.items()]
        out: list[str] = []
        name = "istio_requests"
        out.append(f"# HELP {name}_total {self.REQUESTS_HELP}\n# TYPE {name}_total counter\n")
        out += [f"{name}_total{{{self._labels(labels)[0]}}} {_go(count)}\n" for labels, count, _ in requests]
        out.append(f"# HELP {name}_created {self.REQUESTS_HELP}\n# TYPE {name}_created gauge\n")
        out += [f"{name}_created{{{self._labels(labels)[0]}}} {_go(created)}\n" for labels, _, created in requests]
        name = "istio_request_duration_milliseconds"
        out.append(f"# HELP {name} {self.DURATION_HELP}\n# TYPE {name} histogram\n")
        for labels, (buckets, total), _ in durations:
            text, before, after = self._labels(labels)
            cumulative = 0.0
            for le, n in zip(_LE, buckets, strict=True):
                cumulative += n
                bucket = ",".join(p for p in (before, f'le="{le}"', after) if p)
                out.append(f"{name}_bucket{{{bucket}}} {_go(cumulative)}\n")
            out.append(f"{name}_count{{{text}}} {_go(cumulative)}\n{name}_sum{{{text}}} {_go(total)}\n")
        out.append(f"# HELP {name}_created {self.DURATION_HELP}\n# TYPE {name}_created gauge\n")
        out += [f"{name}_created{{{self._labels(labels)[0]}}} {_go(created)}\n" for labels, _, created in durations]
        return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


_LE = (*(_go(b) for b in ISTIO_DURATION_BUCKETS), "+Inf")


class _Histogram:
    """Bucket counts (not cumulative), sum and creation time of one label set."""

    def __init__(self, created: float) -> None:
        self.created = created
        self.buckets = [0.0] * (len(ISTIO_DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, values: list[float]) -> None:
        for value in values:
            self.buckets[bisect.bisect_left(ISTIO_DURATION_BUCKETS, value)] += 1
            self.total += value

    def snapshot(self) -> tuple[list[float], float]:
        return list(self.buckets), self.total


@dataclass(frozen=True)
class RoutingSnapshot:
    virtual_services: list[dict[str, Any]]
    destination_rules: list[dict[str, Any]]
    endpoints: EndpointIndex
    index: routing.MeshIndex


class MeshState:
    """The VirtualServices and DestinationRules the watchers have seen, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (plural, scope) -> {(namespace, name): object}; scope is a namespace or "" for all
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._synced: set[tuple[str, str]] = set()
        self._version = 0  # bumped on every change, so a tick rebuilds its indexes only after one
        self._snapshot: tuple[int, RoutingSnapshot] | None = None

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    def replace(self, plural: str, scope: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._objects[(plural, scope)] = {self._key(o): o for o in items}
            self._synced.add((plural, scope))
            self._version += 1

    def apply(self, plural: str, scope: str, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            objects = self._objects.setdefault((plural, scope), {})
            if event_type == "DELETED":
                objects.pop(self._key(obj), None)
            else:
                objects[self._key(obj)] = obj
            self._version += 1

    def items(self, plural: str) -> list[dict[str, Any]]:
        with self._lock:
            merged: dict[tuple[str, str], dict[str, Any]] = {}
            for (kind, _), objects in self._objects.items():
                if kind == plural:
                    merged.update(objects)
            return list(merged.values())

    def synced(self, expected: int) -> bool:
        with self._lock:
            return len(self._synced) >= expected

    def endpoints(self) -> EndpointIndex:
        """The ready endpoints of the Services seen, indexed for routing (a snapshot)."""
        return EndpointIndex(self.items(SERVICES), self.items(ENDPOINT_SLICES), self.items(PODS))

    def routing(self) -> RoutingSnapshot:
        """The VirtualServices, DestinationRules and ready endpoints now, with their index; rebuilt only
        after a change (a tick at 1,000 services must not rebuild them every slice)."""
        with self._lock:
            version, snapshot = self._version, self._snapshot
        if snapshot is not None and snapshot[0] == version:
            return snapshot[1]
        virtual_services, destination_rules = self.items(VIRTUAL_SERVICES), self.items(DESTINATION_RULES)
        built = RoutingSnapshot(
            virtual_services,
            destination_rules,
            self.endpoints(),
            routing.MeshIndex(virtual_services, destination_rules),
        )
        with self._lock:
            self._snapshot = (version, built)
        return built

    def summary(self) -> dict[str, dict[str, Any]]:
        """{"virtualservices": {"ns/name": resourceVersion}, "destinationrules": {...},
        "endpoints": {"ns/service": ready endpoints}} (endpoints only for the Services followed)."""
        out: dict[str, dict[str, Any]] = {}
        for plural in (VIRTUAL_SERVICES, DESTINATION_RULES, HTTP_ROUTES):
            out[plural] = {
                f"{ns}/{name}": str((o.get("metadata") or {}).get("resourceVersion", ""))
                for o in self.items(plural)
                for ns, name in [MeshState._key(o)]
            }
        if not out[HTTP_ROUTES]:
            del out[HTTP_ROUTES]  # shown once there are any (Gateway API)
        out["endpoints"] = self.endpoints().summary()
        return out


class Watcher:
    """List-then-watch one kind of Istio object in one scope, into a MeshState, until stopped."""

    def __init__(
        self,
        api_client: Any,
        state: MeshState,
        plural: str,
        namespace: str,
        stop: threading.Event,
        watch_timeout_s: int = 30,
    ) -> None:
        self.api_client = api_client
        self.state = state
        self.plural = plural
        self.namespace = namespace  # "" = all namespaces
        self.stop = stop
        self.watch_timeout_s = watch_timeout_s
        self.thread = threading.Thread(
            target=self._loop, name=f"meshsim-watch-{plural}-{namespace or 'all'}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _list_func(self, version: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        from kubernetes import client

        ns = self.namespace
        if self.plural == SERVICES:
            core = client.CoreV1Api(self.api_client)
            return (core.list_namespaced_service, (ns,)) if ns else (core.list_service_for_all_namespaces, ())
        if self.plural == PODS:
            core = client.CoreV1Api(self.api_client)
            return (core.list_namespaced_pod, (ns,)) if ns else (core.list_pod_for_all_namespaces, ())
        if self.plural == ENDPOINT_SLICES:
            discovery = client.DiscoveryV1Api(self.api_client)
            if ns:
                return discovery.list_namespaced_endpoint_slice, (ns,)
            return discovery.list_endpoint_slice_for_all_namespaces, ()
        api = client.CustomObjectsApi(self.api_client)
        group = GATEWAY_GROUP if self.plural == HTTP_ROUTES else ISTIO_GROUP
        if ns:
            return api.list_namespaced_custom_object, (group, version, ns, self.plural)
        return api.list_cluster_custom_object, (group, version, self.plural)

    def _loop(self) -> None:
        from kubernetes import watch as watch_module
        from kubernetes.client.exceptions import ApiException

        watch: Any = watch_module  # the kubernetes client is untyped

        # Istio objects: the first version the API server serves. Core objects have one version.
        versions = list(ISTIO_VERSIONS) if self.plural in (VIRTUAL_SERVICES, DESTINATION_RULES) else [""]
        if self.plural == HTTP_ROUTES:
            versions = ["v1"]
        while not self.stop.is_set():
            version = versions[0]
            try:
                func, args = self._list_func(version)
                # Plain dicts for every kind (the typed client would build model objects).
                listing = json.loads(func(*args, _preload_content=False).data)
                self.state.replace(self.plural, self.namespace, list(listing.get("items") or []))
                resource_version = listing["metadata"]["resourceVersion"]
                w = watch.Watch()
                for event in w.stream(
                    func,
                    *args,
                    resource_version=resource_version,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=self.watch_timeout_s + 5,
                ):
                    if self.stop.is_set():
                        w.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.state.apply(self.plural, self.namespace, event["type"], event["raw_object"])
                    elif event["type"] == "ERROR":  # e.g. 410 Gone: re-list
                        break
            except ApiException as exc:
                if exc.status == 404 and len(versions) > 1:
                    log.info("%s/%s not served, trying %s", ISTIO_GROUP, version, versions[1])
                    versions.pop(0)
                    continue
                if exc.status == 404 and self.plural == HTTP_ROUTES:  # no Gateway API CRDs: nothing to follow
                    log.info("%s/v1 httproutes not served; HTTPRoutes are not followed", GATEWAY_GROUP)
                    self.state.replace(self.plural, self.namespace, [])
                    return
                log.warning("watching %s failed (%s); re-listing", self.plural, exc.status)
                self.stop.wait(1.0)
            except Exception as exc:
                log.warning("watching %s failed (%s); re-listing", self.plural, exc)
                self.stop.wait(1.0)


class Simulator:
    """The live configuration, the counts, and the tick that turns both into metrics."""

    def __init__(self, config: MeshsimConfig, state: MeshState, metrics: IstioMetrics, seed: int) -> None:
        self._lock = threading.Lock()
        self._config = config
        self.state = state
        self.metrics = metrics
        self.rng = random.Random(seed)
        self.seed = seed
        self._reset_counts_locked()

    # configuration -----------------------------------------------------------------------------
    @property
    def config(self) -> MeshsimConfig:
        with self._lock:
            return self._config

    def set_destination(self, key: str, body: Any) -> None:
        key = parse_destination_key(key)
        with self._lock:
            behaviour = parse_destination(body, self._config.default_destination)
            self._config = replace(self._config, destinations={**self._config.destinations, key: behaviour})

    def delete_destination(self, key: str) -> None:
        with self._lock:
            destinations = {k: v for k, v in self._config.destinations.items() if k != key}
            self._config = replace(self._config, destinations=destinations)

    def set_service(self, namespace: str, host: str, body: Any) -> None:
        service = parse_service(body, namespace, host)
        with self._lock:
            self._config = replace(self._config, services={**self._config.services, service.key: service})

    def delete_service(self, namespace: str, host: str) -> None:
        with self._lock:
            key = f"{namespace}/{host}"
            self._config = replace(self._config, services={k: v for k, v in self._config.services.items() if k != key})

    # counts ------------------------------------------------------------------------------------
    def _reset_counts_locked(self) -> None:
        self._since = time.time()
        self._total = 0
        self._destinations: Tally[str] = Tally()
        self._routes: Tally[str] = Tally()
        self._responses: dict[str, Tally[str]] = {}
        self._unrouted: Tally[str] = Tally()
        self._mirrored: Tally[str] = Tally()

    def reset_counts(self) -> None:
        with self._lock:
            self._reset_counts_locked()

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "since": self._since,
                "total": self._total,
                "destinations": dict(self._destinations),
                "routes": dict(self._routes),
                "responses": {k: dict(v) for k, v in self._responses.items()},
                "unrouted": dict(self._unrouted),
                "mirrored": dict(self._mirrored),
            }

    # the tick ----------------------------------------------------------------------------------
    def tick(self, duration_s: float) -> list[RequestRecord]:
        """Generate and record one slice of `duration_s` seconds from the current VS/DR snapshot."""
        mesh = self.state.routing()
        http_routes = self.state.items(HTTP_ROUTES)
        with self._lock:
            records = generate_slice(
                self.rng,
                self._config,
                mesh.virtual_services,
                mesh.destination_rules,
                duration_s,
                mesh.endpoints,
                http_routes,
                mesh.index,
            )
            for r in records:
                if r.mirrored:  # a copy: no user sent it or got its answer
                    if r.decision.destination is not None:
                        self._mirrored[r.decision.destination.key] += 1
                    continue
                if not r.routed:
                    self._unrouted[r.service.key] += 1
                    continue
                self._total += 1
                if r.decision.route is not None:
                    self._routes[r.decision.route] += 1
                dest = r.decision.destination
                target = dest.key if dest is not None else f"{r.service.key}/<no route>"
                self._destinations[target] += 1
                self._responses.setdefault(target, Tally())[str(r.response_code)] += 1
        self.metrics.record(records)
        return records

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set; each slice covers the real time since the previous one."""
        last = time.monotonic()
        while not stop.wait(max(0.0, self.config.tick_seconds - (time.monotonic() - last))):
            now = time.monotonic()
            # Cap a slice so a stalled process does not emit a burst afterwards.
            self.tick(min(now - last, 1.0))
            last = now


def _json_body(handler: BaseHTTPRequestHandler) -> Any:
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"body is not JSON: {exc}") from exc


def make_handler(simulator: Simulator, expected_watchers: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "meshsim"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data, sort_keys=True).encode() + b"\n", "application/json")

        def _parts(self) -> list[str]:
            path = urlsplit(self.path).path
            return [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []

        def _dispatch(self, method: str) -> None:
            parts = self._parts()
            try:
                if method == "GET" and parts == ["metrics"]:
                    self._send(200, simulator.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif method == "GET" and parts == ["healthz"]:
                    self._json(200, {"status": "ok", "synced": simulator.state.synced(expected_watchers)})
                elif method == "GET" and parts == ["config"]:
                    self._json(200, {"seed": simulator.seed, **simulator.config.to_dict()})
                elif method == "GET" and parts == ["mesh"]:
                    self._json(200, simulator.state.summary())
                elif method == "GET" and parts == ["counts"]:
                    self._json(200, simulator.counts())
                elif method == "POST" and parts == ["counts", "reset"]:
                    simulator.reset_counts()
                    self._json(200, simulator.counts())
                elif parts[:1] == ["destinations"] and len(parts) in (3, 4) and method in ("PUT", "DELETE"):
                    key = "/".join([*parts[1:], ""][:3])  # a trailing empty subset is allowed
                    if method == "PUT":
                        simulator.set_destination(key, _json_body(self))
                    else:
                        simulator.delete_destination(key)
                    self._json(200, simulator.config.behaviour(key).to_dict())
                elif parts[:1] == ["services"] and len(parts) == 3 and method in ("PUT", "DELETE"):
                    if method == "PUT":
                        simulator.set_service(parts[1], parts[2], _json_body(self))
                        self._json(200, simulator.config.services[f"{parts[1]}/{parts[2]}"].to_dict())
                    else:
                        simulator.delete_service(parts[1], parts[2])
                        self._json(200, {"deleted": f"{parts[1]}/{parts[2]}"})
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {method} {self.path}"})
            except ConfigError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

    return Handler


class Meshsim:
    """The whole running simulator: watchers + ticker + HTTP server. `start()`, then `stop()`."""

    def __init__(
        self,
        config: MeshsimConfig,
        api_client: Any,
        seed: int = 0,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.stop_event = threading.Event()
        self.state = MeshState()
        self.metrics = IstioMetrics()
        self.simulator = Simulator(config, self.state, self.metrics, seed)
        scopes = list(config.namespaces) or [""]
        self.watchers = [
            Watcher(api_client, self.state, plural, ns, self.stop_event) for plural in WATCHED for ns in scopes
        ]
        handler = make_handler(self.simulator, len(self.watchers))
        self.server = ThreadingHTTPServer(listen, handler)
        self.server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.server.serve_forever, name="meshsim-http", daemon=True),
            threading.Thread(target=self.simulator.run, args=(self.stop_event,), name="meshsim-tick", daemon=True),
        ]

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        # Watcher threads are daemons blocked in a watch call at most watch_timeout_s; not joined.
