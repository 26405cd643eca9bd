"""`coalmine run`: settings from flags and environment variables into an OperatorConfig, then run it.

Every flag has an environment variable (COALMINE_<FLAG>), so the Deployment can set either. No kopf
here: handlers.run owns the kopf loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from coalmine.adapters.election import ElectionConfig
from coalmine.adapters.webhooks import Allowlist, NotificationsConfig
from coalmine.core.models import format_duration, parse_duration
from coalmine.runtime import OperatorConfig

DEFAULTS = OperatorConfig()
ELECTION_DEFAULTS = ElectionConfig(namespace="", name="coalmine", identity="")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"COALMINE_{name}", default)


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value))


# flag, default, help; each is also read from COALMINE_<FLAG> (e.g. COALMINE_PROMETHEUS_URL).
# The defaults are OperatorConfig's and ElectionConfig's, written once there.
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--prometheus-url", DEFAULTS.prometheus_url, "Prometheus for Rollouts that name none"),
    (
        "--scrape-interval",
        format_duration(DEFAULTS.scrape_interval),
        "Prometheus scrape interval; analysis windows are never shorter than 4 of them",
    ),
    ("--resync", format_duration(DEFAULTS.resync), "how often finished Rollouts re-assert their routes' weights"),
    (
        "--check-granularity",
        format_duration(DEFAULTS.granularity),
        "ticks due within this much of each other run together",
    ),
    ("--prometheus-concurrency", str(DEFAULTS.prometheus_concurrency), "most Prometheus queries in flight at once"),
    ("--tick-concurrency", str(DEFAULTS.tick_concurrency), "most Rollout ticks in flight at once"),
    ("--health-port", str(DEFAULTS.health_port), "port of /healthz, 0 to disable"),
    ("--metrics-port", str(DEFAULTS.metrics_port), "port of /metrics, 0 to disable"),
    ("--listen-address", DEFAULTS.listen_address, "address the health and metrics endpoints bind"),
    (
        "--lease-namespace",
        os.environ.get("POD_NAMESPACE") or "coalmine-system",
        "namespace of the Lease; default $POD_NAMESPACE, else coalmine-system",
    ),
    (
        "--webhook-allow",
        str(DEFAULTS.webhook_allow),
        "comma-separated host name patterns and CIDRs Rollouts' webhooks may call; loopback and link-local "
        "addresses only when a CIDR lists them",
    ),
    ("--webhook-concurrency", str(DEFAULTS.webhook_concurrency), "most webhook calls and notifications in flight"),
    ("--notifications-config", "", "JSON file of notification channels (mount it from a Secret); empty: none"),
    ("--lease-name", ELECTION_DEFAULTS.name, "name of the Lease"),
    (
        "--shards",
        str(DEFAULTS.shards),
        "with leader election: split Rollouts into this many shards, one Lease each (<lease-name>-shard-K), "
        "shared fairly by the replicas; 1: one leader acts on all",
    ),
    ("--lease-duration", _seconds(ELECTION_DEFAULTS.lease_duration), "a leader silent this long is replaced"),
    (
        "--renew-deadline",
        _seconds(ELECTION_DEFAULTS.renew_deadline),
        "a leader that cannot renew for this long stops acting; < lease duration",
    ),
    (
        "--retry-period",
        _seconds(ELECTION_DEFAULTS.retry_period),
        "how often the leader renews and followers look at the Lease",
    ),
)
_INTEGERS = frozenset(
    {
        "--prometheus-concurrency",
        "--tick-concurrency",
        "--shards",
        "--health-port",
        "--metrics-port",
        "--webhook-concurrency",
    }
)


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


def config_from(args: argparse.Namespace) -> OperatorConfig:
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
    return OperatorConfig(
        prometheus_url=args.prometheus_url,
        namespaces=tuple(args.namespace),
        scrape_interval=parse_duration(args.scrape_interval),
        resync=parse_duration(args.resync),
        granularity=parse_duration(args.check_granularity),
        prometheus_concurrency=args.prometheus_concurrency,
        tick_concurrency=args.tick_concurrency,
        listen_address=args.listen_address,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        election=election,
        webhook_allow=Allowlist.parse(args.webhook_allow),
        webhook_concurrency=args.webhook_concurrency,
        notifications=NotificationsConfig.load(args.notifications_config),
        shards=max(1, args.shards),
    )


def run(args: argparse.Namespace) -> int:
    from coalmine import handlers  # kopf: only for `coalmine run`

    configure_logging(args.log_format, args.verbose)
    try:
        config = config_from(args)
    except ValueError as exc:  # a bad flag or notifications config: say which, start nothing
        logging.getLogger("coalmine.operator").error("%s", exc)
        return 2
    handlers.run(config)
    return 0
