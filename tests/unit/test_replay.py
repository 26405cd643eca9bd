"""replay: the operator's core over virtual time, with Prometheus answers from a function of the moment."""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
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
            "circuit-breaker@unknown": 0.0,
            "user-requests": 0.0,  # a mirror step's traffic check: no user reaches the canary
            "user-requests@stable": 1000.0,
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


# --- strategies: the A/B route and the readiness gates --------------------------------------------------

AB = [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]


def _replay_ab(
    spec: RolloutSpec, vs: dict[str, Any] | None = None, ready: tuple[int, int | None] | None = None
) -> list[replay.Row]:
    """Five healthy minutes of Rollout `order` on the seed's routes (or `vs`), ready pods assumed or not."""
    vs = vs if vs is not None else virtual_service()
    return list(
        replay.replay(spec, "shop", vs, [destination_rule()], T0, T0 + 5 * 60 * S, S, answers(None), ready, "order")
    )


def _ab_spec(**overrides: Any) -> RolloutSpec:
    return parsed_spec(
        steps=[{"match": AB, "hold": "20s"}, {"weight": 10, "hold": "20s"}, {"weight": 100, "hold": "20s"}],
        analysis={"interval": "20s", "checkEvery": "5s", "failureLimit": 2, "failFast": {"enabled": False}},
        **overrides,
    )


def test_an_ab_step_replays_with_the_operators_route_then_without_it() -> None:
    rows = _replay_ab(_ab_spec())
    assert rows[-1].phase == "Succeeded"
    ab = [r for r in rows if r.match_route]
    assert ab, "the A/B route was never in the replayed VirtualService"
    assert all(r.step == "1/3" for r in ab), "the route only during the A/B step"
    assert all(r.weight == 0 for r in ab), "the owned route at 0 % meanwhile"
    assert {r.match_route for r in ab} == {"coalmine-order"}
    assert ab[0].match == tuple(AB)
    assert ab[0].to_json()["matchRoute"] == {"name": "coalmine-order", "match": AB}
    assert all(r.match_route is None for r in rows if r.step != "1/3")
    assert rows[-1].to_json()["matchRoute"] is None
    out = io.StringIO()
    replay._print_text(rows, out)
    text = out.getvalue()
    assert text.startswith("readiness: not replayed")
    assert "+ A/B route coalmine-order" in text
    assert (
        "    A/B route coalmine-order in the VirtualService: users with header cookie regex .*beta=1.* -> canary"
        in text
    )
    assert "    A/B route coalmine-order removed" in text
    assert text.index("in the VirtualService") < text.index("removed")


def test_the_live_releases_ab_route_is_not_where_a_replay_starts() -> None:
    vs = virtual_service()
    vs["spec"]["http"].insert(
        1, {"name": "coalmine-order", "match": AB, "route": [{"destination": {"host": "order", "subset": "v2"}}]}
    )
    rows = _replay_ab(_ab_spec(), vs)
    assert rows[-1].phase == "Succeeded"


def test_with_no_ready_canary_pod_the_replay_waits_and_rolls_back_at_the_readiness_timeout() -> None:
    spec = _ab_spec(readiness={"minReady": 1, "timeout": "1m"})
    rows = _replay_ab(spec, ready=(0, 2))
    assert rows[-1].phase == "RolledBack"
    assert rows[-1].at == T0 + 60 * S
    assert all(r.match_route is None and r.weight == 0 for r in rows), "no user ever reached the canary"
    waiting = [r for r in rows if r.readiness is not None and r.readiness.waiting_since is not None]
    assert waiting
    assert waiting[0].readiness is not None
    assert (waiting[0].readiness.canary_ready, waiting[0].readiness.needed) == (0, 1)
    assert replay.ready_text(waiting[0].readiness) == "ready 0/1 WaitingForCanary"
    waits = [e.message for r in rows for e in r.events if e.reason == "WaitingForCanary"]
    assert waits, "a WaitingForCanary Event"
    assert "step 1/3: canary stays at 0% until it has ready pods for the A/B step: the canary has 0 ready" in waits[0]
    assert waiting[0].readiness.message.endswith("; the A/B step needs 1")
    out = io.StringIO()
    replay._print_text(rows, out, (0, 2))
    text = out.getvalue()
    assert text.startswith("readiness: replayed as if the canary had 0 ready pods, stable 2 throughout (--ready)")
    assert "ready 0/1 WaitingForCanary" in text
    assert "would have rolled back" in text


def test_with_ready_canary_pods_the_gates_pass_and_the_counts_are_shown() -> None:
    rows = _replay_ab(_ab_spec(), ready=(2, 2))
    assert rows[-1].phase == "Succeeded"
    shown = {replay.ready_text(r.readiness) for r in rows if r.phase == "Progressing"}
    assert shown == {"ready 2/1"}


@pytest.mark.parametrize(("text", "counts"), [("0", (0, None)), ("2/4", (2, 4))])
def test_ready_counts_parse(text: str, counts: tuple[int, int | None]) -> None:
    assert replay.ready_counts(text) == counts


@pytest.mark.parametrize("text", ["", "x", "1/y", "-1", "1/-2"])
def test_ready_counts_refuse_what_is_not_a_count(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        replay.ready_counts(text)


def test_a_mirror_step_replays_with_the_operators_mirror_then_without_it() -> None:
    spec = parsed_spec(
        steps=[{"mirror": 100, "hold": "20s"}, {"weight": 10, "hold": "20s"}, {"weight": 100, "hold": "20s"}],
        analysis={"interval": "20s", "checkEvery": "5s", "failureLimit": 2, "failFast": {"enabled": False}},
    )
    rows = _replay_ab(spec)
    assert rows[-1].phase == "Succeeded"
    mirrored = [r for r in rows if r.mirror is not None]
    assert mirrored, "the mirror was never on the replayed VirtualService"
    assert all(r.step == "1/3" and r.mirror == 100 and r.weight == 0 for r in mirrored), "0 % users meanwhile"
    assert all(r.mirror is None for r in rows if r.step != "1/3")
    assert mirrored[0].to_json()["mirror"] == 100
    out = io.StringIO()
    replay._print_text(rows, out)
    assert "+ mirror 100% to the canary" in out.getvalue()
