"""demo.timeline and demo.scenario: the timeline's data assembly and the demo's pure checks."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_view import LATENCY_QUERY, SEL, SUCCESS_QUERY, T0, iso, progressing, rolled_back, rollout

from coalmine_dev.demo import scenario, timeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_selector_comes_from_the_operators_queries() -> None:
    assert timeline.selector_from_status(progressing()) == SEL
    only_rollback = {"rollback": {"query": SUCCESS_QUERY}}
    assert timeline.selector_from_status(only_rollback) == SEL  # the plain one, not the 5xx-filtered one
    assert timeline.selector_from_status({}) is None


def test_range_queries_use_the_selector_and_the_quantile() -> None:
    queries = timeline.range_queries(SEL, 0.95, "5s")
    assert queries[timeline.ERROR_RATE] == (
        f'(sum(rate(istio_requests_total{{{SEL},response_code=~"5.."}}[5s])) or vector(0)) / '
        f"sum(rate(istio_requests_total{{{SEL}}}[5s])) * 100"
    )
    assert queries[timeline.LATENCY] == LATENCY_QUERY.replace("0.99", "0.95").replace("[4s]", "[5s]")


def test_parse_matrix_drops_nan_and_sorts() -> None:
    t = T0.timestamp()
    result = [{"metric": {}, "values": [[t + 2, "3.5"], [t, "1"], [t + 1, "NaN"], [t + 3, "+Inf"]]}]
    assert timeline.parse_matrix(result) == [(T0, 1.0), (T0 + timedelta(seconds=2), 3.5)]


def test_weights_from_history_step_up_then_roll_back_to_zero() -> None:
    status = rolled_back()
    status["history"].append({"stepIndex": 1, "weight": 30, "startedAt": iso(T0)})
    end = T0 + timedelta(seconds=10)
    points, steps = timeline.weight_series(status, end)
    assert [(s.weight, s.at) for s in steps] == [(10, T0 - timedelta(seconds=8)), (30, T0)]
    assert points == [
        (T0 - timedelta(seconds=8), 0.0),
        (T0 - timedelta(seconds=8), 10.0),
        (T0, 30.0),
        (T0 + timedelta(seconds=3), 0.0),
        (end, 0.0),
    ]


def test_weights_of_a_succeeded_rollout_hold_100_to_the_end() -> None:
    status = {
        "phase": "Succeeded",
        "history": [
            {"weight": w, "startedAt": iso(T0 + timedelta(seconds=5 * i))} for i, w in enumerate((10, 30, 50, 100))
        ],
        "finishedAt": iso(T0 + timedelta(seconds=20)),
    }
    points, _ = timeline.weight_series(status, T0 + timedelta(seconds=25))
    assert points[-1] == (T0 + timedelta(seconds=25), 100.0)
    assert timeline.weight_series({}, T0) == ([], [])


def test_assemble_joins_status_and_prometheus() -> None:
    obj = rollout(rolled_back())
    obj["spec"]["analysis"].update(successRate={"min": 95}, latency={"quantile": 0.9, "maxMs": 300})
    obj["status"]["startedAt"] = iso(T0 - timedelta(seconds=8))
    t = T0.timestamp()
    measured: dict[str, Any] = {
        timeline.ERROR_RATE: [{"values": [[t, "0"], [t + 2, "40"]]}],
        timeline.LATENCY: [{"values": [[t, "85"]]}],
    }
    note = (T0 + timedelta(seconds=1), "v3 starts failing")
    tl = timeline.assemble("scenario 2", obj, T0 + timedelta(seconds=10), measured, [note])
    assert (tl.canary, tl.phase, tl.start) == ("order/v3", "RolledBack", T0 - timedelta(seconds=8))
    assert tl.rollback is not None
    assert tl.rollback.at == T0 + timedelta(seconds=3)
    assert tl.rollback.text == "rollback (FailureLimit): success-rate 79.77 %, needs >= 99"
    assert tl.error_rate == ((T0, 0.0), (T0 + timedelta(seconds=2), 40.0))
    assert tl.latency == ((T0, 85.0),)
    assert (tl.error_rate_max, tl.latency_max_ms, tl.latency_name) == (5.0, 300.0, "p90")
    assert tl.notes == (note,)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    obj = rollout(rolled_back())
    obj["status"]["startedAt"] = iso(T0 - timedelta(seconds=8))
    tl = timeline.assemble("scenario 2", obj, T0 + timedelta(seconds=10), {}, [])
    png = timeline.plot([tl], tmp_path / "out" / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to plot"):
        timeline.plot([], tmp_path / "empty.png")


# --- scenario -------------------------------------------------------------------------------------


def test_examples_load_into_any_namespace() -> None:
    ex = scenario.load_examples(EXAMPLES, "demo-1")
    assert ex.namespace["metadata"]["name"] == "demo-1"
    assert {o["metadata"]["namespace"] for o in (ex.destination_rule, ex.virtual_service, ex.rollout)} == {"demo-1"}
    assert [s["name"] for s in ex.destination_rule["spec"]["subsets"]] == ["v1", "v2", "v3"]
    assert ex.destination_rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutiveGatewayErrors"] == 5
    beta, primary = ex.virtual_service["spec"]["http"]
    assert beta["match"] == [{"headers": {"user-group": {"exact": "beta"}}}]
    assert primary["retries"] == {"attempts": 3, "perTryTimeout": "2s", "retryOn": "gateway-error,connect-failure"}
    assert primary["timeout"] == "5s"
    assert ex.rollout["spec"]["analysis"]["interval"] == "2m"  # production-sized in the file
    with pytest.raises(ValueError, match="Rollout"):
        scenario.parse_examples([ex.namespace], "x")


def test_demo_rollout_shortens_only_the_timings() -> None:
    ex = scenario.load_examples(EXAMPLES, "shop")
    short = scenario.demo_rollout(ex.rollout, timedelta(seconds=5))
    assert short["spec"]["steps"] == [{"weight": 10}, {"weight": 30}, {"weight": 50}, {"weight": 100}]
    analysis = short["spec"]["analysis"]
    assert (analysis["interval"], analysis["checkEvery"], analysis["minRequests"]) == ("5s", "1s", 10)
    assert analysis["successRate"] == ex.rollout["spec"]["analysis"]["successRate"]
    assert analysis["latency"] == ex.rollout["spec"]["analysis"]["latency"]
    assert ex.rollout["spec"]["steps"][0]["hold"] == "5m"  # the input is not modified
    long = scenario.demo_rollout(ex.rollout, timedelta(minutes=1))["spec"]["analysis"]
    assert (long["interval"], long["checkEvery"], long["minRequests"]) == ("1m", "10s", 20)


def test_untouched_ignores_the_owned_destinations_only() -> None:
    ex = scenario.load_examples(EXAMPLES, "shop")
    vs, dr = ex.virtual_service, ex.destination_rule
    after = copy.deepcopy(vs)
    after["spec"]["http"][1]["route"] = [
        {"destination": {"host": "order", "subset": "v2"}, "weight": 100},
        {"destination": {"host": "order", "subset": "v3"}, "weight": 0},
    ]
    after["metadata"]["resourceVersion"] = "99"
    results = scenario.check_untouched(vs, after, dr, dr, ("primary",))
    assert all(r.equal for r in results), results
    assert [r.name for r in results] == [
        "VS route beta (user's A/B)",
        "VS route primary retries",
        "VS route primary timeout",
        "VS all but owned destinations",
        "DR outlierDetection (circuit breaker)",
        "DR whole object",
    ]
    after["spec"]["http"][1]["timeout"] = "10s"
    after["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v1"
    dr_after = copy.deepcopy(dr)
    dr_after["metadata"]["resourceVersion"] = "2"
    changed = {r.name for r in scenario.check_untouched(vs, after, dr, dr_after, ("primary",)) if not r.equal}
    assert changed == {
        "VS route beta (user's A/B)",
        "VS route primary timeout",
        "VS all but owned destinations",
        "DR whole object",
    }


def test_canary_weight_and_changes() -> None:
    vs = scenario.load_examples(EXAMPLES, "shop").virtual_service
    assert scenario.canary_weight(vs, ("primary",), "v2") == 0  # v2 only on the beta route
    assert scenario.canary_weight(vs, ("primary",), "v1") == 100
    assert scenario.changes([0, 0, 10, 10, 30, 0, 0]) == [0, 10, 30, 0]


# --- the A/B step of the seed story ------------------------------------------------------------------


def test_examples_bring_the_workloads_and_the_ab_step_of_the_strategies_example() -> None:
    ex = scenario.load_examples(EXAMPLES, "demo-1")
    assert [(w["kind"], w["metadata"]["name"]) for w in ex.workloads] == [
        ("Service", "order"),
        ("Deployment", "order-v1"),
        ("Deployment", "order-v2"),
        ("Deployment", "order-v3"),
    ]
    assert {w["metadata"]["namespace"] for w in ex.workloads} == {"demo-1"}
    # The users who opted in by cookie: not `user-group: beta`, which the user's own `beta` route, ahead of
    # `primary` (and so of the operator's route), sends to v2 whatever the rollout does.
    assert ex.ab_step == {"match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]}
    assert scenario.demo_steps(ex.rollout, ex.ab_step) == [
        {"match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]},
        {"weight": 10},
        {"weight": 30},
        {"weight": 50},
        {"weight": 100},
    ]
    with pytest.raises(ValueError, match="no step with a match"):
        scenario.parse_examples([ex.namespace, ex.destination_rule, ex.virtual_service, ex.rollout], "x", ex.rollout)


def _with_match_route(vs: dict[str, Any]) -> dict[str, Any]:
    after = copy.deepcopy(vs)
    route = {
        "name": scenario.MATCH_ROUTE,
        "match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}],
        "route": [{"destination": {"host": "order", "subset": "v3"}}],
    }
    after["spec"]["http"].insert(1, route)
    return after


def test_the_operators_ab_route_left_behind_is_a_change() -> None:
    ex = scenario.load_examples(EXAMPLES, "shop")
    vs, dr = ex.virtual_service, ex.destination_rule
    assert scenario.route_named(vs, scenario.MATCH_ROUTE) is None
    assert scenario.route_named(_with_match_route(vs), scenario.MATCH_ROUTE) is not None
    clean = scenario.check_untouched(vs, vs, dr, dr, ("primary",), match_route=scenario.MATCH_ROUTE)
    assert all(r.equal for r in clean)
    assert "VS route coalmine-order (operator's A/B)" in [r.name for r in clean]
    left = scenario.check_untouched(vs, _with_match_route(vs), dr, dr, ("primary",), match_route=scenario.MATCH_ROUTE)
    changed = {r.name for r in left if not r.equal}
    assert changed == {"VS route coalmine-order (operator's A/B)", "VS all but owned destinations"}


@pytest.mark.parametrize(
    ("readings", "problem"),
    [
        ([(0, False), (0, True), (10, False), (30, False), (0, False)], ""),  # A/B, weights, rolled back
        ([(0, False), (0, True), (0, False)], ""),  # rolled back during the A/B step
        ([(0, False), (10, False), (30, False)], "never seen"),
        ([(0, False), (0, True), (10, True), (10, False)], "while the owned route gave the canary weight"),
        ([(0, True), (10, False), (0, True), (0, False)], "came back after the weight steps began"),
        ([(0, False), (0, True)], "still in the VirtualService at the end"),
    ],
)
def test_ab_problem_tells_the_story_the_route_must_follow(readings: list[tuple[int, bool]], problem: str) -> None:
    found = scenario.ab_problem(readings)
    assert (found == "") if not problem else (problem in found), found


def test_an_ab_step_is_labelled_on_the_timeline() -> None:
    status = {
        "phase": "RolledBack",
        "history": [
            {"stepIndex": 0, "weight": 0, "startedAt": iso(T0)},
            {"stepIndex": 1, "weight": 10, "startedAt": iso(T0 + timedelta(seconds=5))},
        ],
    }
    spec_steps = [{"match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]}, {"weight": 10}]
    _, steps = timeline.weight_series(status, T0 + timedelta(seconds=9), spec_steps)
    assert [s.label for s in steps] == ["A/B", "10%"]
    _, plain = timeline.weight_series(status, T0 + timedelta(seconds=9))
    assert [s.label for s in plain] == ["0%", "10%"]
