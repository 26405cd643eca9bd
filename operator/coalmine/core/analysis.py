"""Canary analysis as pure functions: the PromQL to ask, and what the answers mean.

Three outcomes, never two: a check passes, fails, or has no data. Empty results, NaN, too few
requests and an unreachable Prometheus are all "no data", which never counts as a pass (the plan
holds the step and rolls back after maxNoData). A statistical judge may also say "inconclusive"
(too few samples to tell), which holds the step without counting toward either.

What one check judges, each a row in the status with its numbers and queries:
- success-rate and latency: absolute guard rails (min, maxMs) and, when set, bounds relative to the
  stable on the same window (maxDropVsStable, maxRatioVsStable). A relative bound whose stable has no
  data says so: it is no data, never a silent pass.
- slo-burn (opt-in): the canary's error budget burn rate over every SLO window; fails only when all
  windows burn faster than the bound (multiwindow).
- traffic (on by default): the canary's observed share of the requests against the weight the routes
  give it; far off `checks` times in a row fails with TrafficMismatch.
- <metric>-vs-stable (opt-in judge): a one-sided Mann-Whitney U of per-interval samples of the step.
- custom metrics, and dry-run ones, which are judged and shown but never change the verdict.
A success-rate failure whose errors are overwhelming evidence (judges.overwhelming_errors) is marked
`fail_fast`: the plan rolls back on that one check. This module does no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from coalmine.core import judges
from coalmine.core.models import Analysis, MetricResult, Verdict, format_duration
from coalmine.core.validation import TEMPLATE, Side, Target

MIN_SCRAPES = 4  # a window shorter than this many scrape intervals sees too few samples for rate()
REQUESTS = "requests"
USER_REQUESTS = "user-requests"  # a mirror step's traffic check: requests the callers' proxies report (no copies)
SUCCESS_RATE = "success-rate"
LATENCY = "latency"
SLO_BURN = "slo-burn"
TRAFFIC = "traffic"
CIRCUIT_BREAKER = "circuit-breaker"
UNKNOWN = "@unknown"  # suffix of the circuit breaker's query for the service's 503s of unknown version
CB_FLAGS = ("UO", "UH", "URX")  # overflow, no healthy upstream, retries exhausted
TRAFFIC_MISMATCH = "TrafficMismatch"
STABLE = "@stable"  # suffix of a query's name asked of the stable
VS_STABLE = "-vs-stable"  # suffix of a judge's row
GRPC_OK = ("0",)  # grpc_response_status values that are not failures by default: OK alone
BatchKey = tuple[str, str, float | None, tuple[str, ...], tuple[str, ...]]
SHARE_CONFIDENCE = 0.99  # the traffic check's binomial margin; three far-off checks in a row make a failure


def latency_name(analysis: Analysis) -> str:
    return f"latency-p{analysis.latency.quantile * 100:g}"


@dataclass(frozen=True)
class Sample:
    """One query's answer: a finite number (or, for a range query, its values), or why there is none."""

    value: float | None = None
    error: str | None = None  # set when Prometheus could not answer
    values: tuple[float, ...] = ()

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

    kind: str  # REQUESTS, SUCCESS_RATE, LATENCY or CIRCUIT_BREAKER
    window: str
    quantile: float | None
    labels: tuple[tuple[str, str], ...]
    grpc_ok: tuple[str, ...] = GRPC_OK  # SUCCESS_RATE: the gRPC codes that are not failures

    @property
    def key(self) -> BatchKey:
        return (self.kind, self.window, self.quantile, tuple(name for name, _ in self.labels), self.grpc_ok)


@dataclass(frozen=True)
class Range:
    """A range query: per-interval values over the last `span`, one every `step`."""

    span: timedelta
    step: timedelta


@dataclass(frozen=True)
class Query:
    name: str
    promql: str  # this Rollout's own query, as shown in its status
    batch: Batch | None = None  # None: asked on its own
    range: Range | None = None  # set: a range query (the judge's samples)


