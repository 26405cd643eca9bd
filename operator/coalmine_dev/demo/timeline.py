"""The demo's timeline: what happened, assembled from the Rollout status and Prometheus, then drawn.

Why it exists: the picture must show what the operator recorded and what Prometheus measured,
not what the demo thinks it did. `selector_from_status` takes the canary's label selector from the
queries the operator wrote into the status; `range_queries` asks Prometheus for the canary's 5xx
ratio and latency quantile with that same selector; `assemble` joins those answers with the
status's step history and rollback record. All of that is pure. `plot` (matplotlib, Agg) is the
only part that writes anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coalmine.status.render import format_value, parse_time

ERROR_RATE = "error-rate"
LATENCY = "latency"
# A selector body: label matchers, with quoted values that may hold any character.
_SELECTOR = r"\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}"
_LATENCY_SELECTOR = re.compile(r"istio_request_duration_milliseconds_bucket" + _SELECTOR)
_REQUESTS_SELECTOR = re.compile(r"istio_requests_total" + _SELECTOR)

Point = tuple[datetime, float]


def selector_from_status(status: Mapping[str, Any]) -> str | None:
    """The canary's label selector as the operator queried it (from status.analysis or status.rollback)."""
    queries = [str(m.get("query") or "") for m in (status.get("analysis") or {}).get("metrics") or []]
    queries.append(str((status.get("rollback") or {}).get("query") or ""))
    for query in queries:
        if match := _LATENCY_SELECTOR.search(query):
            return match.group(1)
    for query in queries:
        for match in _REQUESTS_SELECTOR.finditer(query):
            if "response_code" not in match.group(1):
                return match.group(1)
    return None


def range_queries(selector: str, quantile: float, window: str) -> dict[str, str]:
    """PromQL for the canary's 5xx ratio (%) and latency quantile (ms), over a sliding `window`.

    No 5xx at all is 0 %, not a gap (`or vector(0)`); no requests at all stays a gap.
    """
    total = f"sum(rate(istio_requests_total{{{selector}}}[{window}]))"
    errors = f'(sum(rate(istio_requests_total{{{selector},response_code=~"5.."}}[{window}])) or vector(0))'
    return {
        ERROR_RATE: f"{errors} / {total} * 100",
        LATENCY: (
            f"histogram_quantile({quantile:g}, "
            f"sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{window}])))"
        ),
    }


def parse_matrix(result: Sequence[Mapping[str, Any]]) -> list[Point]:
    """A query_range result (`data.result`) as (time, value) points; NaN and ±Inf are dropped."""
    points: list[Point] = []
    for series in result:
        for ts, text in series.get("values") or []:
            value = float(text)
            if math.isfinite(value):
                points.append((datetime.fromtimestamp(float(ts), UTC), value))
    points.sort(key=lambda p: p[0])
    return points


@dataclass(frozen=True)
class Step:
    at: datetime
    weight: int
    ab: bool = False  # an A/B step: the canary has the matched users, the owned route's weight stays

    @property
    def label(self) -> str:
        return "A/B" if self.ab else f"{self.weight}%"


@dataclass(frozen=True)
class Rollback:
    at: datetime
    text: str


@dataclass(frozen=True)
class ScenarioTimeline:
    """One scenario: the canary's weight over time (from status), and what Prometheus measured."""

    label: str
    canary: str
    phase: str
    start: datetime
    end: datetime
    weights: tuple[Point, ...]  # step function: each point holds until the next
    steps: tuple[Step, ...]
    rollback: Rollback | None
    finished_at: datetime | None
    error_rate: tuple[Point, ...] = ()
    latency: tuple[Point, ...] = ()
    error_rate_max: float | None = None  # 100 - successRate.min
    latency_max_ms: float | None = None
    latency_name: str = "p99"
    notes: tuple[tuple[datetime, str], ...] = field(default=())


