"""The judges of issue 14: each one's verdicts on table-driven cases, through analysis.evaluate (the code the
operator runs), with NaN, empty answers, zero traffic on either side, ties and tiny samples."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from builders import destination_rule, parsed_spec, resolve, virtual_service

from coalmine.core import analysis, judges
from coalmine.core.analysis import Range, Sample, StepContext
from coalmine.core.models import Analysis, Verdict
from coalmine.core.validation import Target

W = timedelta(seconds=30)
SETTLED = StepContext(elapsed=timedelta(seconds=60), scrape_interval=timedelta(seconds=1), weight=10)


def _setup(vs: dict[str, Any] | None = None, **analysis_overrides: object) -> tuple[Analysis, Target]:
    spec = parsed_spec(analysis={"interval": "30s", "checkEvery": "10s", **analysis_overrides})
    target = resolve(spec, "shop", vs or virtual_service(extra=False), [destination_rule()])
    assert isinstance(target, Target)
    return spec.analysis, target


def _check(a: Analysis, target: Target, step: StepContext = SETTLED, **values: object) -> analysis.CheckResult:
    """Evaluate with every asked query answered: `values` by name (a float, None for empty, a Sample, or a
    list for a range query), healthy defaults for the rest (canary 10 % of 1000 requests)."""
    defaults: dict[str, object] = {
        "requests": 100.0,
        "success-rate": 99.9,
        "latency-p99": 80.0,
        "requests@stable": 900.0,
        "success-rate@stable": 99.9,
        "latency-p99@stable": 80.0,
        "circuit-breaker": 0.0,
        "circuit-breaker@unknown": 0.0,
    }
    answers: dict[str, Sample] = {}
    asked = analysis.queries(a, target, W, step)
    for q in asked:
        raw = values.get(q.name, defaults.get(q.name, 99.9))
        if isinstance(raw, Sample):
            answers[q.name] = raw
        elif isinstance(raw, list):
            answers[q.name] = Sample(None, values=tuple(raw))
        else:
            answers[q.name] = Sample.of(raw if raw is None else float(raw))  # type: ignore[arg-type]
    return analysis.evaluate(a, asked, answers, W, target, step)


def _row(result: analysis.CheckResult, name: str) -> Any:
    return next(m for m in result.metrics if m.name == name)


# --- relative checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "stable_requests", "verdict"),
    [
        pytest.param(80.0, 80.5, 900.0, Verdict.PASS, id="shared-failure-both-bad-alike"),
        pytest.param(96.9, 99.9, 900.0, Verdict.FAIL, id="canary-3-points-worse"),
        pytest.param(99.0, 99.4, 900.0, Verdict.PASS, id="within-the-drop"),
        pytest.param(99.0, None, 900.0, Verdict.NO_DATA, id="stable-nan"),
        pytest.param(99.0, 99.9, 0.0, Verdict.NO_DATA, id="stable-no-traffic"),
        pytest.param(99.0, Sample(None, "Prometheus at p unreachable"), 900.0, Verdict.NO_DATA, id="stable-error"),
    ],
)
def test_success_rate_relative_to_the_stable(
    canary: float, stable: object, stable_requests: float, verdict: Verdict
) -> None:
    a, target = _setup(successRate={"min": 50, "maxDropVsStable": 0.5}, trafficCheck={"enabled": False})
    result = _check(
        a, target, **{"success-rate": canary, "success-rate@stable": stable, "requests@stable": stable_requests}
    )
    row = _row(result, "success-rate")
    assert row.verdict is verdict
    assert result.verdict is verdict
    assert 'destination_version="v1"' in row.stable_query
    if verdict is Verdict.NO_DATA:
        assert "stable" in row.reason, "a relative check without a stable says so"
    if verdict is Verdict.FAIL:
        assert row.value == canary
        assert row.stable_value == stable
        assert "points below the stable's" in row.reason
        assert "drop vs stable <= 0.5%" in row.threshold


def test_absolute_guard_rail_still_fails_a_shared_failure() -> None:
    a, target = _setup(successRate={"min": 95, "maxDropVsStable": 0.5})
    result = _check(a, target, **{"success-rate": 80.0, "success-rate@stable": 80.0})
    assert result.verdict is Verdict.FAIL
    assert _row(result, "success-rate").reason == "80% < 95%"


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        (100.0, 90.0, Verdict.PASS),
        (130.0, 90.0, Verdict.FAIL),
        (100.0, None, Verdict.NO_DATA),
        (100.0, 0.0, Verdict.PASS),
    ],
)
def test_latency_ratio_to_the_stable(canary: float, stable: float | None, verdict: Verdict) -> None:
    a, target = _setup(latency={"maxMs": 500, "maxRatioVsStable": 1.25}, trafficCheck={"enabled": False})
    result = _check(a, target, **{"latency-p99": canary, "latency-p99@stable": stable})
    assert _row(result, "latency-p99").verdict is verdict


# --- fail fast ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "success", "fast"),
    [
        pytest.param(100.0, 90.0, True, id="10-errors-of-100-at-a-99-bound"),
        pytest.param(100.0, 97.0, False, id="3-errors-of-100-could-be-bad-luck"),
        pytest.param(20.0, 95.0, False, id="1-error-of-20"),
        pytest.param(2000.0, 97.0, True, id="60-errors-of-2000"),
    ],
)
def test_fail_fast_needs_overwhelming_evidence(requests: float, success: float, fast: bool) -> None:
    a, target = _setup(successRate={"min": 99}, trafficCheck={"enabled": False})
    result = _check(a, target, requests=requests, **{"success-rate": success})
    assert result.verdict is Verdict.FAIL
    assert (result.fail_fast is not None) is fast
    if result.fail_fast is not None:
        assert result.fail_fast.score is not None
        assert result.fail_fast.score < 0.001
        assert "one-sided binomial" in result.fail_fast.reason


def test_fail_fast_can_be_turned_off() -> None:
    a, target = _setup(failFast={"enabled": False}, trafficCheck={"enabled": False})
    assert _check(a, target, requests=1000.0, **{"success-rate": 50.0}).fail_fast is None


def test_overwhelming_errors_edges() -> None:
    assert judges.overwhelming_errors(0, 0, 0.01, 0.999) is None
    assert judges.overwhelming_errors(100, 0, 0.01, 0.999) is None
    assert judges.overwhelming_errors(100, 1, 0.0, 0.999) == 0.0, "at a 100 % bound any error is overwhelming"


# --- traffic verification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "weight", "far"),
    [
        pytest.param(100.0, 900.0, 10, False, id="on-weight"),
        pytest.param(40.0, 960.0, 10, True, id="sidecar-less-canary-pods"),
        pytest.param(85.0, 915.0, 10, False, id="a-little-off-is-noise"),
        pytest.param(11.0, 89.0, 10, False, id="few-requests-wide-margin"),
        pytest.param(80.0, 920.0, 0, True, id="canary-traffic-at-weight-0"),
        pytest.param(0.0, 1000.0, 0, False, id="weight-0-no-canary"),
    ],
)
def test_traffic_share_against_the_weight(canary: float, stable: float, weight: int, far: bool) -> None:
    a, target = _setup(minRequests=1)
    step = StepContext(elapsed=timedelta(seconds=60), scrape_interval=timedelta(seconds=1), weight=weight, mismatches=2)
    result = _check(a, target, step, requests=canary, **{"requests@stable": stable})
    row = _row(result, "traffic")
    assert row.value == pytest.approx(100 * canary / (canary + stable))
    assert result.traffic_mismatches == (3 if far else 0)
    assert (row.verdict is Verdict.FAIL) is far, "the third far-off check in a row fails"
    if far:
        assert "TrafficMismatch" in row.reason


def test_one_far_off_check_is_not_yet_a_failure() -> None:
    a, target = _setup()
    result = _check(a, target, requests=40.0, **{"requests@stable": 960.0})
    assert _row(result, "traffic").verdict is Verdict.PASS
    assert "1 of 3" in _row(result, "traffic").reason
    assert result.traffic_mismatches == 1


def test_traffic_check_waits_for_a_window_inside_the_step_and_skips_shared_routes() -> None:
    a, target = _setup()
    early = StepContext(elapsed=timedelta(seconds=2), scrape_interval=timedelta(seconds=1), weight=10)
    assert "traffic" not in [m.name for m in _check(a, target, early, requests=40.0).metrics]
    a, target = _setup(vs=virtual_service())  # the seed's beta route also sends to v2
    row = _row(_check(a, target, requests=40.0), "traffic")
    assert row.verdict is Verdict.SKIPPED
    assert "route beta also sends" in row.reason


# --- SLO burn rate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "long", "verdict"),
    [
        pytest.param(97.0, 97.0, Verdict.FAIL, id="both-windows-burn"),
        pytest.param(97.0, 99.95, Verdict.PASS, id="only-the-short-window-burns"),
        pytest.param(99.95, 97.0, Verdict.PASS, id="only-the-long-window-burns"),
        pytest.param(None, 97.0, Verdict.NO_DATA, id="a-window-without-data"),
    ],
)
def test_slo_burn_rate_is_multiwindow(short: float | None, long: float, verdict: Verdict) -> None:
    a, target = _setup(
        slo={"objective": 99.9, "burnRate": 14.4, "windows": ["1m", "5m"]}, trafficCheck={"enabled": False}
    )
    result = _check(a, target, **{"success-rate[1m]": short, "success-rate[5m]": long})
    row = _row(result, "slo-burn")
    assert row.verdict is verdict
    if verdict is Verdict.FAIL:
        assert row.value == pytest.approx(30.0)  # 3 % errors over a 0.1 % budget
        assert "burns the 99.9% SLO's budget" in row.reason


def test_burn_rate() -> None:
    assert judges.burn_rate(99.9, 99.9) == pytest.approx(1.0)
    assert judges.burn_rate(100.0, 99.9) == 0.0
    assert judges.burn_rate(99.0, 100.0) == math.inf


# --- Mann-Whitney judge ------------------------------------------------------------------------------


GOOD = [99.9, 99.8, 100.0, 99.7, 99.9, 100.0, 99.8, 99.9, 99.6, 100.0]
BAD = [97.0, 96.5, 97.2, 96.8, 97.1, 96.9, 97.3, 96.7, 97.0, 96.6]


@pytest.mark.parametrize(
    ("canary", "stable", "verdict"),
    [
        pytest.param(BAD, GOOD, Verdict.FAIL, id="canary-worse"),
        pytest.param(GOOD, BAD, Verdict.PASS, id="canary-better-one-sided"),
        pytest.param(GOOD, GOOD, Verdict.PASS, id="same"),
        pytest.param([100.0] * 10, [100.0] * 10, Verdict.PASS, id="all-tied"),
        pytest.param(BAD[:3], GOOD, Verdict.INCONCLUSIVE, id="tiny-sample"),
        pytest.param([math.nan] * 10, GOOD, Verdict.INCONCLUSIVE, id="all-nan"),
        pytest.param([], [], Verdict.INCONCLUSIVE, id="empty"),
    ],
)
def test_mann_whitney_judge(canary: list[float], stable: list[float], verdict: Verdict) -> None:
    a, target = _setup(judge={"kind": "mannWhitney", "confidence": 0.95}, trafficCheck={"enabled": False})
    result = _check(
        a,
        target,
        **{
            "success-rate-vs-stable": canary,
            "success-rate-vs-stable@stable": stable,
            "latency-p99-vs-stable": [80.0] * 10,
            "latency-p99-vs-stable@stable": [80.0] * 10,
        },
    )
    row = _row(result, "success-rate-vs-stable")
    assert row.verdict is verdict
    if verdict is Verdict.INCONCLUSIVE:
        assert result.verdict is Verdict.INCONCLUSIVE, "inconclusive holds the check without failing it"
        assert "needs 8 each" in result.reason
    if verdict is Verdict.FAIL:
        assert row.score is not None
        assert row.score < 0.05


def test_the_judge_asks_range_queries_over_the_step() -> None:
    a, target = _setup(judge={"kind": "mannWhitney"})
    step = StepContext(elapsed=timedelta(seconds=44), scrape_interval=timedelta(seconds=1), weight=10)
    ranged = {q.name: q.range for q in analysis.queries(a, target, W, step) if q.range is not None}
    assert set(ranged) == {
        "success-rate-vs-stable",
        "success-rate-vs-stable@stable",
        "latency-p99-vs-stable",
        "latency-p99-vs-stable@stable",
    }
    assert ranged["success-rate-vs-stable"] == Range(span=timedelta(seconds=40), step=timedelta(seconds=4))


# --- dry run -----------------------------------------------------------------------------------------------


def test_a_failing_dry_run_metric_is_shown_and_changes_nothing() -> None:
    a, target = _setup(metrics=[{"name": "queue-depth", "query": "max(q)", "max": 10, "dryRun": True}])
    result = _check(a, target, **{"queue-depth": 250.0})
    row = _row(result, "queue-depth")
    assert row.verdict is Verdict.FAIL
    assert row.dry_run
    assert result.verdict is Verdict.PASS
    assert result.failed == ()


def test_at_100_percent_relative_checks_and_the_judge_stand_aside() -> None:
    """The stable has no traffic at the last step: comparing with it would hold the release forever."""
    a, target = _setup(successRate={"min": 50, "maxDropVsStable": 1}, judge={"kind": "mannWhitney"})
    full = StepContext(elapsed=timedelta(seconds=60), scrape_interval=timedelta(seconds=1), weight=100)
    result = _check(a, target, full, **{"success-rate@stable": None, "requests@stable": 0.0})
    assert result.verdict is Verdict.PASS
    assert "at 100 % the stable has no traffic" in _row(result, "success-rate").reason
    assert _row(result, "success-rate-vs-stable").verdict is Verdict.SKIPPED


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1_000, 48_213, 1_000_000, 10_000_000])
@pytest.mark.parametrize("p", [0.0, 1e-6, 0.001, 0.01, 0.05, 0.3, 0.5, 0.97, 1.0])
def test_binomial_tail_is_scipys(n: int, p: float) -> None:
    """The stdlib binomial tail (so a check does not load scipy's ~90 MiB) against scipy.stats.binom.sf
    at every k around the mean, both tails and the ends."""
    from scipy.stats import binom

    sd = math.sqrt(n * p * (1 - p))
    ks = {0, 1, 2, n - 1, n} | {max(0, min(n, round(n * p + d * sd))) for d in (-8, -3, -1, -0.3, 0, 0.3, 1, 3, 8, 30)}
    for k in sorted(ks):
        ours, theirs = judges.binomial_tail(k, n, p), float(binom.sf(k - 1, n, p))
        assert ours == pytest.approx(theirs, rel=1e-7, abs=1e-300), (k, n, p)


def test_the_checks_judges_do_not_load_scipy() -> None:
    """Fail-fast and the traffic share margin run on every check with traffic: in a fresh interpreter they
    must not import scipy (only the Mann-Whitney judge may)."""
    import subprocess
    import sys

    code = (
        "import sys; from coalmine.core import judges; "
        "judges.overwhelming_errors(1000, 30, 0.01, 0.999); judges.share_margin(0.1, 1000, 0.02, 0.999); "
        "print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