@dataclass(frozen=True)
class StepContext:
    """What a check needs to know of the step it judges."""

    elapsed: timedelta = timedelta(0)  # since the step (its current weight) began
    scrape_interval: timedelta = timedelta(seconds=15)
    weight: int | None = None  # the canary weight the routes have, for the traffic check
    previous_weight: int | None = None  # the weight before the step's, still in a window longer than the step
    mismatches: int = 0  # far-off traffic checks in a row before this one
    mirror: int | None = (
        None  # a mirror step's percent, once the route has the mirror: the canary's requests are copies
    )


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    window: str
    requests: float | None
    metrics: tuple[MetricResult, ...]
    reason: str = ""  # why the check has no data (or is inconclusive), when it has none
    fail_fast: MetricResult | None = None  # a failure that is overwhelming evidence on its own
    traffic_mismatches: int = 0

    @property
    def failed(self) -> tuple[MetricResult, ...]:
        return tuple(m for m in self.metrics if m.verdict is Verdict.FAIL and not m.dry_run)


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


# Who reports a request's L7 metrics at the destination side: the destination pod's sidecar
# (reporter="destination"), or under ambient the waypoint proxy in front of it (reporter="waypoint"). A
# request is reported by one of them, never both, so one selector works on both meshes.
REPORTERS = 'reporter=~"destination|waypoint"'


def selector_labels(target: Target, side: Side) -> tuple[tuple[str, str], ...]:
    """The labels that tell this side's series apart (each Rollout's own values; batched queries group by them)."""
    return (
        ("destination_workload_namespace", target.namespace),
        ("destination_service_name", side.service_name),
        *side.matchers,
    )


def selector(target: Target, side: Side) -> str:
    return ",".join([REPORTERS, *(f'{name}="{_escape(value)}"' for name, value in selector_labels(target, side))])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _requests(sel: str, w: str) -> str:
    return f"sum(increase(istio_requests_total{{{sel}}}[{w}]))"


def success_matchers(grpc_ok: Sequence[str] = GRPC_OK) -> str:
    """What a successful response is: not 5xx, and for gRPC (`request_protocol="grpc"`, answered with HTTP
    200 even when it fails) a grpc_response_status of OK or one of `grpc_ok`. Plain HTTP requests carry
    an empty grpc_response_status, which the empty alternative matches."""
    return f'response_code!~"5..",grpc_response_status=~"|{"|".join(grpc_ok)}"'


def user_selector(target: Target, side: Side) -> str:
    """Requests as the callers' proxies report them: Istio's source reporter never reports a mirrored
    copy, so in a mirror step these are the users' requests alone (the destination reports the copies)."""
    return ",".join(
        ['reporter="source"', *(f'{name}="{_escape(value)}"' for name, value in selector_labels(target, side))]
    )


def _success_rate(sel: str, w: str, grpc_ok: Sequence[str] = GRPC_OK) -> str:
    # The success numerator may be an empty vector when every response failed: `or vector(0)`
    # keeps that a 0 % success rate, not "no data". A zero denominator stays NaN (no data).
    ok = f"(sum(rate(istio_requests_total{{{sel},{success_matchers(grpc_ok)}}}[{w}])) or vector(0))"
    return f"{ok} / sum(rate(istio_requests_total{{{sel}}}[{w}])) * 100"


# What the caller's proxy reports of the requests it answered 503 itself, without a good response.
CB_REPORTER = 'reporter="source"'
CB_RESPONSE = ('response_code="503"', f'response_flags=~"{"|".join(CB_FLAGS)}"')
UNKNOWN_VERSION = "unknown"  # Istio's destination_version when no upstream pod was picked


def _circuit_breaker(target: Target, w: str) -> tuple[Query, ...]:
    """503s the caller's proxy answered for the canary without a good response from it (UO, UH, URX).

    Reported by the source only. UO and UH pick no upstream pod, so Istio labels them with version
    `unknown`, whichever subset they were meant for: they are asked apart (`circuit-breaker@unknown`)
    and `_stable_short` decides whose they are. Empty when the canary has no version label. Both are
    batched like the built-in queries, in one batch: it groups by version (a check asked this on its own
    before: ~3 of 4 queries at 300 Rollouts)."""
    side = target.canary
    if side.version is None:
        return ()
    service = (
        ("destination_service_namespace", target.namespace),
        ("destination_service_name", side.service_name),
    )
    result = []
    versions = [(CIRCUIT_BREAKER, side.version), (CIRCUIT_BREAKER + UNKNOWN, UNKNOWN_VERSION)]
    for name, version in versions[: 1 if side.version == UNKNOWN_VERSION else 2]:  # its one series, once
        labels = (*service, ("destination_version", version))
        sel = ",".join([CB_REPORTER, *(f'{k}="{_escape(v)}"' for k, v in labels), *CB_RESPONSE])
        promql = f"sum(increase(istio_requests_total{{{sel}}}[{w}])) or vector(0)"
        result.append(Query(name, promql, Batch(CIRCUIT_BREAKER, w, None, labels, grpc_ok=())))
    return tuple(result)


