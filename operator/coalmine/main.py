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


# flag, default, help; each is also read from COALMINE_<FLAG> (e.g. COALMINE_PROMETHEUS_URL).
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--prometheus-url", "http://prometheus.istio-system:9090", "Prometheus for Rollouts that name none"),
    ("--scrape-interval", "15s", "Prometheus scrape interval; analysis windows are never shorter than 4 of them"),
    ("--resync", "60s", "how often finished Rollouts re-assert their routes' weights"),
    ("--check-granularity", "100ms", "ticks due within this much of each other run together"),
    ("--prometheus-concurrency", "16", "most Prometheus queries in flight at once"),
    ("--health-port", "8080", "port of /healthz, 0 to disable"),
    ("--metrics-port", "9090", "port of /metrics, 0 to disable"),
    ("--listen-address", "0.0.0.0", "address the health and metrics endpoints bind"),
    (
        "--lease-namespace",
        os.environ.get("POD_NAMESPACE") or "coalmine-system",
        "namespace of the Lease; default $POD_NAMESPACE, else coalmine-system",
    ),
    ("--lease-name", "coalmine", "name of the Lease"),
    ("--lease-duration", "15s", "a leader silent this long is replaced"),
    ("--renew-deadline", "10s", "a leader that cannot renew for this long stops acting; < lease duration"),
    ("--retry-period", "2s", "how often the leader renews and followers look at the Lease"),
)
_INTEGERS = frozenset({"--prometheus-concurrency", "--health-port", "--metrics-port"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, default, help_text in _OPTIONS:
        env = flag[2:].replace("-", "_").upper()
        parser.add_argument(
            flag,
            type=int if flag in _INTEGERS else str,
            default=_env(env, default),
            help=f"{help_text} (env COALMINE_{env})",
        )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in _env("NAMESPACES", "").split(",") if n],
        help="namespace to watch, repeatable; default all (env COALMINE_NAMESPACES, comma-separated)",
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
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)  # a line per query


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
