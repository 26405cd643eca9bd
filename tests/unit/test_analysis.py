"""analysis: the PromQL asked and the three-valued verdict on the answers."""

from __future__ import annotations

import math
from datetime import timedelta

import pydantic
import pytest
from builders import destination_rule, parsed_spec, resolve, virtual_service

from coalmine.core import analysis
from coalmine.core.analysis import Sample
from coalmine.core.models import Analysis, Verdict
from coalmine.core.validation import Target

W = timedelta(seconds=30)


def _setup(**analysis_overrides: object) -> tuple[Analysis, Target]:
    spec = parsed_spec(analysis={"interval": "30s", "checkEvery": "10s", **analysis_overrides})
    target = resolve(spec, "shop", virtual_service(), [destination_rule()])
    assert isinstance(target, Target)
    return spec.analysis, target


def test_default_queries_select_the_canary_by_istio_labels() -> None:
    a, target = _setup()
    qs = {q.name: q.promql for q in analysis.queries(a, target, W)}
    sel = 'reporter=~"destination|waypoint",destination_workload_namespace="shop",destination_service_name="order",destination_version="v2"'
    assert qs["requests"] == f"sum(increase(istio_requests_total{{{sel}}}[30s]))"
    assert qs["success-rate"] == (
        f'(sum(rate(istio_requests_total{{{sel},response_code!~"5..",grpc_response_status=~"|0"}}[30s])) or vector(0))'
        f" / sum(rate(istio_requests_total{{{sel}}}[30s])) * 100"
    )
    assert qs["latency-p99"] == (
        f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[30s])))"
    )


def test_custom_metric_templates_are_rendered() -> None:
    a, target = _setup(
        metrics=[
            {
                "name": "queue-depth",
                "query": 'max(q{ns="{{ namespace }}",v="{{ canary.version }}"}[{{window}}])',
                "max": 100,
            }
        ]
    )
    qs = {q.name: q.promql for q in analysis.queries(a, target, W)}
    assert qs["queue-depth"] == 'max(q{ns="shop",v="v2"}[30s])'


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(0, 4, id="fresh-step-uses-four-scrapes"),
        pytest.param(2.2, 4, id="still-below-floor"),
        pytest.param(12.1, 13, id="elapsed-rounded-up"),
        pytest.param(45, 30, id="capped-at-interval"),
    ],
)
def test_window(elapsed: float, expected: float) -> None:
    got = analysis.window(timedelta(seconds=elapsed), interval=W, scrape_interval=timedelta(seconds=1))
    assert got == timedelta(seconds=expected)


def _answers(requests: Sample, success: Sample, latency: Sample, **more: Sample) -> dict[str, Sample]:
    return {"requests": requests, "success-rate": success, "latency-p99": latency, **more}


OK = Sample(100.0)


@pytest.mark.parametrize(
    ("answers", "verdict", "reason_part"),
    [
        pytest.param(_answers(OK, Sample(99.5), Sample(120.0)), Verdict.PASS, "", id="healthy"),
        pytest.param(_answers(OK, Sample(97.0), Sample(120.0)), Verdict.FAIL, "", id="errors"),
        pytest.param(_answers(OK, Sample(100.0), Sample(900.0)), Verdict.FAIL, "", id="slow"),
        pytest.param(
            _answers(Sample(5.0), Sample(100.0), Sample(10.0)),
            Verdict.NO_DATA,
            "5 canary requests in the last 30s, fewer than minRequests 20",
            id="too-few-requests",
        ),
        pytest.param(
            _answers(Sample(None), Sample(None), Sample(None)),
            Verdict.NO_DATA,
            "no canary requests in the last 30s",
            id="empty",
        ),
        pytest.param(
            _answers(Sample.of(math.nan), Sample.of(math.nan), Sample.of(math.nan)),
            Verdict.NO_DATA,
            "no canary requests",
            id="nan",
        ),
        pytest.param(
            _answers(OK, Sample.of(math.nan), Sample(10.0)),
            Verdict.NO_DATA,
            "empty result or NaN",
            id="nan-success-rate",
        ),
        pytest.param(
            _answers(
                Sample(None, "Prometheus at http://p:9090 unreachable: connection refused"),
                Sample(None, "x"),
                Sample(None, "x"),
            ),
            Verdict.NO_DATA,
            "unreachable",
            id="prometheus-down",
        ),
        pytest.param(_answers(OK, Sample(0.0), Sample(10.0)), Verdict.FAIL, "", id="all-requests-failed"),
    ],
)
def test_evaluate(answers: dict[str, Sample], verdict: Verdict, reason_part: str) -> None:
    a, target = _setup()
    result = analysis.evaluate(a, analysis.queries(a, target, W), answers, W)
    assert result.verdict is verdict
    assert reason_part in result.reason
    assert result.window == "30s"