def _latency(sel: str, w: str, quantile: float) -> str:
    return f"histogram_quantile({quantile:g}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])))"


def _side_queries(analysis: Analysis, target: Target, side: Side, w: str, suffix: str) -> list[Query]:
    sel, labels, q = selector(target, side), selector_labels(target, side), analysis.latency.quantile
    ok = analysis.success_rate.grpc_ok
    return [
        Query(REQUESTS + suffix, _requests(sel, w), Batch(REQUESTS, w, None, labels)),
        Query(SUCCESS_RATE + suffix, _success_rate(sel, w, ok), Batch(SUCCESS_RATE, w, None, labels, ok)),
        Query(latency_name(analysis) + suffix, _latency(sel, w, q), Batch(LATENCY, w, q, labels)),
    ]


def needs_stable(analysis: Analysis) -> bool:
    return (
        analysis.traffic_check.enabled
        or analysis.success_rate.max_drop_vs_stable is not None
        or analysis.latency.max_ratio_vs_stable is not None
    )


def judge_step(scrape_interval: timedelta) -> timedelta:
    """The judge's sample interval: each sample is a rate over its own non-overlapping interval."""
    return MIN_SCRAPES * scrape_interval


def queries(
    analysis: Analysis, target: Target, window_length: timedelta, step: StepContext = StepContext()
) -> tuple[Query, ...]:
    """The queries of one check, in the order they are shown."""
    w = format_duration(window_length)
    ok = analysis.success_rate.grpc_ok
    result = _side_queries(analysis, target, target.canary, w, "")
    # In a mirror step the canary's users are 0 %: source-reported 503s for it would be the stable's own.
    breaker = _circuit_breaker(target, w) if analysis.circuit_breaker.enabled and step.mirror is None else ()
    if needs_stable(analysis):
        result += _side_queries(analysis, target, target.stable, w, STABLE)
    elif breaker:  # whose the 503s of unknown version are is judged from the stable's share
        result += _side_queries(analysis, target, target.stable, w, STABLE)[:1]
    if analysis.slo is not None:
        sel, labels = selector(target, target.canary), selector_labels(target, target.canary)
        for length in analysis.slo.windows:
            sw = format_duration(length)
            query = _success_rate(sel, sw, ok)
            result.append(Query(f"{SUCCESS_RATE}[{sw}]", query, Batch(SUCCESS_RATE, sw, None, labels, ok)))
    if analysis.judge is not None:
        every = judge_step(step.scrape_interval)
        span = Range(span=max(step.elapsed - every, timedelta(0)), step=every)
        ew, q = format_duration(every), analysis.latency.quantile
        for side, suffix in ((target.canary, ""), (target.stable, STABLE)):
            sel = selector(target, side)
            result.append(Query(f"{SUCCESS_RATE}{VS_STABLE}{suffix}", _success_rate(sel, ew, ok), range=span))
            result.append(Query(f"{latency_name(analysis)}{VS_STABLE}{suffix}", _latency(sel, ew, q), range=span))
    if step.mirror is not None and analysis.traffic_check.enabled:
        for side, suffix in ((target.canary, ""), (target.stable, STABLE)):
            result.append(Query(USER_REQUESTS + suffix, _requests(user_selector(target, side), w)))
    result += breaker
    result += [Query(m.name, render(m.query, target, w)) for m in analysis.metrics]
    return tuple(result)


