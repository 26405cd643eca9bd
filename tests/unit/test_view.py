"""view.render: what `coalmine status` and the demo show, from sample Rollout dicts (no cluster)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from coalmine.status import render

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SEL = (
    'reporter="destination",destination_workload_namespace="shop",destination_service_name="order",'
    'destination_version="v3"'
)
SUCCESS_QUERY = (
    f'(sum(rate(istio_requests_total{{{SEL},response_code!~"5.."}}[4s])) or vector(0)) / '
    f"sum(rate(istio_requests_total{{{SEL}}}[4s])) * 100"
)
LATENCY_QUERY = f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{SEL}}}[4s])))"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rollout(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "virtualService": {"name": "order", "routes": ["primary"]},
        "stable": {"host": "order", "subset": "v2"},
        "canary": {"host": "order", "subset": "v3"},
        "steps": [{"weight": 10, "hold": "8s"}, {"weight": 30}, {"weight": 50}, {"weight": 100}],
        "analysis": {"interval": "5s", "checkEvery": "1s", "failureLimit": 2, "maxNoData": "30s"},
        **spec,
    }
    obj: dict[str, Any] = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order", "namespace": "shop", "generation": 2, "resourceVersion": "7", "uid": "u1"},
        "spec": body,
    }
    if status is not None:
        obj["status"] = status
    return obj


def progressing(step_index: int = 1, weight: int = 30, started: datetime = T0) -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "observedGeneration": 2,
        "stepIndex": step_index,
        "stepLabel": f"{step_index + 1}/4",
        "canaryWeight": weight,
        "stepStartedAt": iso(started),
        "history": [{"stepIndex": 0, "weight": 10, "startedAt": iso(started - timedelta(seconds=8))}],
        "analysis": {
            "checkedAt": iso(started + timedelta(seconds=2)),
            "window": "4s",
            "verdict": "Pass",
            "requests": 288.4,
            "consecutiveFailures": 0,
            "metrics": [
                {
                    "name": "success-rate",
                    "value": 99.5,
                    "threshold": ">= 99",
                    "verdict": "Pass",
                    "query": SUCCESS_QUERY,
                },
                {
                    "name": "latency-p99",
                    "value": 85.2,
                    "threshold": "<= 500",
                    "verdict": "Pass",
                    "query": LATENCY_QUERY,
                },
            ],
        },
        "message": "step 2/4: canary at 30%",
    }


def rolled_back() -> dict[str, Any]:
    status = progressing()
    status.update(
        phase="RolledBack",
        canaryWeight=0,
        finishedAt=iso(T0 + timedelta(seconds=3)),
        rollback={
            "reason": "FailureLimit",
            "metric": "success-rate",
            "value": 79.77,
            "threshold": ">= 99",
            "query": SUCCESS_QUERY,
            "at": iso(T0 + timedelta(seconds=3)),
        },
        message=f"rolled back at step 2/4 (30%): success-rate 79.77% < 99%; query: {SUCCESS_QUERY}",
    )
    status["analysis"]["verdict"] = "Fail"
    status["analysis"]["consecutiveFailures"] = 2
    status["analysis"]["metrics"][0].update(value=79.77, verdict="Fail", reason="79.77% < 99%")
    return status


EVENTS = [
    render.EventRow(T0 + timedelta(seconds=3), "Warning", "RolledBack", f"rolled back; query: {SUCCESS_QUERY}"),
    render.EventRow(T0 - timedelta(seconds=8), "Normal", "RolloutStarted", "generation 2: v2 -> v3"),
    render.EventRow(T0, "Normal", "StepAdvanced", "canary 10% -> 30%"),
]


def test_progressing_shows_step_weights_and_time_left_in_the_hold() -> None:
    view = render.summarize(rollout(progressing()), [], T0 + timedelta(seconds=2))
    assert (view.phase, view.step, view.canary_weight) == ("Progressing", 2, 30)
    assert view.hold == timedelta(seconds=5)  # step 2 has no hold: analysis.interval
    assert view.hold_left == timedelta(seconds=3)
    assert (view.stable, view.canary) == ("order/v2", "order/v3")
    lines = render.to_lines(view)
    assert lines[0] == "shop/order: Progressing, step 2/4 at 30%, hold 5s, 3.0s left"
    assert "stable order/v2 70% [##############++++++] canary order/v3 30%" in lines[1]
    assert "10 -> [30] -> 50 -> 100" in lines[2]
    assert "289 canary requests" in lines[3] or "288 canary requests" in lines[3]
    assert any("success-rate" in line and "99.5 %" in line and ">= 99" in line and "Pass" in line for line in lines)
    assert any("latency-p99" in line and "85.2 ms" in line and "<= 500" in line for line in lines)


def test_first_step_uses_its_own_hold_and_an_elapsed_hold_says_it_waits_for_a_pass() -> None:
    view = render.summarize(rollout(progressing(0, 10)), [], T0 + timedelta(seconds=20))
    assert view.hold == timedelta(seconds=8)
    assert view.hold_left == timedelta(0)
    assert "hold 8s over, waiting for a passing check" in render.to_lines(view)[0]


def test_rollback_shows_reason_metric_value_threshold_and_query_once() -> None:
    view = render.summarize(rollout(rolled_back()), EVENTS, T0 + timedelta(seconds=10))
    assert view.hold_left is None
    text = "\n".join(render.to_lines(view))
    assert "shop/order: RolledBack, step 2/4 at 0%" in text
    assert "rolled back (FailureLimit): success-rate 79.77 % (threshold >= 99), 7.0s ago" in text
    assert "2/2 failed in a row" in text
    assert "Fail  (79.77% < 99%)" in text
    assert text.count(SUCCESS_QUERY) == 1  # the event and message do not repeat it


def test_events_are_oldest_first_with_ages_and_capped() -> None:
    many = [render.EventRow(T0 + timedelta(seconds=i), "Normal", f"R{i}", "m") for i in range(20)]
    view = render.summarize(rollout(progressing()), [*EVENTS, *many], T0 + timedelta(seconds=30))
    assert len(view.events) == render.MAX_EVENTS
    assert [e.reason for e in view.events] == [f"R{i}" for i in range(12, 20)]
    view = render.summarize(rollout(progressing()), EVENTS, T0 + timedelta(seconds=30))
    assert [e.reason for e in view.events] == ["RolloutStarted", "StepAdvanced", "RolledBack"]
    assert "38s ago  Normal  RolloutStarted" in "\n".join(render.to_lines(view))


@pytest.mark.parametrize(
    "status",
    [None, {}, {"phase": "Pending", "message": "waiting for VirtualService shop/order"}, {"phase": "Invalid"}],
)
def test_missing_or_partial_status_still_renders(status: dict[str, Any] | None) -> None:
    view = render.summarize(rollout(status), [], T0)
    lines = render.to_lines(view)
    assert lines[0].startswith("shop/order: ")
    assert "no check yet" in "\n".join(lines)
    _rich_text(render.to_renderable(view))


def test_default_steps_when_spec_has_none_and_stale_generation_is_flagged() -> None:
    obj = rollout(progressing())
    del obj["spec"]["steps"]
    obj["metadata"]["generation"] = 3
    view = render.summarize(obj, [], T0)
    assert view.step_weights == (10, 30, 50, 100)
    assert view.stale
    assert "older generation" in render.to_lines(view)[0]


def test_nan_and_missing_values_show_as_no_data() -> None:
    status = progressing()
    status["analysis"]["metrics"][0].update(value=None, verdict="NoData", reason="empty result or NaN")
    status["analysis"]["metrics"][1]["value"] = float("nan")
    view = render.summarize(rollout(status), [], T0)
    assert [m.value for m in view.metrics] == [None, None]
    assert "no data" in render.to_lines(view)[4]


def test_rich_renderable_has_the_bar_and_the_numbers() -> None:
    view = render.summarize(rollout(rolled_back()), EVENTS, T0 + timedelta(seconds=10))
    text = _rich_text(render.to_renderable(view))
    assert "RolledBack" in text
    assert "order/v2 100% " + "█" * render.BAR_WIDTH in text
    assert "79.77 %" in text
    assert ">= 99" in text
    assert "rolled back (FailureLimit)" in text


def test_plain_lines_have_no_control_codes() -> None:
    views = [render.summarize(rollout(s), EVENTS, T0) for s in (progressing(), rolled_back(), None)]
    text = "\n".join(render.all_lines(views, "shop"))
    assert "\x1b" not in text
    assert all(ch == "\n" or ch >= " " for ch in text)
    assert render.all_lines([], "shop") == ["no Rollouts in namespace shop"]


def test_fingerprint_ignores_the_clock_and_new_numbers_but_not_transitions() -> None:
    a = rollout(progressing())
    b = rollout(progressing())
    b["status"]["analysis"]["checkedAt"] = iso(T0 + timedelta(seconds=3))
    b["status"]["analysis"]["metrics"][0]["value"] = 99.7
    assert render.fingerprint(a, EVENTS) == render.fingerprint(b, EVENTS)
    assert render.fingerprint(a, EVENTS) != render.fingerprint(rollout(rolled_back()), EVENTS)
    assert render.fingerprint(a, EVENTS) != render.fingerprint(a, EVENTS[:2])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.2s"), (9.96, "10.0s"), (12.4, "12s"), (65, "1m05s"), (3725, "1h02m")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert render.format_seconds(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(("hold", "text"), [(5, "5s"), (60, "1m"), (120, "2m"), (3600, "1h"), (90, "1m30s")])
def test_format_hold(hold: int, text: str) -> None:
    assert render.format_hold(timedelta(seconds=hold)) == text


def _rich_text(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


def test_a_pause_shows_who_the_hold_it_keeps_and_the_command_that_resumes() -> None:
    status = progressing()  # step 2 (hold 5s) began at T0
    status["paused"] = {"since": iso(T0 + timedelta(seconds=2)), "by": "alice", "reason": "checking dashboards"}
    status["stepPausedFor"] = "1s"
    view = render.summarize(rollout(status), [], T0 + timedelta(seconds=60))
    assert view.hold_left == timedelta(seconds=4), "5s hold - 1s run (2s before this pause, 1s of it paused earlier)"
    lines = render.to_lines(view)
    assert lines[0] == "shop/order: Progressing, step 2/4 at 30%, hold 5s, PAUSED with 4.0s left"
    assert (
        "  WAITING  paused by alice 58s ago (checking dashboards); checks continue and a failing canary is still "
        "rolled back; resume: coalmine resume order -n shop"
    ) in lines
    assert "resume: coalmine resume order -n shop" in _rich_text(render.to_renderable(view))


def test_a_manual_step_past_its_hold_shows_the_command_that_promotes() -> None:
    steps = [{"weight": 10, "hold": "8s"}, {"weight": 30, "approval": "manual"}, {"weight": 100}]
    view = render.summarize(rollout(progressing(), steps=steps), [], T0 + timedelta(seconds=1))
    assert render.waiting(view) == ("", ""), "its hold is not over yet"
    view = render.summarize(rollout(progressing(), steps=steps), [], T0 + timedelta(seconds=20))
    lines = render.to_lines(view)
    assert "hold 5s over, waiting for promote" in lines[0]
    assert "  WAITING  step 2 waits for a person (approval: manual); promote: coalmine promote order -n shop" in lines
    assert "promote: coalmine promote order -n shop" in _rich_text(render.to_renderable(view))


def test_the_last_request_shows_what_it_did_or_why_it_was_refused() -> None:
    status = progressing()
    status["lastRequest"] = {
        "id": "6f1c",
        "verb": "promote",
        "full": True,
        "by": "bob",
        "handledAt": iso(T0 + timedelta(seconds=1)),
        "result": "Refused",
        "message": "the last check failed (success-rate 72.5% < 99%)",
    }
    view = render.summarize(rollout(status), [], T0 + timedelta(seconds=4))
    assert (
        "  request  promote --full by bob 3.0s ago: Refused: the last check failed (success-rate 72.5% < 99%)"
        in render.to_lines(view)
    )
    status["message"] = "pause by bob: step 2/4 stays at 30%"
    status["lastRequest"].update(verb="pause", full=False, result="Applied", message=status["message"])
    view = render.summarize(rollout(status), [], T0 + timedelta(seconds=4))
    assert "  request  pause by bob 3.0s ago: Applied" in render.to_lines(view), "said once, by the message"
    before = render.fingerprint(rollout(progressing()), [])
    assert render.fingerprint(rollout(status), []) != before, "a pipe watcher prints the request"


def test_each_webhook_shows_its_last_answer() -> None:
    status = progressing()
    status["webhooks"] = [
        {
            "name": "confirm",
            "type": "pre-step",
            "key": "g1/s2/x",
            "result": "Fail",
            "code": 503,
            "message": "not yet",
            "since": "2026-11-30T11:59:50Z",
            "at": "2026-11-30T11:59:58Z",
            "attempts": 3,
        }
    ]
    view = render.summarize(rollout(status), [], T0 + timedelta(seconds=2))
    assert view.webhooks == (("Fail", "confirm (pre-step) Fail HTTP 503 not yet, 3 calls, 4.0s ago"),)
    assert "  webhook  confirm (pre-step) Fail HTTP 503 not yet, 3 calls, 4.0s ago" in render.to_lines(view)


# --- strategies: the A/B step and readiness ------------------------------------------------------------

AB_STEPS = [
    {"match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}], "hold": "8s"},
    {"weight": 10},
    {"weight": 30},
    {"weight": 100},
]


def ab_step(**extra: Any) -> dict[str, Any]:
    """Step 1/4 (A/B) in progress: the owned route at 0 %, the operator's route `coalmine-order` in place."""
    status = progressing(0, 0)
    status.update({"matchRoute": "coalmine-order", "history": [], **extra})
    status["canary"] = {"host": "order", "subset": "v3"}
    return status


