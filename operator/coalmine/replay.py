"""`coalmine replay -n NS NAME --from T --to T [--spec FILE]`: run a Rollout's analysis over past Prometheus
data, exactly as the operator would have, and say when it would have rolled back or promoted.

The same core runs (validation.resolve, plan.decide and plan.record_traffic, the same checkEvery grid and
windows); only the clock is virtual and the VirtualService is simulated: the owned routes start on the
stable at --from and follow the replayed decisions, the operator's A/B route included. Every check asks Prometheus as of its own moment
(instant queries with `time=`, range queries ending there), so it sees what the operator saw then.
`--spec FILE` swaps in another analysis (and steps) to tune thresholds on a past release before the next.
Kubernetes keeps no history of ready pods, so readiness gates are replayed only with `--ready CANARY[/STABLE]`,
ready pod counts assumed throughout (e.g. `--ready 0` to see a release wait for its canary and roll back).

Prometheus is asked with prometheus-api-client (blocking: a CLI needs no event loop); the Rollout,
VirtualService and DestinationRules are read with the blocking kubernetes client. Both come with the
`coalmine[status]` extra, never with the operator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from prometheus_api_client import PrometheusConnect

from coalmine.core import analysis, plan, validation, virtualservice
from coalmine.core.models import (
    TERMINAL_PHASES,
    Phase,
    ReadinessStatus,
    Ref,
    Rollout,
    RolloutSpec,
    RolloutStatus,
    format_duration,
    format_time,
    parse_duration,
)

GROUP, VERSION, PLURAL = "coalmine.dev", "v1alpha1", "rollouts"
ISTIO = ("networking.istio.io", "v1")
Ask = Callable[[Sequence[analysis.Query], datetime], dict[str, analysis.Sample]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the Rollout to replay")
    parser.add_argument("-n", "--namespace", required=True, help="its namespace")
    parser.add_argument("--from", dest="start", required=True, help="start: RFC 3339 time, or -DURATION before now")
    parser.add_argument("--to", dest="end", default="now", help="end: RFC 3339 time, -DURATION or now (default)")
    parser.add_argument("--spec", type=Path, help="a Rollout (or its spec) whose analysis and steps to try instead")
    parser.add_argument("--prometheus-url", help="default: the Rollout's spec.analysis.prometheus.address")
    parser.add_argument(
        "--scrape-interval", default="15s", help="Prometheus' scrape interval, as the operator was told (default 15s)"
    )
    parser.add_argument(
        "--ready",
        type=ready_counts,
        help="CANARY[/STABLE]: replay the readiness gates with these ready pod counts throughout (default: "
        "not replayed, as Kubernetes keeps no history of ready pods)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")


def ready_counts(text: str) -> tuple[int, int | None]:
    """`2` or `2/4`: the canary's ready pods, and the stable's (for readiness.capacity proportional)."""
    canary, _, stable = text.partition("/")
    try:
        counts = int(canary), int(stable) if stable else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not CANARY or CANARY/STABLE (ready pod counts)") from None
    if counts[0] < 0 or (counts[1] is not None and counts[1] < 0):
        raise argparse.ArgumentTypeError(f"{text!r}: ready pod counts are not negative")
    return counts


def moment(text: str, now: datetime) -> datetime:
    if text == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Row:
    """One replayed tick: its moment, the check it made (if any), and what the plan decided."""

    at: datetime
    step: str
    weight: int | None
    phase: str
    check: analysis.CheckResult | None
    events: tuple[plan.Event, ...]
    match_route: str | None = None  # the operator's A/B route, while the replayed VirtualService has it
    match: tuple[dict[str, Any], ...] | None = None  # its match
    readiness: ReadinessStatus | None = None  # the replayed status.readiness (only with --ready)
    mirror: int | None = None  # the operator's mirror percent, while the replayed VirtualService has it

    def to_json(self) -> dict[str, Any]:
        check = self.check
        ready = self.readiness
        return {
            "at": format_time(self.at),
            "step": self.step,
            "weight": self.weight,
            "phase": self.phase,
            "matchRoute": {"name": self.match_route, "match": list(self.match or ())} if self.match_route else None,
            "mirror": self.mirror,
            "readiness": ready.model_dump(by_alias=True, exclude_none=True, mode="json") if ready else None,
            "verdict": check.verdict.value if check else None,
            "window": check.window if check else None,
            "metrics": [m.to_wire() for m in check.metrics] if check else [],
            "events": [{"reason": e.reason.value, "message": e.message} for e in self.events],
        }


def replay(
    spec: RolloutSpec,
    namespace: str,
    vs: Mapping[str, Any],
    rules: Sequence[Mapping[str, Any]],
    start: datetime,
    end: datetime,
    scrape_interval: timedelta,
    ask: Ask,
    ready: tuple[int, int | None] | None = None,
    name: str = "replay",
) -> Iterator[Row]:
    """Replay a generation that starts at `start` on routes put on the stable, until it finishes or `end`.

    `ready` (canary, stable): the ready pods the readiness gates see throughout; None: gates not replayed.
    `name`: the Rollout's, which names its A/B route."""
    rollout = Rollout(ref=Ref(namespace=namespace, name=name, created_at=start), spec=spec, status=RolloutStatus())
    policy = plan.Policy(quiet_start=analysis.MIN_SCRAPES * scrape_interval, resync=timedelta(days=1))
    routes = _on_the_stable(rollout, vs, rules)
    now = start
    while now <= end:
        resolution = validation.resolve(rollout, validation.Cluster(routes, rules))
        if ready is not None and resolution.target is not None and resolution.traffic is not None:
            host = validation.short_host(resolution.traffic.canary.host)
            assumed = validation.Ready(canary=ready[0], stable=ready[1], service=f"{host} (as --ready assumes)")
            resolution = replace(resolution, ready=assumed)
        check = None
        if plan.wants_check(rollout, resolution, now):
            assert resolution.target is not None
            step = plan.step_context(rollout, now, scrape_interval)
            length = analysis.window(step.elapsed, interval=spec.analysis.interval, scrape_interval=scrape_interval)
            asked = analysis.queries(spec.analysis, resolution.target, length, step)
            check = analysis.evaluate(spec.analysis, asked, ask(asked, now), length, resolution.target, step)
        decision = plan.decide(rollout, resolution, check, now, policy)
        rollout = rollout.model_copy(update={"status": decision.status})
        outcome = plan.TrafficOutcome(at_weight=False, observed=rollout.status.canary_weight)
        if decision.weight is not None and decision.traffic is not None:
            # As the operator writes it (reconcile): the weights, the A/B route and the mirror in one patch.
            ops = plan.virtual_service_patch(rollout, routes, decision.traffic, decision.weight)
            routes = virtualservice.applied(routes, ops)
            outcome = plan.TrafficOutcome(at_weight=True, observed=decision.weight)
        follow = plan.record_traffic(rollout, decision.weight, outcome, now, policy)
        rollout = rollout.model_copy(update={"status": follow.status})
        status = rollout.status
        yield Row(
            at=now,
            step=status.step_label or "",
            weight=status.canary_weight,
            phase=status.phase.value if status.phase else "",
            check=check,
            events=(*decision.events, *follow.events),
            match_route=status.match_route,
            match=plan.desired_match(rollout) if status.match_route else None,
            readiness=status.readiness if ready is not None else None,
            mirror=status.mirror.percent if status.mirror is not None and status.mirror.active else None,
        )
        if status.phase in (*TERMINAL_PHASES, Phase.PENDING, Phase.INVALID):
            return  # finished, or it could not start (the message says why)
        wakes = [w for w in (decision.wake_at, follow.wake_at) if w is not None and w > now]
        now = min(wakes) if wakes else now + spec.analysis.check_every