def batched_promql(key: BatchKey, selectors: Sequence[Batch]) -> str:
    """One query answering `key` for every selector: the union of their values, grouped by every label."""
    kind, w, quantile, names, grpc_ok = key
    matchers = []
    for position, name in enumerate(names):
        values = sorted({b.labels[position][1] for b in selectors})
        if len(values) == 1:
            matchers.append(f'{name}="{_escape(values[0])}"')
        else:
            matchers.append(f'{name}=~"{"|".join(_escape(re.escape(v)) for v in values)}"')
    by = ", ".join(names)
    if kind == CIRCUIT_BREAKER:
        sel = ",".join([CB_REPORTER, *matchers, *CB_RESPONSE])
        return f"sum by ({by}) (increase(istio_requests_total{{{sel}}}[{w}]))"
    sel = ",".join([REPORTERS, *matchers])
    if kind == REQUESTS:
        return f"sum by ({by}) (increase(istio_requests_total{{{sel}}}[{w}]))"
    if kind == SUCCESS_RATE:
        total = f"sum by ({by}) (rate(istio_requests_total{{{sel}}}[{w}]))"
        ok = f"sum by ({by}) (rate(istio_requests_total{{{sel},{success_matchers(grpc_ok)}}}[{w}]))"
        return f"({ok} or {total} * 0) / {total} * 100"
    return (
        f"histogram_quantile({quantile:g}, sum by ({by}, le) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])))"
    )


def pick(series: Sequence[Mapping[str, Any]], batch: Batch) -> Sample:
    """This Rollout's answer out of a batched vector result (Prometheus' `result` list)."""
    return pick_from(index_series(series, batch.key[3]), batch)


SeriesIndex = dict[tuple[Any, ...], Any]


def index_series(series: Sequence[Mapping[str, Any]], names: Sequence[str]) -> SeriesIndex:
    """A batched result's values by their `names` labels (the first series of each wins), so each of
    the batch's Rollouts finds its own in one lookup: scanning the result for each of them was
    quadratic, seconds of the event loop per round at 1,000 Rollouts."""
    index: SeriesIndex = {}
    for item in series:
        metric = item.get("metric", {})
        index.setdefault(tuple(metric.get(name) for name in names), item.get("value", (None, None))[1])
    return index


def pick_from(index: SeriesIndex, batch: Batch) -> Sample:
    """This Rollout's answer out of an `index_series` of its batch's result."""
    own = tuple(value for _, value in batch.labels)
    if batch.kind == CIRCUIT_BREAKER:
        return Sample.of(float(index.get(own, 0.0)))  # no such 503s is 0 (`or vector(0)`)
    value = index.get(own)
    return Sample(None) if value is None else Sample.of(float(value))


# --- judging the answers --------------------------------------------------------------------------


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


@dataclass
class _Answers:
    """The answers to one check's queries, by name, and the facts every judge needs."""

    analysis: Analysis
    asked: Mapping[str, Query]
    answers: Mapping[str, Sample]
    w: str
    weight: int | None = None  # the canary weight the routes have
    enough: bool = False
    scarcity: str = ""
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> Sample:
        return self.answers.get(name, Sample(None, "not asked"))

    def query(self, name: str) -> str:
        return self.asked[name].promql if name in self.asked else ""


def _relative(
    answers: _Answers, result: MetricResult, name: str, bound: float | None, unit: str, drop: bool
) -> MetricResult:
    """Add the stable's value and, with a bound, the verdict relative to it (drop in points, or ratio)."""
    stable = answers.get(name + STABLE)
    stable_requests = answers.get(REQUESTS + STABLE)
    update: dict[str, Any] = {"stable_value": stable.value, "stable_query": answers.query(name + STABLE)}
    if bound is None or result.verdict is not Verdict.PASS:
        return result.model_copy(update=update)
    if answers.weight == 100:
        why = "relative bound not applied: at 100 % the stable has no traffic to compare with"
        return result.model_copy(update={**update, "reason": why})
    kind = f"drop vs stable <= {bound:g}{unit}" if drop else f"ratio vs stable <= {bound:g}"
    update["threshold"] = f"{result.threshold}, {kind}"
    a = answers.analysis
    if stable.value is None or stable_requests.value is None or stable_requests.value < a.min_requests:
        why = (
            f"the stable's query has no answer: {stable.error}"
            if stable.error
            else f"the stable has no data in the last {answers.w} (a relative bound needs both sides)"
        )
        return result.model_copy(update={**update, "verdict": Verdict.NO_DATA, "reason": why})
    assert result.value is not None
    if drop and stable.value - result.value > bound:
        reason = f"{result.value:.4g}{unit} is {stable.value - result.value:.3g} points below the stable's {stable.value:.4g}{unit}"
        return result.model_copy(update={**update, "verdict": Verdict.FAIL, "reason": reason})
    if not drop and stable.value > 0 and result.value / stable.value > bound:
        reason = f"{result.value:.4g}{unit} is {result.value / stable.value:.3g}x the stable's {stable.value:.4g}{unit}"
        return result.model_copy(update={**update, "verdict": Verdict.FAIL, "reason": reason})
    return result.model_copy(update=update)


