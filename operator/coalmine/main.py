"""`coalmine run`: read settings from flags and environment variables, then run the operator.

Every flag has an environment variable (COALMINE_<FLAG>), so the Deployment can set either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

from coalmine.models import parse_duration


def _env(name: str, default: str) -> str:
    return os.environ.get(f"COALMINE_{name}", default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus-url",
        default=_env("PROMETHEUS_URL", "http://prometheus.istio-system:9090"),
        help="Prometheus for Rollouts that name none (env COALMINE_PROMETHEUS_URL)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in _env("NAMESPACES", "").split(",") if n],
        help="namespace to watch, repeatable; default all (env COALMINE_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--scrape-interval",
        default=_env("SCRAPE_INTERVAL", "15s"),
        help="Prometheus scrape interval; analysis windows are never shorter than 4 of them (env COALMINE_SCRAPE_INTERVAL)",
    )
    parser.add_argument(
        "--resync",
        default=_env("RESYNC", "60s"),
        help="how often finished Rollouts re-assert their routes' weights (env COALMINE_RESYNC)",
    )
    parser.add_argument(
        "--check-granularity",
        default=_env("CHECK_GRANULARITY", "100ms"),
        help="ticks due within this much of each other run together (env COALMINE_CHECK_GRANULARITY)",
    )
    parser.add_argument(
        "--prometheus-concurrency",
        type=int,
        default=int(_env("PROMETHEUS_CONCURRENCY", "16")),
        help="most Prometheus queries in flight at once (env COALMINE_PROMETHEUS_CONCURRENCY)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(_env("HEALTH_PORT", "8080")),
        help="port of /healthz, 0 to disable (env COALMINE_HEALTH_PORT)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", "9090")),
        help="port of /metrics, 0 to disable (env COALMINE_METRICS_PORT)",
    )
    parser.add_argument(
        "--listen-address",
        default=_env("LISTEN_ADDRESS", "0.0.0.0"),
        help="address the health and metrics endpoints bind (env COALMINE_LISTEN_ADDRESS)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=_env("LOG_FORMAT", "text"),
        help="log lines as text or JSON, each with the Rollout's namespace/name (env COALMINE_LOG_FORMAT)",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_env("LEADER_ELECTION", "0").lower() in ("1", "true", "yes"),
        help="act only while holding a coordination.k8s.io Lease, for several replicas (env COALMINE_LEADER_ELECTION=1)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=_env("LEASE_NAMESPACE", os.environ.get("POD_NAMESPACE") or "coalmine-system"),
        help="namespace of the Lease; default $POD_NAMESPACE, else coalmine-system (env COALMINE_LEASE_NAMESPACE)",
    )
    parser.add_argument(
        "--lease-name", default=_env("LEASE_NAME", "coalmine"), help="name of the Lease (env COALMINE_LEASE_NAME)"
    )
    parser.add_argument(
        "--lease-duration",
        default=_env("LEASE_DURATION", "15s"),
        help="a leader silent this long is replaced (env COALMINE_LEASE_DURATION)",
    )
    parser.add_argument(
        "--renew-deadline",
        default=_env("RENEW_DEADLINE", "10s"),
        help="a leader that cannot renew for this long stops acting; < lease duration (env COALMINE_RENEW_DEADLINE)",
    )
    parser.add_argument(
        "--retry-period",
        default=_env("RETRY_PERIOD", "2s"),
        help="how often the leader renews and followers look at the Lease (env COALMINE_RETRY_PERIOD)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=_env("VERBOSE", "") == "1", help="debug logging"
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rollout = getattr(record, "rollout", None)
        if rollout:
            line["rollout"] = rollout
        k8s = getattr(record, "k8s_ref", None)
        if isinstance(k8s, dict) and "rollout" not in line and k8s.get("name"):
            line["rollout"] = f"{k8s.get('namespace')}/{k8s.get('name')}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rollout = getattr(record, "rollout", None)
        prefix = f"[{rollout}] " if rollout else ""
        record.msg_with_rollout = prefix + record.getMessage()
        return super().format(record)


def configure_logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s %(msg_with_rollout)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # kopf logs every watch event at DEBUG and each handler run at INFO: keep only what matters.
    logging.getLogger("kopf").setLevel(logging.INFO if verbose else logging.WARNING)


def identity() -> str:
    """Who holds the Lease: the pod's name in a cluster (POD_NAME), else host and process id."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from coalmine import handlers
    from coalmine.adapters.election import ElectionConfig

    configure_logging(args.log_format, args.verbose)
    election = None
    if args.leader_election:
        election = ElectionConfig(
            namespace=args.lease_namespace,
            name=args.lease_name,
            identity=identity(),
            lease_duration=parse_duration(args.lease_duration).total_seconds(),
            renew_deadline=parse_duration(args.renew_deadline).total_seconds(),
            retry_period=parse_duration(args.retry_period).total_seconds(),
        )
    config = handlers.OperatorConfig(
        prometheus_url=args.prometheus_url,
        namespaces=tuple(args.namespace),
        scrape_interval=parse_duration(args.scrape_interval),
        resync=parse_duration(args.resync),
        granularity=parse_duration(args.check_granularity),
        prometheus_concurrency=args.prometheus_concurrency,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        election=election,
    )
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.listen_address)
    registry = kopf.OperatorRegistry()
    operator = handlers.Operator(config)
    handlers.register(registry, operator)
    liveness = f"http://{args.listen_address}:{args.health_port}/healthz" if args.health_port else None
    logging.getLogger("coalmine.operator").info(
        "coalmine starting: namespaces=%s prometheus=%s leader election=%s",
        ",".join(config.namespaces) or "*",
        config.prometheus_url,
        f"Lease {election.namespace}/{election.name} as {election.identity}" if election else "off",
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
        )
    )
    return 0