def _on_the_stable(rollout: Rollout, vs: Mapping[str, Any], rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The VirtualService with the owned routes all on the stable, as a release begins."""
    resolution = validation.resolve(rollout, validation.Cluster(vs, rules))
    if resolution.traffic is None:
        problem = resolution.problem.message if resolution.problem else "the routes cannot be resolved"
        raise SystemExit(f"coalmine replay: {problem}")
    mine = validation.match_route_name(rollout.name)  # an A/B route of the live release is not there yet
    return virtualservice.applied(vs, virtualservice.weight_patch(vs, resolution.traffic, 0, match_name=mine))


def prometheus_ask(prometheus: PrometheusConnect) -> Ask:
    def ask(queries: Sequence[analysis.Query], at: datetime) -> dict[str, analysis.Sample]:
        answers = {}
        for q in queries:
            try:
                if q.range is not None:
                    result = prometheus.custom_query_range(
                        q.promql, start_time=at - q.range.span, end_time=at, step=f"{q.range.step.total_seconds():g}s"
                    )
                    values = tuple(float(v) for _, v in result[0]["values"]) if result else ()
                    answers[q.name] = analysis.Sample(None, values=values)
                else:
                    answers[q.name] = _instant(prometheus.custom_query(q.promql, params={"time": at.timestamp()}))
            except Exception as exc:  # an unanswered query is no data, as in the operator
                answers[q.name] = analysis.Sample(None, f"Prometheus did not answer: {exc}")
        return answers

    return ask


def _instant(result: Any) -> analysis.Sample:
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return analysis.Sample.of(float(result[1]))  # a scalar
    if not result:
        return analysis.Sample(None)
    if len(result) > 1:
        return analysis.Sample(None, f"query returned {len(result)} series; it must return one")
    return analysis.Sample.of(float(result[0]["value"][1]))


def _spec(live: Mapping[str, Any], override: Path | None) -> RolloutSpec:
    body = dict(live.get("spec") or {})
    status = live.get("status") or {}
    if not body.get("stable") and status.get("stable"):
        body["stable"] = status["stable"]  # the stable the replayed generation ran with
    if override is not None:
        loaded = yaml.safe_load(override.read_text()) or {}
        other = loaded.get("spec", loaded) if isinstance(loaded, dict) else {}
        for key in ("analysis", "steps"):
            if key in other:
                body[key] = other[key]
    return RolloutSpec.model_validate(body)


def ready_text(readiness: ReadinessStatus | None) -> str:
    """`ready 0/1 WaitingForCanary` (canary ready pods / needed), or "" without a record."""
    if readiness is None or readiness.canary_ready is None:
        return ""
    needed = f"/{readiness.needed}" if readiness.needed is not None else ""
    waiting = " WaitingForCanary" if readiness.waiting_since is not None else ""
    return f"ready {readiness.canary_ready}{needed}{waiting}"


def _print_text(rows: list[Row], out: Any, ready: tuple[int, int | None] | None = None) -> None:
    if ready is None:
        print("readiness: not replayed (Kubernetes keeps no history of ready pods; --ready N assumes N)", file=out)
    else:
        stable = f", stable {ready[1]}" if ready[1] is not None else ""
        print(f"readiness: replayed as if the canary had {ready[0]} ready pods{stable} throughout (--ready)", file=out)
    shown: tuple[str | None, str] = (None, "")
    for row in rows:
        check = row.check
        parts = [format_time(row.at), f"step {row.step or '-'}", f"{row.weight if row.weight is not None else '-'}%"]
        if row.match_route:
            parts.append(f"+ A/B route {row.match_route}")
        if row.mirror is not None:
            parts.append(f"+ mirror {row.mirror}% to the canary")
        if pods := ready_text(row.readiness):
            parts.append(pods)
        if check is not None:
            parts.append(f"{check.verdict.value} ({check.window})")
            parts += [
                f"{m.name} {'-' if m.value is None else f'{m.value:.4g}'}{' [dry run]' if m.dry_run else ''}"
                for m in check.metrics
            ]
        parts += [f"{e.reason.value}: {e.message}" for e in row.events]
        print("  ".join(parts), file=out)
        route = (row.match_route, plan.describe_match(row.match) if row.match else "")
        if route != shown and row.match_route:
            print(f"    A/B route {row.match_route} in the VirtualService: users with {route[1]} -> canary", file=out)
        elif route != shown and shown[0]:
            print(f"    A/B route {shown[0]} removed", file=out)
        shown = route
    last = rows[-1] if rows else None
    if last is None:
        print("nothing to replay", file=out)
    elif last.phase == "RolledBack":
        print(f"would have rolled back at {format_time(last.at)}", file=out)
    elif last.phase == "Succeeded":
        print(f"would have promoted at {format_time(last.at)}", file=out)
    elif last.phase in ("Pending", "Invalid"):
        print(f"would not have started: {last.events[-1].message if last.events else last.phase}", file=out)
    else:
        print(f"still {last.phase} at step {last.step} at {format_time(last.at)}", file=out)


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    start, end = moment(args.start, now), moment(args.end, now)
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api)
    live: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)  # type: ignore[assignment]
    spec = _spec(live, args.spec)
    if spec.virtual_service is None:
        print("coalmine replay: only Rollouts with spec.virtualService can be replayed", file=sys.stderr)
        return 2
    vs: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
        *ISTIO, args.namespace, "virtualservices", spec.virtual_service.name
    )
    rules = custom.list_namespaced_custom_object(*ISTIO, args.namespace, "destinationrules")["items"]  # type: ignore[index]
    url = args.prometheus_url or spec.analysis.prometheus.address
    if not url:
        print("coalmine replay: say where Prometheus is (--prometheus-url)", file=sys.stderr)
        return 2
    ask = prometheus_ask(PrometheusConnect(url=url, disable_ssl=True))
    scrape = parse_duration(args.scrape_interval)
    rows = list(replay(spec, args.namespace, vs, rules, start, end, scrape, ask, ready=args.ready, name=args.name))
    if args.output == "json":
        json.dump(
            {
                "from": format_time(start),
                "to": format_time(end),
                "scrapeInterval": format_duration(parse_duration(args.scrape_interval)),
                "ready": None if args.ready is None else {"canary": args.ready[0], "stable": args.ready[1]},
                "ticks": [r.to_json() for r in rows],
                "outcome": rows[-1].phase if rows else None,
                "at": format_time(rows[-1].at) if rows else None,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        _print_text(rows, sys.stdout, args.ready)
    return 0