def _builtin(answers: _Answers) -> tuple[list[MetricResult], MetricResult | None]:
    """success-rate and latency, absolute then relative; and whether the success rate fails fast."""
    a = answers.analysis
    rows: list[MetricResult] = []
    fail_fast = None
    spec = (
        (SUCCESS_RATE, a.success_rate.min, None, "%", a.success_rate.max_drop_vs_stable, True),
        (latency_name(a), None, a.latency.max_ms, " ms", a.latency.max_ratio_vs_stable, False),
    )
    for name, low, high, unit, relative, drop in spec:
        row = _judge(name, answers.query(name), answers.get(name), low, high, unit)
        if not answers.enough:
            row = row.model_copy(update={"verdict": Verdict.NO_DATA, "reason": answers.scarcity})
        elif needs_stable(a):
            row = _relative(answers, row, name, relative, unit if drop else "", drop)
        if name == SUCCESS_RATE and row.verdict is Verdict.FAIL and row.value is not None and a.fail_fast.enabled:
            fail_fast = _fail_fast(answers, row)
        rows.append(row)
    return rows, fail_fast


def _with_circuit_breaker(
    analysis: Analysis,
    asked: Mapping[str, Query],
    answers: Mapping[str, Sample],
    step: StepContext,
    window_length: timedelta,
) -> tuple[Mapping[str, Sample], MetricResult | None, float]:
    """Count the mesh's 503s (UO, UH, URX) as canary requests that failed: the canary's requests and
    success rate become those of every request meant for it. Also the row that shows them apart (its
    query: the 503s it counted), and how many were counted."""
    own, unknown = answers.get(CIRCUIT_BREAKER), answers.get(CIRCUIT_BREAKER + UNKNOWN)
    if own is None or own.error is not None or own.value is None:
        return answers, None, 0.0
    requests, success = answers.get(REQUESTS, Sample(None)), answers.get(SUCCESS_RATE, Sample(None))
    served = requests.value or 0.0
    adjusted = dict(answers)
    counted, why_not = own.value, ""
    query = asked[CIRCUIT_BREAKER].promql if CIRCUIT_BREAKER in asked else ""
    if unknown is not None and unknown.error is None and unknown.value:
        why_not = _stable_short(analysis, answers, step, window_length, served + own.value, unknown.value)
        if why_not:  # the stable's refusals: its requests, for the traffic check's shares
            stable = answers.get(REQUESTS + STABLE, Sample(None)).value or 0.0
            adjusted[REQUESTS + STABLE] = Sample(stable + unknown.value)
        else:
            counted += unknown.value
    if not why_not and CIRCUIT_BREAKER + UNKNOWN in asked:
        query = f"({query}) + ({asked[CIRCUIT_BREAKER + UNKNOWN].promql})"
    total = served + counted
    share = 100 * counted / total if total > 0 else None
    limit = 100 - analysis.success_rate.min
    row = MetricResult(
        name=CIRCUIT_BREAKER,
        value=share,
        threshold=f"<= {limit:g}% (counted as failures in {SUCCESS_RATE})",
        verdict=Verdict.PASS,
        reason=why_not,
        query=query,
    )
    if share is not None and share > limit:
        reason = (
            f"{share:.4g}% of the canary's requests ({counted:.0f}) were answered 503 by the mesh "
            f"({'/'.join(CB_FLAGS)}: circuit breaker overflow, no healthy upstream, retries exhausted)"
        )
        row = row.model_copy(update={"verdict": Verdict.FAIL, "reason": "; ".join(filter(None, [reason, why_not]))})
    if counted <= 0 or requests.error is not None or success.error is not None:
        return adjusted, row, 0.0
    adjusted[REQUESTS] = Sample(total)
    good = (success.value or 0.0) / 100 * served if success.value is not None else 0.0
    adjusted[SUCCESS_RATE] = Sample(100 * good / total)
    return adjusted, row, counted