def test_failed_metric_carries_value_threshold_and_query() -> None:
    a, target = _setup()
    asked = analysis.queries(a, target, W)
    result = analysis.evaluate(a, asked, _answers(OK, Sample(72.5), Sample(120.0)), W)
    (failed,) = result.failed
    assert failed.name == "success-rate"
    assert failed.value == 72.5
    assert failed.threshold == ">= 99"
    assert failed.reason == "72.5% < 99%"
    assert failed.query == asked[1].promql


def test_custom_metric_fails_on_its_own_even_with_few_requests() -> None:
    a, target = _setup(metrics=[{"name": "queue-depth", "query": "max(q)", "max": 100}])
    answers = _answers(Sample(3.0), Sample(100.0), Sample(10.0), **{"queue-depth": Sample(250.0)})
    result = analysis.evaluate(a, analysis.queries(a, target, W), answers, W)
    assert result.verdict is Verdict.FAIL
    assert [m.name for m in result.failed] == ["queue-depth"]


def test_no_data_is_never_a_pass_even_if_other_metrics_pass() -> None:
    a, target = _setup(metrics=[{"name": "queue-depth", "query": "max(q)", "min": 0}])
    answers = _answers(OK, Sample(100.0), Sample(10.0), **{"queue-depth": Sample(None)})
    result = analysis.evaluate(a, analysis.queries(a, target, W), answers, W)
    assert result.verdict is Verdict.NO_DATA


def _batches(*versions: str, namespace: str = "shop", query: str = "success-rate") -> list[analysis.Batch]:
    """The batch of one query of the same Rollout with each canary version."""
    result = []
    for version in versions:
        spec = parsed_spec(canary={"host": "order", "subset": "v2"})
        dr = destination_rule()
        dr["spec"]["subsets"][1]["labels"]["version"] = version
        target = resolve(spec, namespace, virtual_service(), [dr])
        assert isinstance(target, Target)
        q = next(q for q in analysis.queries(spec.analysis, target, W) if q.name == query)
        assert q.batch is not None, f"{query} is batched"
        result.append(q.batch)
    return result


def test_batched_query_selects_the_union_and_groups_by_every_selector_label() -> None:
    batches = _batches("v2", "v3")
    assert batches[0].key == batches[1].key
    promql = analysis.batched_promql(batches[0].key, batches)
    by = "destination_workload_namespace, destination_service_name, destination_version"
    sel = 'reporter=~"destination|waypoint",destination_workload_namespace="shop",destination_service_name="order",destination_version=~"v2|v3"'
    total = f"sum by ({by}) (rate(istio_requests_total{{{sel}}}[30s]))"
    ok = f'sum by ({by}) (rate(istio_requests_total{{{sel},response_code!~"5..",grpc_response_status=~"|0"}}[30s]))'
    assert promql == f"({ok} or {total} * 0) / {total} * 100"


def test_pick_takes_the_series_with_exactly_this_rollouts_labels() -> None:
    v2, v3 = _batches("v2", "v3")
    labels = {"destination_workload_namespace": "shop", "destination_service_name": "order"}
    series = [
        {"metric": {**labels, "destination_version": "v3"}, "value": [0, "91.5"]},
        {"metric": {**labels, "destination_version": "v2"}, "value": [0, "NaN"]},
    ]
    assert analysis.pick(series, v3) == Sample(91.5)
    assert analysis.pick(series, v2) == Sample(None), "NaN is no data"
    assert analysis.pick(series[:1], v2) == Sample(None), "a missing series is no data"


