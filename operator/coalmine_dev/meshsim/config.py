"""meshsim's configuration: plain data, parsed and validated from YAML/JSON dicts.

Why it exists: the same shapes arrive from the `--config` file, from command-line flags and
from the HTTP control API (`PUT /services/...`, `PUT /destinations/...`); parsing them in one
place gives one set of error messages and one `to_dict` for `GET /config`.

What it must not do: I/O of any kind (the CLI reads the file), or hold mutable shared state
(the runtime owns the live configuration and replaces these frozen values under its lock).

File format (keys are camelCase like Kubernetes; `source_workload` is also accepted):

    namespaces: [demo]              # VS/DR namespaces to watch; empty or absent = all
    tickSeconds: 0.1
    services:
      - {namespace: demo, host: reviews, rps: 50, sourceWorkload: loadgen,
         headers: [{weight: 9, headers: {}}, {weight: 1, headers: {user-group: beta}}]}
    defaultDestination: {errorRatio: 0.0, latency: {p50Ms: 20, p99Ms: 80}}
    destinations:
      demo/reviews/v2: {errorRatio: 0.2, latency: {p50Ms: 40, p99Ms: 400}, errorCode: 503}

`latency: {fixedMs: 5}` gives every request the same duration. A service with `protocol: grpc` sends gRPC
requests: of those a destination answers with HTTP 200, `grpcErrorRatio` get grpc-status `grpcErrorCode`
(default 14, UNAVAILABLE) and the rest 0 (OK), as Istio's `grpc_response_status` label. A service with
`mode: ambient` is reported as under ambient with a waypoint: by the waypoint alone (`reporter="waypoint"`,
every routed request, as the waypoint routes them), with no sidecar's `source` or `destination` series.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message says which."""


@dataclass(frozen=True)
class Latency:
    """A log-normal latency with the given median and 99th percentile (fixed when they are equal)."""

    p50_ms: float = 20.0
    p99_ms: float = 80.0

    def to_dict(self) -> dict[str, float]:
        return {"p50Ms": self.p50_ms, "p99Ms": self.p99_ms}


@dataclass(frozen=True)
class DestinationBehaviour:
    """How one destination (namespace/host/subset) answers."""

    error_ratio: float = 0.0
    latency: Latency = field(default_factory=Latency)
    error_code: int = 500
    # The share of its requests served by pods without a sidecar: answered, but no destination proxy
    # reports them, and the client's proxy cannot learn the pod's workload labels (no metadata exchange).
    sidecarless: float = 0.0
    grpc_error_ratio: float = 0.0  # of gRPC requests answered HTTP 200: the share with grpc-status grpcErrorCode
    grpc_error_code: int = 14  # UNAVAILABLE
    overflow_ratio: float = 0.0  # this share never reaches a pod: 503 UO from the caller's circuit breaker

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "errorRatio": self.error_ratio,
            "latency": self.latency.to_dict(),
            "errorCode": self.error_code,
            "sidecarless": self.sidecarless,
            **({"overflowRatio": self.overflow_ratio} if self.overflow_ratio else {}),
        }
        if self.grpc_error_ratio:  # shown when set (gRPC services only)
            result.update(grpcErrorRatio=self.grpc_error_ratio, grpcErrorCode=self.grpc_error_code)
        return result


@dataclass(frozen=True)
class HeaderMix:
    """One entry of a service's request mix: `weight` relative to the other entries."""

    weight: float
    headers: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "headers": dict(self.headers)}


@dataclass(frozen=True)
class ServiceConfig:
    """A service that receives simulated requests, addressed by its short name in `namespace`."""

    namespace: str
    host: str
    rps: float
    headers: tuple[HeaderMix, ...] = ()
    source_workload: str = "loadgen"
    source_namespace: str | None = None  # None: the service's namespace
    uri: str = "/"
    protocol: str = "http"  # "grpc": Istio's request_protocol="grpc", with a grpc_response_status
    mode: str = "sidecar"  # "ambient": reported by a waypoint alone (reporter="waypoint"), as under ambient

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.host}"

    @property
    def client_namespace(self) -> str:
        return self.source_namespace or self.namespace

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "host": self.host,
            "rps": self.rps,
            "headers": [h.to_dict() for h in self.headers],
            "sourceWorkload": self.source_workload,
            "sourceNamespace": self.source_namespace,  # null: the service's namespace
            "uri": self.uri,
            **({"protocol": self.protocol} if self.protocol != "http" else {}),
            **({"mode": self.mode} if self.mode != "sidecar" else {}),
        }


@dataclass(frozen=True)
class MeshsimConfig:
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)  # key: "<ns>/<host>"
    destinations: Mapping[str, DestinationBehaviour] = field(default_factory=dict)  # "<ns>/<host>/<subset>"
    default_destination: DestinationBehaviour = field(default_factory=DestinationBehaviour)
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    tick_seconds: float = 0.1

    def behaviour(self, key: str) -> DestinationBehaviour:
        return self.destinations.get(key, self.default_destination)

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespaces": list(self.namespaces),
            "tickSeconds": self.tick_seconds,
            "services": [s.to_dict() for s in self.services.values()],
            "defaultDestination": self.default_destination.to_dict(),
            "destinations": {k: v.to_dict() for k, v in sorted(self.destinations.items())},
        }