def test_an_ab_step_shows_its_route_name_and_match_and_labels_the_step() -> None:
    view = render.summarize(rollout(ab_step(), steps=AB_STEPS), [], T0 + timedelta(seconds=2))
    assert view.step_labels == ("A/B", "10", "30", "100")
    lines = render.to_lines(view)
    assert "[A/B] -> 10 -> 30 -> 100" in lines[2]
    assert (
        "  A/B      route coalmine-order ahead of primary: users with header cookie regex .*beta=1.* -> canary order/v3"
    ) in lines
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(render.to_renderable(view))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "A/B: route coalmine-order ahead of primary: users with header cookie regex .*beta=1.*" in text
    assert "[A/B] → 10 → 30 → 100" in text


def test_the_ab_route_is_shown_only_while_the_status_says_the_virtualservice_has_it() -> None:
    later = progressing(1, 10)  # step 2: the weights began, the operator removed its route
    view = render.summarize(rollout(later, steps=AB_STEPS), [], T0)
    assert view.side_routes == ()
    assert not any("coalmine-order" in line for line in render.to_lines(view))
    assert "A/B -> [10] -> 30 -> 100" in render.to_lines(view)[2]
    # A status of an older generation: the route is there with the match that generation wrote, not the spec's.
    stale = rollout(ab_step(observedGeneration=1), steps=AB_STEPS)
    (side,) = render.summarize(stale, [], T0).side_routes
    assert side.text == "route coalmine-order ahead of primary: the users its match selects -> canary order/v3"
    # A new status key changes what a pipe watcher prints.
    assert render.fingerprint(rollout(ab_step(), steps=AB_STEPS), []) != render.fingerprint(
        rollout(ab_step(matchRoute=None), steps=AB_STEPS), []
    )


