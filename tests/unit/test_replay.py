"""replay: the operator's core over virtual time, with Prometheus answers from a function of the moment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from builders import T0, destination_rule, parsed_spec, virtual_service

from coalmine import replay
from coalmine.core.analysis import Query, Sample
from coalmine.core.models import RolloutSpec

S = timedelta(seconds=1)


def answers(broken_at: datetime | None) -> replay.Ask:
    """Healthy data at 10 % of 1000 requests; after `broken_at`, the canary answers 40 % errors."""

    def ask(queries: Sequence[Query], at: datetime) -> dict[str, Sample]:
        bad = broken_at is not None and at >= broken_at
        values = {
            "requests": 100.0,
            "success-rate": 60.0 if bad else 99.95,
            "latency-p99": 80.0,
            "requests@stable": 900.0,
            "success-rate@stable": 99.95,
            "latency-p99@stable": 80.0,
            "circuit-breaker": 0.0,
        }
        return {q.name: Sample(values[q.name]) for q in queries}

    return ask


def _spec() -> RolloutSpec:
    return parsed_spec(
        steps=[{"weight": 10, "hold": "20s"}, {"weight": 30, "hold": "20s"}, {"weight": 100, "hold": "20s"}],
        analysis={"interval": "20s", "checkEvery": "5s", "failureLimit": 2, "failFast": {"enabled": False}},
    )


def test_a_healthy_release_replays_to_promotion_on_the_check_grid() -> None:
    spec = _spec()
    rows = list(
        replay.replay(spec, "shop", virtual_service(), [destination_rule()], T0, T0 + 5 * 60 * S, S, answers(None))
    )
    assert rows[-1].phase == "Succeeded"
    checks = [r.at for r in rows if r.check is not None]
    assert all((t - T0).total_seconds() % 5 == 0 for t in checks), "checks fall on the checkEvery grid"
    weights = [r.weight for r in rows]
    assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]] == [10, 30, 100]


def test_a_break_replays_to_a_rollback_at_the_second_failing_check() -> None:
    spec = _spec()
    broken = T0 + 27 * S  # in the 30 % step (it starts at 20 s)
    rows = list(
        replay.replay(spec, "shop", virtual_service(), [destination_rule()], T0, T0 + 5 * 60 * S, S, answers(broken))
    )
    assert rows[-1].phase == "RolledBack"
    assert rows[-1].at == T0 + 35 * S, "failing checks at 30 s and 35 s: failureLimit 2"
    assert rows[-1].weight == 0
    assert [e.reason for e in rows[-1].events] == ["RolledBack"]


def test_another_spec_tries_other_thresholds_on_the_same_data() -> None:
    lenient = parsed_spec(
        steps=[{"weight": 10, "hold": "20s"}, {"weight": 30, "hold": "20s"}, {"weight": 100, "hold": "20s"}],
        analysis={"interval": "20s", "checkEvery": "5s", "successRate": {"min": 50}},
    )
    rows = list(
        replay.replay(
            lenient, "shop", virtual_service(), [destination_rule()], T0, T0 + 5 * 60 * S, S, answers(T0 + 27 * S)
        )
    )
    assert rows[-1].phase == "Succeeded", "60 % passes a 50 % bound"
