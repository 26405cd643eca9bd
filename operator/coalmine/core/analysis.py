"""Canary analysis as pure functions: the PromQL to ask, and what the answers mean.

Three outcomes, never two: a check passes, fails, or has no data. Empty results, NaN, too few
requests and an unreachable Prometheus are all "no data", which never counts as a pass
(the plan holds the step and rolls back after maxNoData). This module does no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from coalmine.core.models import Analysis, MetricResult, Verdict, format_duration
from coalmine.core.validation import TEMPLATE, Side, Target

MIN_SCRAPES = 4  # a window shorter than this many scrape intervals sees too few samples for rate()
REQUESTS = "requests"
SUCCESS_RATE = "success-rate"
LATENCY = "latency"


def latency_name(analysis: Analysis) -> str:
    return f"latency-p{analysis.latency.quantile * 100:g}"


@dataclass(frozen=True)
class Sample:
    """One query's answer: a finite number, or why there is none."""

    value: float | None = None
    error: str | None = None  # set when Prometheus could not answer

    @staticmethod
    def of(value: float | None) -> Sample:
        if value is None or not math.isfinite(value):
            return Sample(None)
        return Sample(value)


@dataclass(frozen=True)
class Batch:
    """How a built-in query can be answered together with the same query of other Rollouts.

    The per-Rollout query selects series by exact label values; the batched one selects the union
    of those values and keeps every selector label in its `by` clause, so each Rollout's answer is
    exactly the series with its own label values.
    """

    kind: str  # REQUESTS, SUCCESS_RATE or LATENCY
    window: str
    quantile: float | None
    labels: tuple[tuple[str, str], ...]

    @property
    def key(self) -> tuple[str, str, float | None, tuple[str, ...]]:
        return (self.kind, self.window, self.quantile, tuple(name for name, _ in self.labels))


@dataclass(frozen=True)
class Query:
    name: str
    promql: str  # this Rollout's own query, as shown in its status
    batch: Batch | None = None  # None: a custom query, asked on its own


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    window: str
    requests: float | None
    metrics: tuple[MetricResult, ...]
    reason: str = ""  # why the check has no data, when it has none

    @property
    def failed(self) -> tuple[MetricResult, ...]:
        return tuple(m for m in self.metrics if m.verdict is Verdict.FAIL)


def window(step_elapsed: timedelta, *, interval: timedelta, scrape_interval: timedelta) -> timedelta:
    """The time the step has run, capped at interval, never shorter than MIN_SCRAPES scrape intervals."""
    floor = MIN_SCRAPES * scrape_interval
    # Rounded up to whole scrape intervals (the data's own resolution), so Rollouts checked on the
    # same grid share windows and their queries batch together.
    scrapes = math.ceil(round(step_elapsed / scrape_interval, 6))
    return max(floor, min(scrapes * scrape_interval, interval))


def render(template: str, target: Target, window_text: str) -> str:
    values = {
        "namespace": target.namespace,
        "window": window_text,
        "canary.host": target.canary.host,
        "canary.version": target.canary.version or "",
        "stable.host": target.stable.host,
        "stable.version": target.stable.version or "",
    }
    return TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def selector_labels(target: Target, side: Side) -> tuple[tuple[str, str], ...]:
    return (
        ("reporter", "destination"),
        ("destination_workload_namespace", target.namespace),
        ("destination_service_name", side.service_name),
        *side.matchers,
    )


def selector(target: Target, side: Side) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in selector_labels(target, side))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def queries(analysis: Analysis, target: Target, window_length: timedelta) -> tuple[Query, ...]:
    """The queries of one check, in the order they are shown."""
    w = format_duration(window_length)
    sel = selector(target, target.canary)
    total = f"sum(rate(istio_requests_total{{{sel}}}[{w}]))"
    # The success numerator may be an empty vector when every response failed: `or vector(0)`
    # keeps that a 0 % success rate, not "no data". A zero denominator stays NaN (no data).
    ok = f'(sum(rate(istio_requests_total{{{sel},response_code!~"5.."}}[{w}])) or vector(0))'
    labels = selector_labels(target, target.canary)
    q = analysis.latency.quantile
    result = [
        Query(
            REQUESTS,
            f"sum(increase(istio_requests_total{{{sel}}}[{w}]))",
            Batch(REQUESTS, w, None, labels),
        ),
        Query(SUCCESS_RATE, f"{ok} / {total} * 100", Batch(SUCCESS_RATE, w, None, labels)),
        Query(
            latency_name(analysis),
            f"histogram_quantile({q:g}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])))",
            Batch(LATENCY, w, q, labels),
        ),
    ]
    result += [Query(m.name, render(m.query, target, w)) for m in analysis.metrics]
    return tuple(result)


