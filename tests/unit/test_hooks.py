"""Webhooks in the pure core: which calls are due, and what recorded answers do to the step machine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from builders import T0, spec
from builders import rollout as make
from test_plan import Mesh, S, check, tick

from coalmine.core import hooks
from coalmine.core.models import Phase, Rollout, Verdict


def hook(name: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "url": f"http://{name}.shop.svc/", **extra}


def answer(r: Rollout, calls: list[hooks.Call], ok: bool, at: datetime, code: int | None = None) -> Rollout:
    results = [
        hooks.Result(c.webhook.name, c.key, hooks.PASS if ok else hooks.FAIL, at, at, code or (200 if ok else 503))
        for c in calls
    ]
    return r.model_copy(update={"status": hooks.fold(r, results)})


def test_pre_rollout_holds_the_start_until_a_2xx_then_starts() -> None:
    mesh = Mesh()
    r, _ = tick(make(spec(webhooks=[hook("accept", "pre-rollout", timeout="30s")])), mesh, T0)
    assert r.status.phase is Phase.PENDING
    assert "pre-rollout webhook accept" in (r.status.message or "")
    assert mesh.canary() == 0, "nothing moves before the webhook says yes"
    calls = hooks.due(r, T0)
    assert [(c.webhook.name, c.key) for c in calls] == [("accept", "g1")]
    assert calls[0].payload["webhook"] == {"name": "accept", "type": "pre-rollout", "key": "g1"}
    assert calls[0].payload["rollout"] == "order"
    assert calls[0].payload["namespace"] == "shop"
    r = answer(r, calls, False, T0 + S)
    assert hooks.due(r, T0 + 2 * S) == [], "asked again only after checkEvery"
    assert [c.key for c in hooks.due(r, T0 + 11 * S)] == ["g1"]
    r, _ = tick(r, mesh, T0 + 2 * S)
    assert r.status.phase is Phase.PENDING
    assert "HTTP 503" in (r.status.message or "")
    r = answer(r, hooks.due(r, T0 + 11 * S), True, T0 + 11 * S)
    r, _events = tick(r, mesh, T0 + 12 * S)
    assert r.status.phase is Phase.PROGRESSING
    assert mesh.canary() == 10
    assert r.status.webhooks[0].attempts == 2
    assert r.status.webhooks[0].since == T0 + S


def test_pre_rollout_past_its_timeout_does_not_start_and_says_why() -> None:
    mesh = Mesh()
    r, _ = tick(make(spec(webhooks=[hook("accept", "pre-rollout", timeout="5s")])), mesh, T0)
    r = answer(r, hooks.due(r, T0), False, T0 + S)
    r, _events = tick(r, mesh, T0 + 7 * S)
    assert r.status.phase is Phase.PENDING
    assert "did not answer 2xx within its timeout 5s" in (r.status.message or "")
    assert {c.type: c.reason for c in r.status.conditions}["Stalled"] == "WebhookFailed"
    assert hooks.due(r, T0 + 60 * S) == [], "given up: no more calls until the spec changes"
    assert mesh.canary() == 0


def test_a_refused_url_stops_the_start_at_once() -> None:
    mesh = Mesh()
    r, _ = tick(make(spec(webhooks=[hook("accept", "pre-rollout")])), mesh, T0)
    refused = hooks.Result("accept", "g1", hooks.REFUSED, T0, T0, None, "host x is not allowed")
    r = r.model_copy(update={"status": hooks.fold(r, [refused])})
    r, _ = tick(r, mesh, T0 + S)
    assert "was not called: host x is not allowed" in (r.status.message or "")
    assert {c.type: c.reason for c in r.status.conditions}["Stalled"] == "WebhookFailed"


def _at_step_one_ready(hooks_spec: list[dict[str, Any]]) -> tuple[Rollout, Mesh]:
    mesh = Mesh()
    r, _ = tick(make(spec(webhooks=hooks_spec)), mesh, T0)
    for second in (10, 20, 30):
        r, _ = tick(r, mesh, T0 + second * S, check(Verdict.PASS))
    return r, mesh


def test_pre_step_holds_the_weight_increase_and_checks_go_on() -> None:
    r, mesh = _at_step_one_ready([hook("confirm", "pre-step")])
    assert (r.status.step_index, mesh.canary()) == (0, 10), "held: no answer yet"
    assert "waiting for pre-step webhook confirm" in (r.status.message or "")
    assert {c.type: c.reason for c in r.status.conditions}["Reconciling"] == "WaitingForWebhook"
    calls = hooks.due(r, T0 + 30 * S)
    assert [c.webhook.name for c in calls] == ["confirm"]
    r = answer(r, calls, False, T0 + 31 * S)
    r, _ = tick(r, mesh, T0 + 40 * S, check(Verdict.PASS))
    assert r.status.step_index == 0
    assert "HTTP 503" in (r.status.message or "")
    # a failing check still rolls back while the webhook holds the step
    failing = r
    for second in (50, 60):
        failing, _ = tick(failing, mesh, T0 + second * S, check(Verdict.FAIL, 50.0))
    assert failing.status.phase is Phase.ROLLED_BACK
    assert mesh.canary() == 0


def test_pre_step_yes_moves_on() -> None:
    r, mesh = _at_step_one_ready([hook("confirm", "pre-step")])
    r = answer(r, hooks.due(r, T0 + 30 * S), True, T0 + 31 * S)
    r, _events = tick(r, mesh, T0 + 32 * S)
    assert r.status.step_index == 1
    assert mesh.canary() == 30
    assert hooks.step_gate(r) is not None, "a new step needs a new answer"


def test_gating_during_step_holds_only_when_gating() -> None:
    r, mesh = _at_step_one_ready([hook("load", "during-step")])
    assert r.status.step_index == 1, "not gating: recorded, never holds"
    r, mesh = _at_step_one_ready([hook("load", "during-step", gating=True)])
    assert r.status.step_index == 0
    assert "waiting for gating during-step webhook load" in (r.status.message or "")
    calls = hooks.during(r, T0 + 30 * S)
    r = answer(r, calls, True, T0 + 30 * S + timedelta(milliseconds=300))
    r, _ = tick(r, mesh, T0 + 31 * S)
    assert r.status.step_index == 1


def test_post_rollout_is_due_once_per_outcome() -> None:
    r, mesh = _at_step_one_ready([hook("done", "post-rollout")])
    for second in range(40, 200, 10):
        r, _ = tick(r, mesh, T0 + second * S, check(Verdict.PASS))
    assert r.status.phase is Phase.SUCCEEDED
    calls = hooks.due(r, T0 + 200 * S)
    assert [c.key.split("/")[1] for c in calls] == ["Succeeded"]
    r = answer(r, calls, True, T0 + 201 * S)
    assert hooks.due(r, T0 + 300 * S) == []


def test_bad_webhooks_are_invalid_naming_the_field() -> None:
    mesh = Mesh()
    bad = [hook("a", "pre-step"), hook("a", "post-rollout")]
    r, _ = tick(make(spec(webhooks=bad)), mesh, T0)
    assert r.status.phase is Phase.INVALID
    assert r.status.message == "invalid: spec.webhooks[1].name: 'a' is used twice"
    r, _ = tick(make(spec(webhooks=[hook("a", "pre-step", gating=True)])), mesh, T0)
    assert r.status.message == "invalid: spec.webhooks[0].gating: applies to during-step webhooks only, not pre-step"
    r, _ = tick(make(spec(webhooks=[hook("a", "pre-step", timeout="0s")])), mesh, T0)
    assert r.status.message == "invalid: spec.webhooks[0].timeout: must be longer than 0"
    assert mesh.canary() == 0
