"""`coalmine meshsim`: run the Istio telemetry simulator until interrupted.

Why it exists: to turn flags and a config file into a running `runtime.Meshsim`, print where it
listens, and stop cleanly on SIGINT/SIGTERM. It must not contain simulation logic.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from coalmine_dev.meshsim.config import ConfigError, MeshsimConfig, parse_config, parse_service

DESCRIPTION = """\
Simulate Istio's request telemetry for tests and the demo. meshsim is NOT a proxy: it sends no
requests. It watches the VirtualServices and DestinationRules in the API server, invents requests
(seeded Poisson arrivals) split the way the current routes say, and exports istio_requests_total
and istio_request_duration_milliseconds (Istio's names, labels and default buckets) on /metrics.
Destinations' error ratio and latency can be changed while it runs through its HTTP API
(PUT /destinations/<ns>/<host>/<subset>, PUT /services/<ns>/<host>, GET /counts, ...).

Ready endpoints: when a destination host is a Service with a selector, meshsim follows its
EndpointSlices as Envoy does: a subset (or the Service, without a subset) with no ready pod answers
503 with response flag UH, reported by the source only. Hosts without such a Service are treated
as served (meshsim does not know their pods).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", type=Path, help="YAML or JSON config file (see coalmine_dev.meshsim.config)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="HOST:PORT for /metrics and the control API; port 0 picks a free one (default 127.0.0.1:0)",
    )
    parser.add_argument("--address-file", type=Path, help="also write the HOST:PORT listened on to this file")
    parser.add_argument("--kubeconfig", help="kubeconfig of the API server to watch (default: $KUBECONFIG)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch VirtualServices/DestinationRules only in this namespace (repeatable; default: all)",
    )
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NS/HOST=RPS",
        help="send RPS requests per second to service HOST in NS (repeatable; adds to --config)",
    )
    parser.add_argument("--tick", type=float, help="seconds per simulated slice (default 0.1)")
    parser.add_argument("--log-level", default="INFO")


def load_config(args: argparse.Namespace) -> MeshsimConfig:
    doc: dict[str, Any] = {}
    if args.config is not None:
        text = args.config.read_text()
        loaded = json.loads(text) if args.config.suffix == ".json" else yaml.safe_load(text)
        doc = dict(loaded or {})
    services = list(doc.get("services") or [])
    for spec in args.service:
        target, sep, rps = spec.partition("=")
        namespace, slash, host = target.partition("/")
        if not (sep and slash and namespace and host):
            raise ConfigError(f"--service wants NS/HOST=RPS, got {spec!r}")
        try:
            rate = float(rps)
        except ValueError as exc:
            raise ConfigError(f"--service wants a number after '=', got {spec!r}") from exc
        services.append(parse_service({"rps": rate}, namespace, host).to_dict())
    doc["services"] = services
    if args.namespace:
        doc["namespaces"] = list(args.namespace)
    if args.tick is not None:
        doc["tickSeconds"] = args.tick
    return parse_config(doc)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--listen wants HOST:PORT, got {listen!r}")
    return host, int(port)


def api_client(kubeconfig: str | None) -> Any:
    from kubernetes import config as config_module

    config: Any = config_module  # the kubernetes client is untyped
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        return config.new_client_from_config()
    except config.ConfigException:
        config.load_incluster_config()
        from kubernetes import client

        return client.ApiClient()


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
        listen = parse_listen(args.listen)
    except (ConfigError, OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        print(f"meshsim: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    import prometheus_client

    from coalmine_dev.meshsim.runtime import Meshsim

    # Istio's exposition has no *_created series; don't add them.
    disable_created: Any = prometheus_client.disable_created_metrics  # untyped
    disable_created()
    try:
        client = api_client(args.kubeconfig)
    except Exception as exc:  # kubeconfig missing or unreadable
        print(f"meshsim: cannot build a Kubernetes client: {exc}", file=sys.stderr)
        return 1
    try:
        meshsim = Meshsim(config, client, seed=args.seed, listen=listen)
    except OSError as exc:
        print(f"meshsim: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    meshsim.start()
    print(f"meshsim listening on {meshsim.address}", flush=True)
    if args.address_file is not None:
        tmp = args.address_file.with_name(args.address_file.name + ".tmp")
        tmp.write_text(meshsim.address + "\n")
        tmp.replace(args.address_file)
    stop.wait()
    meshsim.stop()
    return 0