def _number(data: Mapping[str, Any], key: str, default: float, *, low: float, high: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")
    return float(value)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {value!r}")
    return value


def parse_latency(data: Any, default: Latency | None = None) -> Latency:
    base = default or Latency()
    latency = _mapping(data, "latency")
    if "fixedMs" in latency:
        fixed = _number(latency, "fixedMs", 0, low=0)
        return Latency(fixed, fixed)
    p50 = _number(latency, "p50Ms", base.p50_ms, low=0)
    p99 = _number(latency, "p99Ms", max(base.p99_ms, p50), low=0)
    if p99 < p50:
        raise ConfigError(f"latency.p99Ms ({p99}) must be >= latency.p50Ms ({p50})")
    return Latency(p50, p99)


def parse_destination(data: Any, default: DestinationBehaviour | None = None) -> DestinationBehaviour:
    """Parse `{errorRatio, latency: {p50Ms, p99Ms} | {fixedMs}, errorCode, sidecarless, overflowRatio}`.

    Absent keys come from `default` (a PUT replaces a destination's behaviour with defaults + body)."""
    base = default or DestinationBehaviour()
    d = _mapping(data, "destination")
    code = int(_number(d, "errorCode", base.error_code, low=100, high=599))
    return DestinationBehaviour(
        error_ratio=_number(d, "errorRatio", base.error_ratio, low=0.0, high=1.0),
        latency=parse_latency(d.get("latency"), base.latency) if "latency" in d else base.latency,
        error_code=code,
        sidecarless=_number(d, "sidecarless", base.sidecarless, low=0.0, high=1.0),
        grpc_error_ratio=_number(d, "grpcErrorRatio", base.grpc_error_ratio, low=0.0, high=1.0),
        grpc_error_code=int(_number(d, "grpcErrorCode", base.grpc_error_code, low=0, high=16)),
        overflow_ratio=_number(d, "overflowRatio", base.overflow_ratio, low=0.0, high=1.0),
    )


def parse_headers(data: Any) -> tuple[HeaderMix, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"headers must be a list of {{weight, headers}}, got {data!r}")
    mix = []
    for entry in data:
        e = _mapping(entry, "headers entry")
        headers = {str(k): str(v) for k, v in _mapping(e.get("headers"), "headers.headers").items()}
        mix.append(HeaderMix(_number(e, "weight", 1.0, low=0.0), headers))
    return tuple(mix)


def parse_service(data: Any, namespace: str | None = None, host: str | None = None) -> ServiceConfig:
    """Parse one service; `namespace`/`host` (from a URL path) override the body's."""
    s = _mapping(data, "service")
    ns = namespace or s.get("namespace")
    name = host or s.get("host")
    if not ns or not name:
        raise ConfigError(f"a service needs namespace and host, got {dict(s)!r}")
    source = s.get("sourceWorkload", s.get("source_workload", "loadgen"))
    source_ns = s.get("sourceNamespace", s.get("source_namespace"))
    return ServiceConfig(
        namespace=str(ns),
        host=str(name),
        rps=_number(s, "rps", 10.0, low=0.0),
        headers=parse_headers(s.get("headers")),
        source_workload=str(source),
        source_namespace=str(source_ns) if source_ns else None,
        uri=str(s.get("uri", "/")),
        protocol=_protocol(s.get("protocol", "http")),
        mode=_mode(s.get("mode", "sidecar")),
    )


def _mode(value: Any) -> str:
    if value not in ("sidecar", "ambient"):
        raise ConfigError(f"mode must be sidecar or ambient, got {value!r}")
    return str(value)


def _protocol(value: Any) -> str:
    if value not in ("http", "grpc"):
        raise ConfigError(f"protocol must be http or grpc, got {value!r}")
    return str(value)


def parse_destination_key(key: str) -> str:
    parts = key.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ConfigError(f"destination keys are '<namespace>/<host>/<subset>', got {key!r}")
    return key


def parse_config(data: Any) -> MeshsimConfig:
    """Parse a whole configuration document (the `--config` file)."""
    doc = _mapping(data, "config")
    services_raw = doc.get("services") or []
    if not isinstance(services_raw, list):
        raise ConfigError("services must be a list")
    services = {svc.key: svc for svc in (parse_service(s) for s in services_raw)}
    default = parse_destination(doc.get("defaultDestination"))
    destinations = {
        parse_destination_key(str(k)): parse_destination(v, default)
        for k, v in _mapping(doc.get("destinations"), "destinations").items()
    }
    namespaces = doc.get("namespaces") or []
    if not isinstance(namespaces, list):
        raise ConfigError("namespaces must be a list")
    return MeshsimConfig(
        services=services,
        destinations=destinations,
        default_destination=default,
        namespaces=tuple(str(n) for n in namespaces),
        tick_seconds=_number(doc, "tickSeconds", 0.1, low=0.01, high=10.0),
    )