def test_the_circuit_breaker_queries_are_one_batch_by_version_with_the_services_unknown_series() -> None:
    v2, v3 = _batches("v2", "v3", query=analysis.CIRCUIT_BREAKER)
    (unknown,) = _batches("v2", query=analysis.CIRCUIT_BREAKER + analysis.UNKNOWN)
    assert v2.key == v3.key == unknown.key, "a Rollout's two breaker queries and another's: one Prometheus query"
    by = "destination_service_namespace, destination_service_name, destination_version"
    sel = (
        'reporter="source",destination_service_namespace="shop",destination_service_name="order",'
        'destination_version=~"unknown|v2|v3",response_code="503",response_flags=~"UO|UH|URX"'
    )
    batched = analysis.batched_promql(v2.key, [v2, v3, unknown])
    assert batched == f"sum by ({by}) (increase(istio_requests_total{{{sel}}}[30s]))"


def test_a_breaker_answer_is_its_own_versions_series_apart_from_unknown_and_none_is_zero() -> None:
    """The same numbers as the Rollout's own queries `sum(...{destination_version="v2"}) or vector(0)` and
    `sum(...{destination_version="unknown"}) or vector(0)`."""
    v2, v3 = _batches("v2", "v3", query=analysis.CIRCUIT_BREAKER)
    (unknown,) = _batches("v2", query=analysis.CIRCUIT_BREAKER + analysis.UNKNOWN)
    labels = {"destination_service_namespace": "shop", "destination_service_name": "order"}
    series = [
        {"metric": {**labels, "destination_version": "v2"}, "value": [0, "4"]},
        {"metric": {**labels, "destination_version": "unknown"}, "value": [0, "3"]},
        {"metric": {**labels, "destination_service_name": "cart", "destination_version": "v3"}, "value": [0, "50"]},
    ]
    assert analysis.pick(series, v2) == Sample(4.0), "its own version"
    assert analysis.pick(series, unknown) == Sample(3.0), "the service's unknown, apart"
    assert analysis.pick(series, v3) == Sample(0.0), "another service's v3 is not this one's"
    assert analysis.pick([], v2) == Sample(0.0), "no 503 from the breaker at all: 0, not no data"


def test_a_canary_labelled_unknown_asks_that_series_once() -> None:
    """Its own version's 503s are the `unknown` series: asking both would count each 503 twice."""
    spec = parsed_spec(canary={"host": "order", "subset": "v2"})
    dr = destination_rule()
    dr["spec"]["subsets"][1]["labels"]["version"] = "unknown"
    target = resolve(spec, "shop", virtual_service(), [dr])
    assert isinstance(target, Target)
    names = [q.name for q in analysis.queries(spec.analysis, target, W)]
    assert names.count(analysis.CIRCUIT_BREAKER) == 1
    assert analysis.CIRCUIT_BREAKER + analysis.UNKNOWN not in names


def test_rollouts_with_different_windows_are_not_batched_together() -> None:
    a, target = _setup()
    one = {q.name: q for q in analysis.queries(a, target, W)}["requests"]
    two = {q.name: q for q in analysis.queries(a, target, W / 2)}["requests"]
    assert one.batch is not None
    assert two.batch is not None
    assert one.batch.key != two.batch.key


def test_window_rounds_up_to_whole_scrape_intervals() -> None:
    got = analysis.window(timedelta(seconds=21), interval=timedelta(minutes=1), scrape_interval=timedelta(seconds=5))
    assert got == timedelta(seconds=25)


def test_grpc_failures_answered_with_http_200_count_as_failures_except_listed_codes() -> None:
    a, target = _setup()
    success = next(q for q in analysis.queries(a, target, W) if q.name == "success-rate")
    assert 'response_code!~"5..",grpc_response_status=~"|0"}' in success.promql  # HTTP: empty status
    a, target = _setup(successRate={"min": 99, "grpcSuccessCodes": ["NOT_FOUND", 7, "16"]})
    asked = {q.name: q for q in analysis.queries(a, target, W)}
    assert 'grpc_response_status=~"|0|5|7|16"}' in asked["success-rate"].promql
    batch = asked["success-rate"].batch
    assert batch is not None
    assert batch.grpc_ok == ("0", "5", "7", "16")
    assert 'grpc_response_status=~"|0|5|7|16"}' in analysis.batched_promql(batch.key, [batch])
    plain = _batches("v2")[0]
    assert plain.key != batch.key, "Rollouts with other gRPC codes are not batched together"


def test_an_unknown_grpc_code_is_refused_by_name() -> None:
    with pytest.raises(pydantic.ValidationError, match="NOT_A_CODE"):
        parsed_spec(analysis={"successRate": {"grpcSuccessCodes": ["NOT_A_CODE"]}})