def _stable_short(
    analysis: Analysis,
    answers: Mapping[str, Sample],
    step: StepContext,
    window_length: timedelta,
    canary: float,
    unknown: float,
) -> str:
    """Why the service's 503s of unknown version are not the canary's ("" when they are counted as its).

    UO and UH pick no pod, so Istio cannot say which subset a refused request was meant for. They are the
    canary's unless the stable is short of its share of the routes' requests, refused ones included: then
    they are (at least partly) the stable's refusals, and a stable without ready pods, or tripping its own
    breaker, must not roll back a healthy canary. Without the stable's count or the routes' weight they
    count as the canary's (the cautious side). Early in a step the window still holds the step before's
    requests: the stable's share is then that of both weights, by the time each had in the window."""
    stable = answers.get(REQUESTS + STABLE, Sample(None, "not asked"))
    if stable.error is not None or step.weight is None:
        return ""
    total = canary + (stable.value or 0.0) + unknown
    before = 0.0
    if step.previous_weight is not None and step.elapsed < window_length:
        before = (window_length - step.elapsed) / window_length
    canary_share = (before * (step.previous_weight or 0) + (1 - before) * step.weight) / 100
    expected = 1 - canary_share
    margin = judges.share_margin(expected, total, analysis.traffic_check.tolerance / 100, analysis.fail_fast.confidence)
    observed = (stable.value or 0.0) / total
    if observed >= expected - margin:
        return ""
    return (
        f"{unknown:.0f} 503s of unknown version not counted as the canary's: the stable's pods answered "
        f"{100 * observed:.3g}% of {total:.0f} requests, the routes give it {100 * expected:.3g}%"
        f"{' (in the window, with the step before)' if before else ''}, so the mesh refused "
        "the stable's requests (no ready pods, outlier ejection, its own connection pool)"
    )


def _naming_mesh_503s(row: MetricResult, count: float) -> MetricResult:
    """A failed success rate that counted the mesh's 503s says how many: its query shows only the requests a
    canary pod answered, and may show none of the errors."""
    if row.name != SUCCESS_RATE or row.verdict is not Verdict.FAIL:
        return row
    note = (
        f"{count:.0f} of them answered 503 by the callers' proxies ({'/'.join(CB_FLAGS)}), not by a canary pod: "
        f"see {CIRCUIT_BREAKER}"
    )
    return row.model_copy(update={"reason": f"{row.reason} ({note})"})


def _fail_fast(answers: _Answers, row: MetricResult) -> MetricResult | None:
    a, requests = answers.analysis, answers.get(REQUESTS).value
    if requests is None or row.value is None or row.value >= a.success_rate.min:
        return None  # only the absolute bound is tested: it is what "a healthy canary" means here
    errors = requests * (1 - row.value / 100)
    p = judges.overwhelming_errors(requests, errors, 1 - a.success_rate.min / 100, a.fail_fast.confidence)
    if p is None or p >= 1 - a.fail_fast.confidence:
        return None
    reason = (
        f"{row.reason}: {errors:.0f} errors in {requests:.0f} requests; a canary at {a.success_rate.min:g}% "
        f"would show that many with p = {p:.2g} < {1 - a.fail_fast.confidence:.2g} (one-sided binomial)"
    )
    return row.model_copy(update={"reason": reason, "score": p})


def _slo(answers: _Answers) -> MetricResult | None:
    slo = answers.analysis.slo
    if slo is None:
        return None
    names = [f"{SUCCESS_RATE}[{format_duration(length)}]" for length in slo.windows]
    threshold = f"burn <= {slo.burn_rate:g} on any of {', '.join(format_duration(w) for w in slo.windows)}"
    query = answers.query(names[0])
    samples = [answers.get(n) for n in names]
    missing = next((s for s in samples if s.value is None), None)
    if not answers.enough or missing is not None:
        why = answers.scarcity if not answers.enough else (missing.error if missing else None) or "empty result or NaN"
        return MetricResult(name=SLO_BURN, threshold=threshold, verdict=Verdict.NO_DATA, reason=why, query=query)
    burns = [judges.burn_rate(s.value or 0.0, slo.objective) for s in samples]
    slowest = min(burns)
    row = MetricResult(
        name=SLO_BURN, value=slowest, threshold=threshold, verdict=Verdict.PASS, query=query, score=slowest
    )
    if slowest > slo.burn_rate:
        each = ", ".join(f"{b:.3g} over {format_duration(w)}" for b, w in zip(burns, slo.windows, strict=True))
        reason = f"the canary burns the {slo.objective:g}% SLO's budget at {each}, all above {slo.burn_rate:g}"
        return row.model_copy(update={"verdict": Verdict.FAIL, "reason": reason})
    return row