def test_readiness_shows_ready_pods_against_what_the_step_needs() -> None:
    status = progressing()
    status["readiness"] = {"canaryReady": 2, "stableReady": 4, "needed": 1, "message": "canary 2 ready, ..."}
    view = render.summarize(rollout(status), [], T0 + timedelta(seconds=2))
    lines = render.to_lines(view)
    assert "  ready    canary 2 ready pods (needs 1), stable 4 ready" in lines
    assert not any("WAITING" in line for line in lines)
    # Not counted: the status says why, and the view says so.
    status["readiness"] = {"message": "not checked (order is not a Service here): shifts do not wait for ready pods"}
    lines = render.to_lines(render.summarize(rollout(status), [], T0))
    assert "  ready    not checked (order is not a Service here): shifts do not wait for ready pods" in lines
    # A finished rollout reads no pods: its last record is not shown as if it were current.
    done = rolled_back()
    done["readiness"] = {"canaryReady": 0, "stableReady": 4, "needed": 1}
    assert not any(line.startswith("  ready") for line in render.to_lines(render.summarize(rollout(done), [], T0)))


def test_a_shift_waiting_for_the_canarys_pods_says_so_with_the_numbers_and_the_deadline() -> None:
    status = ab_step(matchRoute=None)
    status["readiness"] = {"canaryReady": 0, "stableReady": 2, "needed": 1, "waitingSince": iso(T0)}
    body = rollout(status, steps=AB_STEPS, readiness={"minReady": 1, "timeout": "2m"})
    view = render.summarize(body, [], T0 + timedelta(seconds=30))
    lines = render.to_lines(view)
    assert lines[0] == "shop/order: Progressing, step 1/4 at 0%, hold 8s, counts once the canary has its ready pods"
    assert "  ready    canary 0 ready pods (needs 1), stable 2 ready" in lines
    waiting = next(line for line in lines if line.startswith("  WAITING"))
    assert "WaitingForCanary: 0 of 1 needed ready canary pods, for 30s; rolls back in 1m30s" in waiting
    assert "(readiness.timeout 2m)" in waiting
    assert "coalmine abort order -n shop" in waiting
    # The default timeout (10m) when the spec has no readiness.
    default = render.summarize(rollout(status, steps=AB_STEPS), [], T0 + timedelta(seconds=30))
    assert "rolls back in 9m30s (readiness.timeout 10m)" in render.waiting_text(default)
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(render.to_renderable(view))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "ready: canary 0 ready pods (needs 1), stable 2 ready" in text
    assert "WaitingForCanary: 0 of 1 needed ready canary pods" in text


def test_a_mirror_step_shows_its_kind_and_the_mirror_while_the_route_has_it() -> None:
    steps = [{"mirror": 100, "hold": "8s"}, {"weight": 10}, {"weight": 100}]
    status = progressing(0, 0)
    status["mirror"] = {"route": "primary", "percent": 100, "saved": {"mirror": {"host": "audit"}}, "active": True}
    lines = render.to_lines(render.summarize(rollout(status, steps=steps), [], T0))
    assert "[mirror 100%] -> 10 -> 100" in lines[2]
    side = next(line for line in lines if line.startswith("  mirror"))
    assert "primary: copies of 100% of its requests -> canary" in side
    assert "0% users (the route's own mirror kept, put back when the step ends)" in side
    status["mirror"]["active"] = False  # recorded, not yet written (write-ahead): nothing on the routes yet
    lines = render.to_lines(render.summarize(rollout(status, steps=steps), [], T0))
    assert not any(line.startswith("  mirror") for line in lines)