def rollout_span(status: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    return parse_time(status.get("startedAt")), parse_time(status.get("finishedAt"))


def weight_series(
    status: Mapping[str, Any], end: datetime, spec_steps: Sequence[Mapping[str, Any]] = ()
) -> tuple[list[Point], list[Step]]:
    """Canary weight over time from status.history, ending at `end`: 0 before the first step,
    each step's weight from its startedAt, 0 from the rollback on (RolledBack). A history entry of a
    step with a match (`spec_steps`) is an A/B step: weight 0 on the owned route, labelled A/B."""

    def ab(index: Any) -> bool:
        return isinstance(index, int) and 0 <= index < len(spec_steps) and bool(spec_steps[index].get("match"))

    steps = [
        Step(at, int(h.get("weight", 0)), ab(h.get("stepIndex")))
        for h in status.get("history") or []
        if (at := parse_time(h.get("startedAt"))) is not None
    ]
    points: list[Point] = []
    if steps:
        points.append((steps[0].at, 0.0))
    points += [(s.at, float(s.weight)) for s in steps]
    rollback_at = parse_time((status.get("rollback") or {}).get("at"))
    if status.get("phase") == "RolledBack" and rollback_at is not None:
        points.append((rollback_at, 0.0))
    if points:
        points.append((max(end, points[-1][0]), points[-1][1]))
    return points, steps


def rollback_text(rollback: Mapping[str, Any]) -> str:
    metric = str(rollback.get("metric") or "")
    value = rollback.get("value")
    number = float(value) if isinstance(value, (int, float)) else None
    what = f"{metric} {format_value(metric, number)}" if metric else str(rollback.get("reason") or "")
    threshold = f", needs {rollback['threshold']}" if rollback.get("threshold") else ""
    return f"rollback ({rollback.get('reason', '')}): {what}{threshold}"


def assemble(
    label: str,
    rollout: Mapping[str, Any],
    end: datetime,
    measured: Mapping[str, Sequence[Mapping[str, Any]]],
    notes: Sequence[tuple[datetime, str]] = (),
) -> ScenarioTimeline:
    """One scenario's timeline from the Rollout object at its end and Prometheus's range answers."""
    spec: Mapping[str, Any] = rollout.get("spec") or {}
    status: Mapping[str, Any] = rollout.get("status") or {}
    analysis: Mapping[str, Any] = spec.get("analysis") or {}
    started, finished = rollout_span(status)
    weights, steps = weight_series(status, end, spec.get("steps") or ())
    rb = status.get("rollback")
    rollback = None
    if status.get("phase") == "RolledBack" and rb and (at := parse_time(rb.get("at"))) is not None:
        rollback = Rollback(at, rollback_text(rb))
    success_min = (analysis.get("successRate") or {}).get("min", 99)
    latency = analysis.get("latency") or {}
    quantile = float(latency.get("quantile", 0.99))
    canary = spec.get("canary") or {}
    return ScenarioTimeline(
        label=label,
        canary=f"{canary.get('host', '')}/{canary.get('subset', '?')}".lstrip("/"),
        phase=str(status.get("phase") or "?"),
        start=started or end,
        end=end,
        weights=tuple(weights),
        steps=tuple(steps),
        rollback=rollback,
        finished_at=finished,
        error_rate=tuple(parse_matrix(measured.get(ERROR_RATE, ()))),
        latency=tuple(parse_matrix(measured.get(LATENCY, ()))),
        error_rate_max=100.0 - float(success_min),
        latency_max_ms=float(latency.get("maxMs", 500)),
        latency_name=f"p{quantile * 100:g}",
        notes=tuple(notes),
    )


# --- drawing (the one impure part) ------------------------------------------------------------------

COLOURS = ("tab:green", "tab:purple", "tab:blue", "tab:orange")


def plot(scenarios: Sequence[ScenarioTimeline], path: Path, title: str = "coalmine demo") -> Path:
    """Draw canary weight, canary 5xx % and canary latency over time, steps and rollback marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not scenarios:
        raise ValueError("nothing to plot")
    t0 = min(s.start for s in scenarios)

    def x(t: datetime) -> float:
        return (t - t0).total_seconds()

    fig, (ax_w, ax_e, ax_l) = plt.subplots(3, 1, figsize=(12, 8.5), sharex=True, height_ratios=(1.2, 1, 1))
    fig.suptitle(title, fontsize=13, fontweight="bold")
    for i, s in enumerate(scenarios):
        colour = COLOURS[i % len(COLOURS)]
        for ax in (ax_w, ax_e, ax_l):
            ax.axvspan(x(s.start), x(s.end), color=colour, alpha=0.06, lw=0)
        if s.weights:
            ax_w.step(
                [x(t) for t, _ in s.weights],
                [v for _, v in s.weights],
                where="post",
                color=colour,
                lw=2.2,
                label=f"{s.label}: canary {s.canary} → {s.phase}",
            )
        for step in s.steps:
            for ax in (ax_w, ax_e, ax_l):
                ax.axvline(x(step.at), color=colour, ls=":", lw=0.9, alpha=0.8)
            ax_w.annotate(step.label, (x(step.at), step.weight), textcoords="offset points", xytext=(3, 4), fontsize=8)
        if s.error_rate:
            ax_e.plot([x(t) for t, _ in s.error_rate], [v for _, v in s.error_rate], color=colour, lw=1.6)
        if s.latency:
            ax_l.plot([x(t) for t, _ in s.latency], [v for _, v in s.latency], color=colour, lw=1.6)
        for at, text in s.notes:
            for ax in (ax_w, ax_e, ax_l):
                ax.axvline(x(at), color="tab:gray", ls="-.", lw=1)
            ax_e.annotate(text, (x(at), 0), textcoords="offset points", xytext=(-4, 30), fontsize=8, ha="right")
        if s.rollback is not None:
            for ax in (ax_w, ax_e, ax_l):
                ax.axvline(x(s.rollback.at), color="tab:red", lw=2)
            ax_w.annotate(
                s.rollback.text,
                (x(s.rollback.at), 0),
                textcoords="offset points",
                xytext=(-10, 62),
                ha="right",
                fontsize=8.5,
                color="tab:red",
                fontweight="bold",
                arrowprops={"arrowstyle": "->", "color": "tab:red"},
            )
        elif s.phase == "Succeeded" and s.finished_at is not None:
            ax_w.annotate(
                "Succeeded",
                (x(s.finished_at), 100),
                textcoords="offset points",
                xytext=(4, -14),
                fontsize=8.5,
                color="tab:green",
                fontweight="bold",
            )
        ax_w.text(x(s.start), 108, s.label, fontsize=9, color=colour, fontweight="bold", va="bottom")
    limits = scenarios[0]
    for axis, limit, unit in ((ax_e, limits.error_rate_max, "%"), (ax_l, limits.latency_max_ms, "ms")):
        if limit is None:
            continue
        axis.axhline(limit, color="tab:red", ls="--", lw=1)
        axis.annotate(
            f"rollback above {limit:g} {unit}",
            (0, limit),
            textcoords="offset points",
            xytext=(2, 3),
            fontsize=8,
            color="tab:red",
        )
    ax_w.set_ylabel("canary weight (%)")
    ax_w.set_ylim(-5, 120)
    ax_w.legend(loc="center left", fontsize=8)
    ax_e.set_ylabel("canary 5xx (%)")
    ax_e.set_ylim(bottom=-2)
    ax_l.set_ylabel(f"canary {limits.latency_name} (ms)")
    ax_l.set_ylim(bottom=0)
    ax_l.set_xlabel("seconds since the first rollout started")
    for ax in (ax_w, ax_e, ax_l):
        ax.grid(alpha=0.25)
    fig.text(
        0.01,
        0.005,
        "weights and steps: Rollout status (history, rollback); 5xx and latency: Prometheus query_range "
        "with the selector from the operator's queries",
        fontsize=7.5,
        color="tab:gray",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