def _traffic(answers: _Answers, target: Target, step: StepContext) -> tuple[MetricResult | None, int]:
    """The canary's observed share of the owned routes' requests against the weight on record."""
    check = answers.analysis.traffic_check
    if not check.enabled or step.weight is None:
        return None, 0
    name = TRAFFIC
    if target.shared_by:
        why = (
            f"skipped: route {', '.join(target.shared_by)} also sends to the stable or canary, so shares do not add up"
        )
        return MetricResult(name=name, threshold="", verdict=Verdict.SKIPPED, reason=why), 0
    window_length = MIN_SCRAPES * step.scrape_interval
    if step.elapsed < window_length:
        return None, step.mismatches  # the window still holds the previous weight's requests
    counted = USER_REQUESTS if step.mirror is not None else REQUESTS  # a mirror's copies are not users'
    canary, stable = answers.get(counted).value, answers.get(counted + STABLE).value
    total = (canary or 0.0) + (stable or 0.0)
    if total < answers.analysis.min_requests:
        return None, step.mismatches
    observed = 100 * (canary or 0.0) / total
    margin = 100 * judges.share_margin(
        step.weight / 100, total, check.tolerance / 100, answers.analysis.fail_fast.confidence
    )
    threshold = f"{step.weight}% ± {margin:.3g}"
    far = abs(observed - step.weight) > margin
    mismatches = step.mismatches + 1 if far else 0
    row = MetricResult(
        name=name,
        value=observed,
        stable_value=100 * (stable or 0.0) / total,
        threshold=threshold,
        verdict=Verdict.PASS,
        query=answers.query(counted),
        stable_query=answers.query(counted + STABLE),
    )
    if step.mirror is not None:
        row = row.model_copy(update={"threshold": f"{threshold} of users (mirrored copies not counted)"})
    if not far:
        return row, 0
    reason = (
        f"{TRAFFIC_MISMATCH}: the canary got {observed:.3g}% of {total:.0f} requests, the routes give it "
        f"{step.weight}% ({mismatches} of {check.checks} checks in a row); causes: pods without sidecars, a host "
        "or port the routes do not match, another VirtualService for the same host"
    )
    if step.mirror is not None:
        reason = (
            f"{TRAFFIC_MISMATCH}: in a mirror step the canary got {observed:.3g}% of {total:.0f} users' requests "
            f"(as their proxies report them), the routes give it {step.weight}% ({mismatches} of {check.checks} "
            "checks in a row); causes: another route or VirtualService sending users to the canary"
        )
    verdict = Verdict.FAIL if mismatches >= check.checks else Verdict.PASS
    return row.model_copy(update={"verdict": verdict, "reason": reason}), mismatches


def _mann_whitney(answers: _Answers) -> list[MetricResult]:
    judge = answers.analysis.judge
    if judge is None:
        return []
    rows = []
    if answers.weight == 100:
        why = "skipped: at 100 % the stable has no traffic to compare with"
        return [
            MetricResult(name=m + VS_STABLE, verdict=Verdict.SKIPPED, reason=why)
            for m in (SUCCESS_RATE, latency_name(answers.analysis))
        ]
    sides: tuple[tuple[str, judges.Worse], ...] = ((SUCCESS_RATE, "less"), (latency_name(answers.analysis), "greater"))
    for metric, worse in sides:
        name = metric + VS_STABLE
        canary, stable = answers.get(name), answers.get(name + STABLE)
        threshold = f"p >= {1 - judge.confidence:.2g} (Mann-Whitney U, canary {worse} than stable)"
        base = MetricResult(
            name=name,
            threshold=threshold,
            verdict=Verdict.INCONCLUSIVE,
            query=answers.query(name),
            stable_query=answers.query(name + STABLE),
        )
        if canary.error or stable.error:
            rows.append(base.model_copy(update={"verdict": Verdict.NO_DATA, "reason": canary.error or stable.error}))
            continue
        found = judges.mann_whitney(canary.values, stable.values, worse=worse, min_samples=judge.min_samples)
        if found is None:
            have = f"{len([v for v in canary.values if math.isfinite(v)])} and {len([v for v in stable.values if math.isfinite(v)])}"
            why = f"inconclusive: {have} samples of canary and stable, the judge needs {judge.min_samples} each"
            rows.append(base.model_copy(update={"reason": why}))
            continue
        row = base.model_copy(
            update={
                "value": found.canary_median,
                "stable_value": found.stable_median,
                "score": found.p_value,
                "verdict": Verdict.PASS,
            }
        )
        if found.p_value < 1 - judge.confidence:
            reason = (
                f"the canary's samples are {worse} than the stable's: medians {found.canary_median:.4g} vs "
                f"{found.stable_median:.4g}, p = {found.p_value:.2g} over {found.samples[0]} and {found.samples[1]} samples"
            )
            row = row.model_copy(update={"verdict": Verdict.FAIL, "reason": reason})
        rows.append(row)
    return rows


