"""The circuit-breaker signal: 503s the mesh answers for the canary (UO, UH, URX; reported by the caller, with
version `unknown` when no pod was picked) count as failed canary requests and are shown on their own row."""

from __future__ import annotations

from test_judges import W, _check, _row, _setup

from coalmine.core import analysis
from coalmine.core.models import Verdict


def test_the_query_asks_the_callers_proxy_for_the_canarys_and_the_unknown_versions_503s() -> None:
    a, target = _setup()
    promql = {q.name: q.promql for q in analysis.queries(a, target, W)}["circuit-breaker"]
    assert 'reporter="source"' in promql
    assert 'destination_version=~"v2|unknown"' in promql
    assert 'response_code="503"' in promql
    assert 'response_flags=~"UO|UH|URX"' in promql
    assert 'destination_service_namespace="shop"' in promql


def test_no_breaker_trips_changes_nothing() -> None:
    a, target = _setup()
    result = _check(a, target)
    assert result.verdict is Verdict.PASS
    row = _row(result, "circuit-breaker")
    assert (row.value, row.verdict) == (0.0, Verdict.PASS)
    assert _row(result, "success-rate").value == 99.9


def test_overflow_503s_count_as_failures_in_the_success_rate_and_are_shown_apart() -> None:
    a, target = _setup()
    # 100 requests reached the canary (99.9 % good) and 25 more were refused by the caller's breaker.
    result = _check(a, target, **{"circuit-breaker": 25.0})
    assert result.verdict is Verdict.FAIL
    success = _row(result, "success-rate")
    assert success.verdict is Verdict.FAIL
    assert abs(success.value - 99.9 * 100 / 125) < 1e-6
    row = _row(result, "circuit-breaker")
    assert row.verdict is Verdict.FAIL
    assert row.value == 20.0
    assert "UO/UH/URX" in row.reason
    assert result.requests == 125.0


def test_a_canary_whose_every_request_is_refused_has_data_and_fails_fast() -> None:
    """No request reaches a pod (all UH after outlier ejection): no destination-reported data at all, yet
    the check fails on the mesh's 503s instead of waiting maxNoData."""
    a, target = _setup()
    result = _check(a, target, requests=None, **{"success-rate": None, "circuit-breaker": 200.0})
    assert result.verdict is Verdict.FAIL
    assert _row(result, "success-rate").value == 0.0
    assert result.fail_fast is not None
    # The success rate's query shows none of these errors: the reason says where they are.
    assert "200 errors in 200 requests" in result.fail_fast.reason
    assert "200 of them answered 503 by the callers' proxies (UO/UH/URX)" in result.fail_fast.reason
    assert "200 of them answered 503" in _row(result, "success-rate").reason


def test_a_success_rate_failing_on_the_pods_own_errors_names_the_mesh_503s_only_when_there_are_some() -> None:
    a, target = _setup()
    result = _check(a, target, **{"success-rate": 50.0})
    assert result.verdict is Verdict.FAIL
    assert "answered 503 by the callers' proxies" not in _row(result, "success-rate").reason


def test_it_can_be_turned_off() -> None:
    a, target = _setup(circuitBreaker={"enabled": False})
    assert "circuit-breaker" not in {q.name for q in analysis.queries(a, target, W)}
