"""The circuit-breaker signal: 503s the mesh answers for the canary (UO, UH, URX; reported by the caller, with
version `unknown` when no pod was picked) count as failed canary requests and are shown on their own row; those
of unknown version are the stable's when the stable's pods answered less than its share."""

from __future__ import annotations

from datetime import timedelta

from test_judges import W, _check, _row, _setup

from coalmine.core import analysis
from coalmine.core.analysis import Sample, StepContext
from coalmine.core.models import Verdict


def test_the_queries_ask_the_callers_proxy_for_the_canarys_503s_and_the_services_unknown_ones_apart() -> None:
    a, target = _setup()
    promql = {q.name: q.promql for q in analysis.queries(a, target, W)}
    for name, version in (("circuit-breaker", "v2"), ("circuit-breaker@unknown", "unknown")):
        assert 'reporter="source"' in promql[name]
        assert f'destination_version="{version}"' in promql[name]
        assert 'response_code="503"' in promql[name]
        assert 'response_flags=~"UO|UH|URX"' in promql[name]
        assert 'destination_service_namespace="shop"' in promql[name]


def test_no_breaker_trips_changes_nothing() -> None:
    a, target = _setup()
    result = _check(a, target)
    assert result.verdict is Verdict.PASS
    row = _row(result, "circuit-breaker")
    assert (row.value, row.verdict) == (0.0, Verdict.PASS)
    assert _row(result, "success-rate").value == 99.9


def test_overflow_503s_count_as_failures_in_the_success_rate_and_are_shown_apart() -> None:
    a, target = _setup()
    # 100 requests reached the canary (99.9 % good) and 25 more were refused by the caller's breaker (UO
    # picks no pod: version unknown); the stable got its 90 % share (900 of 1025).
    result = _check(a, target, **{"circuit-breaker@unknown": 25.0})
    assert result.verdict is Verdict.FAIL
    success = _row(result, "success-rate")
    assert success.verdict is Verdict.FAIL
    assert abs(success.value - 99.9 * 100 / 125) < 1e-6
    row = _row(result, "circuit-breaker")
    assert row.verdict is Verdict.FAIL
    assert row.value == 20.0
    assert "UO/UH/URX" in row.reason
    assert result.requests == 125.0
    assert 'destination_version="v2"' in row.query
    assert 'destination_version="unknown"' in row.query


def test_503s_of_a_stable_without_ready_pods_do_not_roll_back_a_healthy_canary() -> None:
    """The stable's pods are gone (UH for all its requests, version unknown like a canary's would be):
    its 90 % share of the requests is missing from what its pods answered, so the 503s are its own. The
    canary, 100 requests at 99.9 %, passes, and the traffic check counts the refused requests as the
    stable's (10 % to the canary, as the routes say)."""
    a, target = _setup()
    result = _check(a, target, **{"circuit-breaker@unknown": 900.0, "requests@stable": None})
    assert result.verdict is Verdict.PASS, result
    assert result.fail_fast is None
    row = _row(result, "circuit-breaker")
    assert (row.value, row.verdict) == (0.0, Verdict.PASS)
    assert "900 503s of unknown version not counted as the canary's" in row.reason
    assert "answered 0% of 1000 requests, the routes give it 90%" in row.reason
    assert 'destination_version="unknown"' not in row.query, "the query shows the 503s it counted"
    assert _row(result, "success-rate").value == 99.9
    assert _row(result, "traffic").value == 10.0


def test_a_stable_short_of_its_share_by_less_than_the_margin_leaves_the_503s_with_the_canary() -> None:
    """A canary whose every request is refused at 10 %: the stable's 880 of 1000 is within the binomial
    margin of its 90 %, so the 100 503s are the canary's."""
    a, target = _setup()
    result = _check(a, target, requests=20.0, **{"circuit-breaker@unknown": 100.0, "requests@stable": 880.0})
    assert result.verdict is Verdict.FAIL
    assert _row(result, "circuit-breaker").verdict is Verdict.FAIL
    assert "not counted" not in _row(result, "circuit-breaker").reason


def test_without_the_stables_count_the_503s_of_unknown_version_are_the_canarys() -> None:
    a, target = _setup()
    unanswered = Sample(None, "Prometheus at p unreachable")
    result = _check(a, target, **{"circuit-breaker@unknown": 900.0, "requests@stable": unanswered})
    assert _row(result, "circuit-breaker").verdict is Verdict.FAIL, "the cautious side"


def test_the_stables_request_count_is_asked_for_the_breaker_even_without_relative_checks() -> None:
    a, target = _setup(trafficCheck={"enabled": False})
    names = [q.name for q in analysis.queries(a, target, W)]
    assert "requests@stable" in names
    assert "success-rate@stable" not in names


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


def test_early_in_a_step_the_stables_share_is_that_of_both_weights_in_the_window() -> None:
    """At 100 %, 10 s into the step of a 30-s window that still holds 20 s at 20 %: the stable's share is
    (20 x 80 % + 10 x 0 %) / 30 = 53 %. A stable refused by its own breaker answered 15 %: its 503s are
    its own. Once the window is all 100 %, 503s of unknown version can only be the canary's."""
    a, target = _setup()
    early = StepContext(
        elapsed=timedelta(seconds=10), scrape_interval=timedelta(seconds=1), weight=100, previous_weight=20
    )
    values = {"requests": 500.0, "requests@stable": 150.0, "circuit-breaker@unknown": 350.0}
    result = _check(a, target, early, **values)
    row = _row(result, "circuit-breaker")
    assert row.verdict is Verdict.PASS
    assert "the routes give it 53.3% (in the window, with the step before)" in row.reason
    settled = StepContext(
        elapsed=timedelta(seconds=60), scrape_interval=timedelta(seconds=1), weight=100, previous_weight=20
    )
    result = _check(a, target, settled, **{**values, "requests@stable": None})
    assert _row(result, "circuit-breaker").verdict is Verdict.FAIL