def batched_promql(key: tuple[str, str, float | None, tuple[str, ...]], selectors: Sequence[Batch]) -> str:
    """One query answering `key` for every selector: the union of their values, grouped by every label."""
    kind, w, quantile, names = key
    matchers = []
    for position, name in enumerate(names):
        values = sorted({b.labels[position][1] for b in selectors})
        if len(values) == 1:
            matchers.append(f'{name}="{_escape(values[0])}"')
        else:
            matchers.append(f'{name}=~"{"|".join(_escape(re.escape(v)) for v in values)}"')
    sel = ",".join(matchers)
    by = ", ".join(names)
    if kind == REQUESTS:
        return f"sum by ({by}) (increase(istio_requests_total{{{sel}}}[{w}]))"
    if kind == SUCCESS_RATE:
        total = f"sum by ({by}) (rate(istio_requests_total{{{sel}}}[{w}]))"
        ok = f'sum by ({by}) (rate(istio_requests_total{{{sel},response_code!~"5.."}}[{w}]))'
        return f"({ok} or {total} * 0) / {total} * 100"
    return (
        f"histogram_quantile({quantile:g}, sum by ({by}, le) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])))"
    )


def pick(series: Sequence[Mapping[str, Any]], batch: Batch) -> Sample:
    """This Rollout's answer out of a batched vector result (Prometheus' `result` list)."""
    wanted = dict(batch.labels)
    for item in series:
        metric = item.get("metric", {})
        if all(metric.get(name) == value for name, value in wanted.items()):
            return Sample.of(float(item["value"][1]))
    return Sample(None)


def _bounds(low: float | None, high: float | None) -> str:
    parts = ([f">= {low:g}"] if low is not None else []) + ([f"<= {high:g}"] if high is not None else [])
    return ", ".join(parts)


def _judge(
    name: str, query: str, sample: Sample, low: float | None, high: float | None, unit: str = ""
) -> MetricResult:
    threshold = _bounds(low, high)
    if sample.error is not None:
        return MetricResult(name=name, threshold=threshold, verdict=Verdict.NO_DATA, reason=sample.error, query=query)
    if sample.value is None:
        return MetricResult(
            name=name, threshold=threshold, verdict=Verdict.NO_DATA, reason="empty result or NaN", query=query
        )
    value = sample.value
    if low is not None and value < low:
        reason = f"{value:.4g}{unit} < {low:g}{unit}"
        verdict = Verdict.FAIL
    elif high is not None and value > high:
        reason = f"{value:.4g}{unit} > {high:g}{unit}"
        verdict = Verdict.FAIL
    else:
        reason, verdict = "", Verdict.PASS
    return MetricResult(name=name, value=value, threshold=threshold, verdict=verdict, reason=reason, query=query)


def evaluate(
    analysis: Analysis, asked: Sequence[Query], answers: Mapping[str, Sample], window_length: timedelta
) -> CheckResult:
    """Judge one check from the answers to `asked` (keyed by query name)."""
    w = format_duration(window_length)
    by_name = {q.name: q for q in asked}
    requests = answers.get(REQUESTS, Sample(None, "not asked"))
    enough = requests.error is None and requests.value is not None and requests.value >= analysis.min_requests
    if requests.error is not None:
        scarcity = requests.error
    elif requests.value is None:
        scarcity = f"no canary requests in the last {w}"
    else:
        scarcity = (
            f"{requests.value:.0f} canary requests in the last {w}, fewer than minRequests {analysis.min_requests}"
        )

    results: list[MetricResult] = []
    builtin = {
        SUCCESS_RATE: (analysis.success_rate.min, None, "%"),
        latency_name(analysis): (None, analysis.latency.max_ms, " ms"),
    }
    for name, (low, high, unit) in builtin.items():
        query = by_name[name].promql
        sample = answers.get(name, Sample(None, "not asked"))
        result = _judge(name, query, sample, low, high, unit)
        if not enough:
            result = result.model_copy(update={"verdict": Verdict.NO_DATA, "reason": scarcity})
        results.append(result)
    for metric in analysis.metrics:
        query = by_name[metric.name].promql
        results.append(
            _judge(
                metric.name,
                query,
                answers.get(metric.name, Sample(None, "not asked")),
                metric.min,
                metric.max,
            )
        )

    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif Verdict.NO_DATA in verdicts or not enough:
        verdict = Verdict.NO_DATA
    else:
        verdict = Verdict.PASS
    reason = (
        ""
        if verdict is not Verdict.NO_DATA
        else (scarcity if not enough else next(r.reason for r in results if r.verdict is Verdict.NO_DATA))
    )
    return CheckResult(verdict=verdict, window=w, requests=requests.value, metrics=tuple(results), reason=reason)
