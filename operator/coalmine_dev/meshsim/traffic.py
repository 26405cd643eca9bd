"""Simulated requests for one time slice: who sent what, where it went, how it answered.

Why it exists: the statistics of the simulation (Poisson arrivals, the request mix, error
ratios, latency distributions) are what tests and the demo depend on, so they live in pure
functions driven by a seeded `random.Random` and are tested on their own.

What it must not do: touch the API server, metrics, clocks or threads. It gets a snapshot of
the VirtualServices/DestinationRules and the configuration, and returns records; the runtime
decides what to do with them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from coalmine_dev.meshsim import routing
from coalmine_dev.meshsim.config import DestinationBehaviour, HeaderMix, Latency, MeshsimConfig, ServiceConfig
from coalmine_dev.meshsim.endpoints import EMPTY, EndpointIndex

# z such that P(Z <= z) = 0.99 for a standard normal Z.
Z99 = 2.3263478740408408


@dataclass(frozen=True)
class RequestRecord:
    """One simulated request, with everything the metrics and counts need."""

    service: ServiceConfig
    decision: routing.Decision
    response_code: int
    response_flags: str
    duration_ms: float
    offset_s: float  # arrival time within the slice
    sidecar: bool = True  # False: served by a pod without a sidecar (see DestinationBehaviour.sidecarless)
    grpc_status: str = ""  # gRPC requests answered 200: "0" or the error code; "" otherwise, as Istio's label
    mirrored: bool = False  # a route's mirror copied it: reported by the destination alone, never a user response

    @property
    def reached_destination(self) -> bool:
        """True when a destination pod would have seen it."""
        return self.decision.outcome == routing.OK

    @property
    def reported_by_destination(self) -> bool:
        """True when that pod's sidecar reports it (`reporter="destination"`) and shared its workload labels."""
        return self.reached_destination and self.sidecar

    @property
    def routed(self) -> bool:
        """False when no VirtualService applies to the service (the runtime does not emit these)."""
        return self.decision.route is not None


def poisson_arrivals(rng: random.Random, rate: float, duration_s: float) -> list[float]:
    """Arrival offsets in [0, duration_s) of a Poisson process with `rate` events per second."""
    if rate <= 0 or duration_s <= 0:
        return []
    arrivals = []
    t = rng.expovariate(rate)
    while t < duration_s:
        arrivals.append(t)
        t += rng.expovariate(rate)
    return arrivals


def pick_headers(rng: random.Random, mix: Sequence[HeaderMix]) -> Mapping[str, str]:
    """Headers for one request, drawn from the service's weighted mix (no mix: no headers)."""
    total = sum(m.weight for m in mix)
    if total <= 0:
        return {}
    point = rng.random() * total
    for m in mix:
        if point < m.weight:
            return m.headers
        point -= m.weight
    return mix[-1].headers


def sample_latency(rng: random.Random, latency: Latency) -> float:
    """Log-normal with median p50 and 99th percentile p99 (in ms); fixed when p99 <= p50."""
    if latency.p50_ms <= 0:
        return 0.0
    if latency.p99_ms <= latency.p50_ms:
        return latency.p50_ms
    sigma = (math.log(latency.p99_ms) - math.log(latency.p50_ms)) / Z99
    return rng.lognormvariate(math.log(latency.p50_ms), sigma)


def sample_response_code(rng: random.Random, behaviour: DestinationBehaviour) -> int:
    return behaviour.error_code if rng.random() < behaviour.error_ratio else 200


def simulate_request(
    rng: random.Random,
    service: ServiceConfig,
    virtual_services: Sequence[Mapping[str, Any]],
    destination_rules: Sequence[Mapping[str, Any]],
    config: MeshsimConfig,
    offset_s: float = 0.0,
    endpoints: EndpointIndex = EMPTY,
    http_routes: Sequence[Mapping[str, Any]] = (),
) -> RequestRecord:
    request = routing.Request(headers=pick_headers(rng, service.headers), uri=service.uri)
    decision = routing.route_request(
        virtual_services,
        destination_rules,
        service.namespace,
        service.host,
        request,
        rng,
        client_namespace=service.client_namespace,
        endpoints=endpoints,
        http_routes=http_routes,
    )
    if decision.outcome != routing.OK or decision.destination is None:
        code = decision.response_code or 404
        return RequestRecord(service, decision, code, decision.response_flags, 0.0, offset_s)
    behaviour = config.behaviour(decision.destination.key)
    if behaviour.overflow_ratio and rng.random() < behaviour.overflow_ratio:
        overflow = replace(decision, outcome=routing.OVERFLOW)  # reported by the source only, like UH
        return RequestRecord(service, overflow, 503, overflow.response_flags, 0.0, offset_s)
    return _served(rng, service, decision, behaviour, offset_s)


def _served(
    rng: random.Random,
    service: ServiceConfig,
    decision: routing.Decision,
    behaviour: DestinationBehaviour,
    offset_s: float,
    *,
    mirrored: bool = False,
) -> RequestRecord:
    """A request a destination pod answered, as its behaviour says (errors, latency, sidecar)."""
    code = sample_response_code(rng, behaviour)
    sidecar = not (behaviour.sidecarless > 0 and rng.random() < behaviour.sidecarless)
    latency = sample_latency(rng, behaviour.latency)
    grpc_status = ""
    if service.protocol == "grpc" and code == 200:
        failed = behaviour.grpc_error_ratio > 0 and rng.random() < behaviour.grpc_error_ratio
        grpc_status = str(behaviour.grpc_error_code) if failed else "0"
    return RequestRecord(service, decision, code, "-", latency, offset_s, sidecar, grpc_status, mirrored)


def mirror_records(
    rng: random.Random, service: ServiceConfig, decision: routing.Decision, config: MeshsimConfig, offset_s: float
) -> list[RequestRecord]:
    """The copies a route's mirrors made of one request that reached a pod, answered as their destination's
    behaviour says (its errors and latency). A copy that finds no pod is reported by no one: the caller's
    proxy reports no mirrored request, whatever becomes of it."""
    copies = []
    for shadow in decision.mirrors:
        if shadow.outcome != routing.OK or shadow.destination is None:
            continue
        behaviour = config.behaviour(shadow.destination.key)
        copies.append(_served(rng, service, shadow, behaviour, offset_s, mirrored=True))
    return copies


def generate_slice(
    rng: random.Random,
    config: MeshsimConfig,
    virtual_services: Sequence[Mapping[str, Any]],
    destination_rules: Sequence[Mapping[str, Any]],
    duration_s: float,
    endpoints: EndpointIndex = EMPTY,
    http_routes: Sequence[Mapping[str, Any]] = (),
    index: routing.MeshIndex | None = None,
) -> list[RequestRecord]:
    """All requests of all configured services arriving within one slice of `duration_s` seconds.

    Services are visited in sorted key order so that a seed reproduces the same records. `index`
    (built from the same snapshot) narrows each service's VirtualServices and DestinationRules to the
    ones that can apply, which decides the same and saves scanning them all per request.
    """
    records: list[RequestRecord] = []
    for key in sorted(config.services):
        service = config.services[key]
        vss, drs = (virtual_services, destination_rules)
        if index is not None:
            vss, drs = index.for_service(service.namespace, service.host)
        for offset in poisson_arrivals(rng, service.rps, duration_s):
            record = simulate_request(rng, service, vss, drs, config, offset, endpoints, http_routes)
            records.append(record)
            if record.decision.mirrors:
                records += mirror_records(rng, service, record.decision, config, offset)
    return records