def _custom(answers: _Answers) -> list[MetricResult]:
    rows = []
    for metric in answers.analysis.metrics:
        row = _judge(metric.name, answers.query(metric.name), answers.get(metric.name), metric.min, metric.max)
        rows.append(row.model_copy(update={"dry_run": True}) if metric.dry_run else row)
    return rows


def _verdict(rows: Sequence[MetricResult], enough: bool) -> Verdict:
    counted = {r.verdict for r in rows if not r.dry_run}
    for verdict in (Verdict.FAIL, Verdict.NO_DATA):
        if verdict in counted:
            return verdict
    if not enough:
        return Verdict.NO_DATA
    return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in counted else Verdict.PASS


def evaluate(
    analysis: Analysis,
    asked: Sequence[Query],
    answers: Mapping[str, Sample],
    window_length: timedelta,
    target: Target | None = None,
    step: StepContext = StepContext(),
) -> CheckResult:
    """Judge one check from the answers to `asked` (keyed by query name)."""
    w = format_duration(window_length)
    by_name = {q.name: q for q in asked}
    answers, breaker, mesh_503s = _with_circuit_breaker(analysis, by_name, answers, step, window_length)
    facts = _Answers(analysis, by_name, answers, w, step.weight)
    requests = facts.get(REQUESTS)
    facts.enough = requests.error is None and requests.value is not None and requests.value >= analysis.min_requests
    if requests.error is not None:
        facts.scarcity = requests.error
    elif requests.value is None:
        facts.scarcity = f"no canary requests in the last {w}"
    else:
        facts.scarcity = (
            f"{requests.value:.0f} canary requests in the last {w}, fewer than minRequests {analysis.min_requests}"
        )

    rows, fail_fast = _builtin(facts)
    if breaker is not None and mesh_503s > 0:
        rows = [_naming_mesh_503s(r, mesh_503s) for r in rows]
        fail_fast = _naming_mesh_503s(fail_fast, mesh_503s) if fail_fast is not None else None
    if breaker is not None:
        rows.append(breaker)
    elif step.mirror is not None and analysis.circuit_breaker.enabled:
        why = (
            "skipped in a mirror step: the canary has no users, and the callers' proxies do not report the "
            "mirrored copies (a canary without ready pods fails canary-ready instead)"
        )
        rows.append(MetricResult(name=CIRCUIT_BREAKER, verdict=Verdict.SKIPPED, reason=why))
    mismatches = 0
    if target is not None:
        traffic, mismatches = _traffic(facts, target, step)
        rows += [traffic] if traffic is not None else []
    slo = _slo(facts)
    rows += ([slo] if slo is not None else []) + _mann_whitney(facts) + _custom(facts)

    verdict = _verdict(rows, facts.enough)
    reason = ""
    if verdict is Verdict.NO_DATA:
        reason = (
            facts.scarcity
            if not facts.enough
            else next(r.reason for r in rows if r.verdict is Verdict.NO_DATA and not r.dry_run)
        )
    elif verdict is Verdict.INCONCLUSIVE:
        reason = next(r.reason for r in rows if r.verdict is Verdict.INCONCLUSIVE)
    return CheckResult(
        verdict=verdict,
        window=w,
        requests=requests.value,
        metrics=tuple(rows),
        reason=reason,
        fail_fast=fail_fast if verdict is Verdict.FAIL else None,
        traffic_mismatches=mismatches,
    )
