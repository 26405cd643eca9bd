"""`coalmine status [-n NS] [NAME] [--watch]`: show Rollouts as a cluster admin sees them.

Why it exists: the operator writes everything it knows to the Rollout's status and Events; this is
the thin shell that reads those from whatever cluster the kubeconfig points to and hands them to
the pure `render` module. On a terminal `--watch` redraws in place (rich Live); in a pipe it prints
plain text, and a new block only when something changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text
from urllib3.exceptions import HTTPError

from coalmine.status import render

GROUP, VERSION, PLURAL = "coalmine.dev", "v1alpha1", "rollouts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="one Rollout (default: all in the namespace)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else 'default')")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="Rollouts in every namespace")
    parser.add_argument("-w", "--watch", action="store_true", help="keep refreshing until Ctrl-C")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between reads in --watch (default 0.5)")


@dataclass(frozen=True)
class Snapshot:
    """The Rollouts read in one go, each with its Events (oldest first)."""

    rollouts: tuple[tuple[dict[str, Any], tuple[render.EventRow, ...]], ...]

    def views(self, now: datetime) -> list[render.RolloutView]:
        return [render.summarize(obj, events, now) for obj, events in self.rollouts]

    def fingerprint(self) -> tuple[Any, ...]:
        return tuple(render.fingerprint(obj, events) for obj, events in self.rollouts)


def event_row(event: Any) -> render.EventRow:
    """A kubernetes client CoreV1Event as an EventRow."""
    when = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return render.EventRow(
        time=render.parse_time(when),
        type=event.type or "",
        reason=event.reason or "",
        message=event.message or "",
        count=event.count or 1,
    )


class Reader:
    """Reads Rollouts and their Events with the synchronous kubernetes client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def snapshot(self, namespace: str | None, name: str | None = None) -> Snapshot:
        """Rollouts in `namespace` (None: all namespaces), or just `name`; missing `name` gives none."""
        if namespace is None:
            listed: dict[str, Any] = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)  # type: ignore[assignment]
            events = self.core.list_event_for_all_namespaces(field_selector="involvedObject.kind=Rollout")
        else:
            listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)  # type: ignore[assignment]
            selector = "involvedObject.kind=Rollout" + (f",involvedObject.name={name}" if name else "")
            events = self.core.list_namespaced_event(namespace, field_selector=selector)
        items: list[dict[str, Any]] = [
            obj for obj in listed.get("items", []) if name is None or obj["metadata"]["name"] == name
        ]
        by_object: dict[str, list[render.EventRow]] = {}
        for event in events.items:
            ref = event.involved_object
            key = ref.uid or f"{ref.namespace}/{ref.name}"
            by_object.setdefault(key, []).append(event_row(event))
        pairs = []
        for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
            meta = obj["metadata"]
            rows = by_object.get(meta.get("uid", ""), []) + by_object.get(f"{meta['namespace']}/{meta['name']}", [])
            pairs.append((obj, tuple(sorted(rows, key=lambda e: e.time or datetime.min.replace(tzinfo=UTC)))))
        return Snapshot(tuple(pairs))


def default_namespace(kubeconfig: str | None) -> str:
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    namespace: str = (active or {}).get("context", {}).get("namespace") or "default"
    return namespace


def watch(
    read: Callable[[], Snapshot],
    *,
    namespace: str | None,
    interval: float,
    out: TextIO,
    tty: bool,
    header: Callable[[], RenderableType | None] = lambda: None,
    until: Callable[[Snapshot], bool] = lambda _: False,
) -> Snapshot | None:
    """Redraw until Ctrl-C or `until(snapshot)`; return the last snapshot.

    On a TTY: rich Live, redrawn at every read. Otherwise: a plain text block whenever the
    Rollouts or their Events change (the hold countdown alone does not print a new block).
    """
    last: Snapshot | None = None
    if tty:
        console = Console(file=out)
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                snap, problem = _read(read)
                now = datetime.now(UTC)
                live.update(_screen(snap or last, problem, namespace, now, header()), refresh=True)
                last = snap or last
                if snap is not None and until(snap):
                    return last
                time.sleep(interval)
    printed: tuple[Any, ...] | None = None
    while True:
        snap, problem = _read(read)
        if problem:
            out.write(f"--- {problem}\n")
            out.flush()
        if snap is not None:
            last = snap
            if snap.fingerprint() != printed:
                printed = snap.fingerprint()
                now = datetime.now(UTC)
                out.write(f"--- {now.strftime('%H:%M:%S')}Z\n")
                out.write("\n".join(render.all_lines(snap.views(now), namespace)) + "\n")
                out.flush()
            if until(snap):
                return last
        time.sleep(interval)


def _read(read: Callable[[], Snapshot]) -> tuple[Snapshot | None, str]:
    try:
        return read(), ""
    except (ApiException, HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        return None, f"cannot read Rollouts: {reason}"


def _screen(
    snap: Snapshot | None, problem: str, namespace: str | None, now: datetime, header: RenderableType | None
) -> RenderableType:
    parts: list[RenderableType] = [header] if header is not None else []
    if snap is not None:
        parts.append(render.all_renderable(snap.views(now), namespace))
    if problem:
        parts.append(Text(problem, style="bold red"))
    return Group(*parts)


def print_once(snap: Snapshot, namespace: str | None, out: TextIO, tty: bool) -> None:
    now = datetime.now(UTC)
    if tty:
        Console(file=out).print(render.all_renderable(snap.views(now), namespace))
    else:
        out.write("\n".join(render.all_lines(snap.views(now), namespace)) + "\n")


def run(args: argparse.Namespace) -> int:
    namespace: str | None = None if args.all_namespaces else (args.namespace or default_namespace(args.kubeconfig))
    try:
        api_client = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        print(f"coalmine status: cannot load the kubeconfig: {error}", file=sys.stderr)
        return 2
    reader = Reader(api_client)
    tty = sys.stdout.isatty()

    def read() -> Snapshot:
        return reader.snapshot(namespace, args.name)

    try:
        if args.watch:
            watch(read, namespace=namespace, interval=args.interval, out=sys.stdout, tty=tty)
            return 0
        snap, problem = _read(read)
        if snap is None:
            print(f"coalmine status: {problem}", file=sys.stderr)
            return 1
        if args.name and not snap.rollouts:
            print(f"coalmine status: Rollout {args.name} not found in namespace {namespace}", file=sys.stderr)
            return 1
        print_once(snap, namespace, sys.stdout, tty)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        api_client.close()
