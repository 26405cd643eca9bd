"""reconcile.tick with fake ports: the order of writes, and what a conflict does.

The fakes record calls; they stand in for the API server and Prometheus only to pin down the
shell's sequencing (the real ones are exercised in tests/integration).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import jsonpatch
import pytest
from builders import T0, destination_rule, spec, virtual_service

from coalmine import reconcile
from coalmine.adapters.kube import Conflict, Gone, Refused, Unavailable
from coalmine.core import plan
from coalmine.core.analysis import Query, Sample
from coalmine.core.models import REQUEST_ANNOTATION, Ref, Request
from coalmine.core.validation import Workloads


class FakeKube:
    def __init__(self, vs: dict[str, Any]) -> None:
        self.vs = vs
        self.calls: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.conflict_status = False
        self.gone = False
        self.refuse = ""
        self.unavailable = ""
        self.conflicts = 0

    async def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.vs)

    read_virtual_service = get_virtual_service

    async def list_destination_rules(self, namespace: str, hosts: Any = None) -> list[dict[str, Any]]:
        return [destination_rule()]

    async def get_workloads(self, namespace: str) -> None:
        return None  # not watched: readiness is not judged (tests/unit/test_readiness_core.py judges it)

    async def patch_virtual_service(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append("vs")
        if self.unavailable:
            raise Unavailable(self.unavailable)
        if self.refuse:
            raise Refused(self.refuse)
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict("changed concurrently")
        self.vs = jsonpatch.apply_patch(self.vs, ops)
        return self.vs

    async def patch_rollout_status(self, namespace: str, name: str, rv: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"status@{rv}")
        self.statuses.append(status)
        if self.gone:
            raise Gone(f"Rollout {namespace}/{name} was deleted since resourceVersion {rv}")
        if self.conflict_status:
            raise Conflict("stale")
        return {
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(int(rv) + 1)},
            "status": status,
        }

    async def post_event(self, ref: Ref, *, type_: str, reason: str, message: str, now: datetime) -> None:
        self.calls.append(f"event:{reason}")

    # the router-generic names reconcile.py calls (a VirtualService here)
    async def get_route(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_virtual_service(namespace, name)

    read_route = get_route

    async def patch_route(self, plural: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.patch_virtual_service(namespace, name, ops)

    async def get_labels(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        return {}  # no mesh labels: the preflight finds nothing to say


class FakePrometheus:
    def __init__(self, success_rate: float) -> None:
        self.success_rate = success_rate

    async def ask(self, address: str, queries: list[Query], *, at: datetime) -> dict[str, Sample]:
        values = {"requests": 500.0, "success-rate": self.success_rate, "latency-p99": 80.0, "circuit-breaker": 0.0}
        values["circuit-breaker@unknown"] = 0.0
        stable = {"requests@stable": 1167.0, "success-rate@stable": 99.9, "latency-p99@stable": 80.0}
        return {q.name: Sample({**values, **stable}[q.name]) for q in queries}


def _body(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "order", "namespace": "shop", "generation": 1, "resourceVersion": "41"},
        "spec": spec(),
        "status": status,
    }


def _ports(kube: FakeKube, prometheus: FakePrometheus, now: datetime) -> reconcile.Ports:
    return reconcile.Ports(
        kube=kube,  # type: ignore[arg-type]
        prometheus=prometheus,  # type: ignore[arg-type]
        settings=reconcile.Settings(
            prometheus_url="http://prometheus:9090", scrape_interval=timedelta(seconds=1), resync=timedelta(seconds=60)
        ),
        clock=lambda: now,
    )


def _progressing(failures: int) -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "observedGeneration": 1,
        "stepIndex": 1,
        "stepLabel": "2/4",
        "canaryWeight": 30,
        "stable": {"host": "order", "subset": "v1"},
        "canary": {"host": "order", "subset": "v2"},
        "stepStartedAt": "2026-11-30T12:00:00.000Z",
        "startedAt": "2026-11-30T11:59:00.000Z",
        "analysis": {
            "checkedAt": "2026-11-30T12:00:10.000Z",
            "window": "10s",
            "verdict": "Fail",
            "consecutiveFailures": failures,
        },
    }


async def test_rollback_writes_status_then_traffic_then_events() -> None:
    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    outcome = await reconcile.tick(
        _body(_progressing(1)), _ports(kube, FakePrometheus(50.0), T0 + timedelta(seconds=20))
    )
    assert kube.calls == ["status@41", "vs", "status@42", "event:RolledBack"]
    assert kube.statuses[0]["phase"] == "RollingBack", "the decision is on record before traffic moves"
    assert outcome.body is not None
    assert outcome.body["status"]["phase"] == "RolledBack"
    assert outcome.body["status"]["canaryWeight"] == 0, "recorded once the routes have it"
    assert [d["weight"] for d in kube.vs["spec"]["http"][1]["route"]] == [100, 0]


async def test_a_stale_status_write_moves_no_traffic() -> None:
    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    kube.conflict_status = True
    outcome = await reconcile.tick(
        _body(_progressing(1)), _ports(kube, FakePrometheus(50.0), T0 + timedelta(seconds=20))
    )
    assert kube.calls == ["status@41"], "another writer decided first: this one does nothing"
    assert outcome.body is None
    assert outcome.wake_at is not None


async def test_a_rollout_deleted_before_its_status_write_is_gone_not_retried() -> None:
    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    kube.gone = True
    outcome = await reconcile.tick(
        _body(_progressing(1)), _ports(kube, FakePrometheus(50.0), T0 + timedelta(seconds=20))
    )
    assert kube.calls == ["status@41"], "no traffic moved for a Rollout that no longer exists"
    assert outcome.gone
    assert (outcome.body, outcome.wake_at) == (None, None), "nothing to record and no retry"


async def test_a_tick_with_nothing_to_do_writes_nothing() -> None:
    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    await reconcile.tick(_body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12)))
    assert kube.calls == []


async def test_traffic_reverted_by_someone_else_is_put_back() -> None:
    kube = FakeKube(virtual_service(stable_weight=100))
    await reconcile.tick(_body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12)))
    assert kube.calls == ["vs"], "the status already says 30, which the routes have again"
    assert [d["weight"] for d in kube.vs["spec"]["http"][1]["route"]] == [70, 30]


async def test_a_refused_write_is_reported_not_retried_as_a_conflict() -> None:
    kube = FakeKube(virtual_service(stable_weight=100))
    kube.refuse = 'admission webhook "validation.istio.io" denied the request: weight 30 < 0'
    outcome = await reconcile.tick(
        _body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12))
    )
    assert kube.calls == ["vs", "status@41", "event:TrafficNotMoved"], "one attempt, no re-read loop"
    assert outcome.status is not None
    assert outcome.status.canary_weight == 0, "the routes still give the canary 0, and the status says so"
    assert "denied the request: weight 30 < 0" in (outcome.status.message or "")
    assert outcome.wake_at is not None


async def test_a_concurrent_edit_is_re_read_and_the_write_retried() -> None:
    kube = FakeKube(virtual_service(stable_weight=100))
    kube.conflicts = 2
    await reconcile.tick(_body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12)))
    assert kube.calls == ["vs", "vs", "vs"]
    assert [d["weight"] for d in kube.vs["spec"]["http"][1]["route"]] == [70, 30]


async def test_a_spec_the_crd_would_refuse_is_invalid_with_the_field() -> None:
    kube = FakeKube(virtual_service())
    body = _body({})
    body["spec"]["steps"][0]["hold"] = "soon"
    outcome = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), T0))
    assert outcome.body is not None
    assert outcome.body["status"]["phase"] == "Invalid"
    assert "spec.steps[0].hold" in outcome.body["status"]["message"]
    assert "vs" not in kube.calls


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}),
        ({"a": [1, 2]}, {"a": [2]}, {"a": [2]}),
        ({}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert reconcile.merge_patch(old, new) == patch


async def test_a_webhook_that_is_down_is_reported_and_retried_with_backoff() -> None:
    """A 500 from a failing admission webhook is neither a refusal of this write nor a concurrent edit."""
    kube = FakeKube(virtual_service(stable_weight=100))
    kube.unavailable = 'Internal error occurred: failed calling webhook "validation.istio.io": connection refused'
    outcome = await reconcile.tick(
        _body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12))
    )
    assert kube.calls == ["vs", "status@41", "event:TrafficNotMoved"]
    assert outcome.status is not None
    assert "could not take the write now" in (outcome.status.message or "")
    assert outcome.status.traffic_retry_at is not None, "retried after a backoff, not in a hot loop"


def _http_route(accepted: bool) -> dict[str, Any]:
    conditions = [
        {"type": kind, "status": "True", "observedGeneration": 4, "reason": kind}
        for kind in ("Accepted", "ResolvedRefs")
    ]
    return {
        "metadata": {"name": "order", "namespace": "shop", "generation": 4, "resourceVersion": "9"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "order"}],
            "rules": [
                {
                    "name": "primary",
                    "backendRefs": [{"name": "order-v1", "weight": 70}, {"name": "order-v2", "weight": 30}],
                }
            ],
        },
        "status": {"parents": [{"parentRef": {"kind": "Service", "name": "order"}, "conditions": conditions}]}
        if accepted
        else {},
    }


@pytest.mark.parametrize("accepted", [True, False])
async def test_an_httproute_step_counts_only_once_its_controller_accepted_it(accepted: bool) -> None:
    body = _body({**_progressing(0), "stable": {"host": "order-v1"}, "canary": {"host": "order-v2"}})
    route_spec = {k: v for k, v in spec().items() if k != "virtualService"}
    body["spec"] = {
        **route_spec,
        "httpRoute": {"name": "order", "rules": ["primary"]},
        "stable": {"host": "order-v1"},
        "canary": {"host": "order-v2"},
    }
    body["status"]["analysis"]["verdict"] = "Pass"
    if not accepted:  # as the tick that wrote 30 % left it
        why = "waiting for the route controller: HTTPRoute shop/order: no route controller has reported"
        stalled = {"type": "Stalled", "status": "True", "reason": "TrafficNotMoved", "message": why}
        body["status"]["conditions"] = [{**stalled, "lastTransitionTime": "2026-11-30T12:00:01.000Z"}]
    kube = FakeKube(_http_route(accepted))
    outcome = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=40)))
    assert outcome.status is not None
    if accepted:
        assert outcome.status.step_index == 2, "hold over, check passed, route accepted: next step"
        assert [b["weight"] for b in kube.vs["spec"]["rules"][0]["backendRefs"]] == [50, 50]
    else:
        assert outcome.status.step_index == 1, "the step does not count while the route is not accepted"
        assert outcome.status.canary_weight == 30, "the status says what the route has"
        stalled = next(c for c in outcome.status.conditions if c.type == "Stalled")
        assert (stalled.status, stalled.reason) == ("True", "TrafficNotMoved")
        assert "no route controller has reported on generation 4" in stalled.message
        assert "not taken in 30s" in stalled.message, "39 s after the write, the message asks for a controller"
        assert "vs" not in kube.calls, "nothing to write: the route has the weight"


async def test_a_rollback_queues_its_notification_in_the_same_write_and_webhook_answers_are_folded_in() -> None:
    """The shell's part of webhooks and notifications: a RolledBack notification is in the status write that
    records RolledBack (write-ahead), the dispatcher is handed it, and an answer the dispatcher holds is
    recorded by the next tick (the patch is computed from the status as read)."""
    from coalmine.adapters.webhooks import Dispatcher, NotificationsConfig
    from coalmine.core import hooks
    from coalmine.core.models import Subscription, format_time

    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    now = T0 + timedelta(seconds=20)
    handed: list[str] = []
    dispatcher = Dispatcher(config=NotificationsConfig(default=(Subscription(channel="ops"),)), clock=lambda: now)
    dispatcher.deliver = lambda key, uid, entries: handed.extend(f"{e.event}/{e.channel}" for e in entries)  # type: ignore[method-assign]
    dispatcher.call = lambda key, uid, calls: handed.extend(f"call:{c.webhook.name}" for c in calls)  # type: ignore[method-assign]
    ports = replace(_ports(kube, FakePrometheus(50.0), now), dispatcher=dispatcher)
    body = _body(_progressing(1))
    body["spec"]["webhooks"] = [{"name": "done", "type": "post-rollout", "url": "http://log.ops.svc/"}]
    outcome = await reconcile.tick(body, ports)
    assert outcome.body is not None
    written = kube.statuses[-1]
    assert written["phase"] == "RolledBack"
    assert [(n["event"], n["channel"], n["result"]) for n in written["notifications"]] == [
        ("RolledBack", "ops", "Pending")
    ]
    assert handed == ["call:done", "RolledBack/ops"]

    # the post-rollout answer comes back; the next tick records it (from the status as written)
    def apply(old: Any, patch: Any) -> Any:  # RFC 7386
        if not isinstance(patch, dict):
            return patch
        new = dict(old) if isinstance(old, dict) else {}
        for k, v in patch.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = apply(new.get(k), v)
        return new

    status = body["status"]
    for patch in kube.statuses:
        status = apply(status, patch)
    key = f"g1/RolledBack/{format_time(now)}"
    assert status["finishedAt"] == format_time(now)
    dispatcher._results[""] = {"done": hooks.Result("done", key, hooks.PASS, now, now, 200, "ok")}
    await reconcile.tick({**body, "metadata": {**body["metadata"], "resourceVersion": "43"}, "status": status}, ports)
    assert kube.statuses[-1] == {
        "webhooks": [
            {
                "name": "done",
                "type": "post-rollout",
                "key": key,
                "result": "Pass",
                "code": 200,
                "message": "ok",
                "since": format_time(now),
                "at": format_time(now),
                "attempts": 1,
            }
        ]
    }, "only the answer is new: the patch is from the status as read"


class KubeWithPods(FakeKube):
    """The namespace's workloads as the watch delivers them: Service order with two ready v1 pods, no v2 pod."""

    def __init__(self, vs: dict[str, Any]) -> None:
        super().__init__(vs)
        self.workload_reads = 0

    async def get_workloads(self, namespace: str) -> Workloads:  # type: ignore[override]
        self.workload_reads += 1
        return Workloads(
            selectors={"order": True},
            endpoints={"order": [(True, "order-v1-a"), (True, "order-v1-b")]},
            pod_labels={"order-v1-a": {"version": "v1"}, "order-v1-b": {"version": "v1"}},
        )


async def test_a_retry_of_a_rolled_back_rollout_waits_for_the_canarys_ready_pods() -> None:
    """A finished rollout reads no pods, but a retry starts it again: the start must be gated like any other."""
    kube = KubeWithPods(virtual_service(stable_weight=100, canary_weight=0))
    status = {
        **_progressing(2),
        "phase": "RolledBack",
        "canaryWeight": 0,
        "rollback": {"reason": "FailureLimit", "at": "2026-11-30T12:00:10.000Z", "message": "step 2/4 (30%)"},
        "finishedAt": "2026-11-30T12:00:10.000Z",
    }
    body = _body(status)
    body["spec"]["steps"] = [{"match": [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]}, {"weight": 100}]
    request = Request(id="r1", verb="retry", by="admin", at=T0)
    body["metadata"]["annotations"] = {REQUEST_ANNOTATION: request.to_annotation()}
    outcome = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=20)))
    assert kube.workload_reads == 1, "the retry's start read the workloads"
    assert outcome.body is not None
    assert outcome.body["status"]["phase"] == "Progressing"
    assert outcome.body["status"]["readiness"]["waitingSince"], "the A/B step waits for the canary's pods"
    assert "coalmine-order" not in [r.get("name") for r in kube.vs["spec"]["http"]], "no A/B route to 0 ready pods"
    assert [d["weight"] for d in kube.vs["spec"]["http"][-1]["route"]] == [100, 0]
    # Without a request, a finished rollout still lists no pods.
    kube = KubeWithPods(virtual_service(stable_weight=100, canary_weight=0))
    await reconcile.tick(_body(status), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=20)))
    assert kube.workload_reads == 0


class CountingPrometheus(FakePrometheus):
    def __init__(self) -> None:
        super().__init__(99.9)
        self.asks = 0

    async def ask(self, address: str, queries: list[Query], *, at: datetime) -> dict[str, Sample]:
        self.asks += 1
        return await super().ask(address, queries, at=at)


def _passed_at_10s() -> dict[str, Any]:
    status = _progressing(0)
    status["analysis"]["verdict"] = "Pass"
    status["analysis"]["window"] = "10s"
    return status


async def test_a_routine_pass_not_written_still_moves_the_next_check_to_its_grid_point() -> None:
    """A pass after a recorded pass is not written (plan._routine_pass). A tick between grid points (a hold's
    end, a watch event) must not take the status's older check for the last one and check again off the
    grid: the caller hands back the tick's `checked_at`, which sets the next check and decides nothing."""
    kube, prometheus = FakeKube(virtual_service(stable_weight=70, canary_weight=30)), CountingPrometheus()
    grid = T0 + timedelta(seconds=20, milliseconds=50)
    routine = await reconcile.tick(_body(_passed_at_10s()), _ports(kube, prometheus, grid))
    assert (prometheus.asks, kube.calls) == (1, []), "checked, and the routine pass not written"
    assert routine.checked_at == grid
    assert not routine.settled, "nothing written, but in flight: its next tick depends on time"

    between = T0 + timedelta(seconds=27)
    told = await reconcile.tick(_body(_passed_at_10s()), _ports(kube, prometheus, between), checked=routine.checked_at)
    assert prometheus.asks == 1, "no second check 7 s after the first"
    assert told.wake_at == T0 + timedelta(seconds=30), "the next grid point"
    assert kube.calls == []

    untold = await reconcile.tick(_body(_passed_at_10s()), _ports(kube, prometheus, between))
    assert prometheus.asks == 2, "without it, the status alone says a check is due (a restarted operator)"
    assert untold.checked_at == between


async def test_a_check_whose_status_write_lost_to_another_writer_is_not_remembered() -> None:
    """The write conflicted, so nothing was decided on that check: the next tick checks again."""
    kube, prometheus = FakeKube(virtual_service(stable_weight=70, canary_weight=30)), CountingPrometheus()
    kube.conflict_status = True
    outcome = await reconcile.tick(_body(_progressing(1)), _ports(kube, prometheus, T0 + timedelta(seconds=20)))
    assert prometheus.asks == 1
    assert kube.calls == ["status@41"]
    assert outcome.checked_at is None


async def test_check_lag_is_measured_from_the_rollouts_own_grid_point() -> None:
    """coalmine_check_lag_seconds: how long after its due point (checkEvery, at the Rollout's offset) a
    check's answers were in. A Rollout whose uid puts its checks 7 s into each 10 s, checked 0.25 s after
    its point, lags 0.25 s (measured on the epoch's grid it would have read 7.25 s)."""
    uid = next(
        f"uid-{i}" for i in itertools.count() if plan.check_offset(f"uid-{i}", timedelta(seconds=10)).seconds == 7
    )
    body = _body(_passed_at_10s())
    body["metadata"]["uid"] = uid
    seen: list[tuple[str, float]] = []
    ports = replace(
        _ports(FakeKube(virtual_service(stable_weight=70, canary_weight=30)), CountingPrometheus(), T0),
        observe=lambda phase, seconds: seen.append((phase, seconds)),
    )
    # Last checked at 10 s: its next point is 17 s (the first at or after half a period later), not 20 s.
    early = await reconcile.tick(body, replace(ports, clock=lambda: T0 + timedelta(seconds=16)))
    assert early.checked_at is None, "not due yet"
    assert early.wake_at == T0 + timedelta(seconds=17)
    checked = await reconcile.tick(body, replace(ports, clock=lambda: T0 + timedelta(seconds=17, milliseconds=250)))
    assert checked.checked_at == T0 + timedelta(seconds=17, milliseconds=250)
    assert [s for phase, s in seen if phase == "check_lag"] == [0.25]


def _finished(phase: str, weight: int) -> dict[str, Any]:
    status = _progressing(0)
    status.update(phase=phase, canaryWeight=weight, stepIndex=3, stepLabel="4/4")
    status["analysis"]["verdict"] = "Pass" if phase == "Succeeded" else "Fail"
    return status


@pytest.mark.parametrize(("phase", "weight"), [("Succeeded", 100), ("RolledBack", 0)])
async def test_a_finished_rollout_with_nothing_to_do_is_settled_and_one_that_wrote_is_not(
    phase: str, weight: int
) -> None:
    """Outcome.settled lets the runtime skip resyncs until something the tick reads changes
    (tests/unit/test_runtime.py): only a finished Rollout's tick that wrote, attempted and posted nothing."""
    at = T0 + timedelta(minutes=5)
    kube = FakeKube(virtual_service(stable_weight=100 - weight, canary_weight=weight))
    quiet = await reconcile.tick(_body(_finished(phase, weight)), _ports(kube, FakePrometheus(99.9), at))
    assert (kube.calls, quiet.settled) == ([], True)

    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))  # someone moved the route
    moved = await reconcile.tick(_body(_finished(phase, weight)), _ports(kube, FakePrometheus(99.9), at))
    assert kube.calls == ["vs"]
    assert not moved.settled, "it wrote: the write's echo must be read before resting"

    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    kube.refuse = "forbidden"
    refused = await reconcile.tick(_body(_finished(phase, weight)), _ports(kube, FakePrometheus(99.9), at))
    assert not refused.settled, "a refused write is tried again on time (RBAC may be fixed)"
    assert refused.status is not None
    assert refused.status.traffic_retry_at is not None
    body = _body({**_finished(phase, weight), **refused.status.to_wire()})
    waiting = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), at + timedelta(milliseconds=100)))
    assert kube.calls.count("vs") == 1, "before its retry time: not tried, nothing written"
    assert not waiting.settled, "yet it waits for time: not settled"
    again = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), at + timedelta(minutes=1)))
    assert kube.calls.count("vs") == 2
    assert not again.settled, "still refused: still not settled"


async def test_a_rollout_in_flight_is_never_settled() -> None:
    kube = FakeKube(virtual_service(stable_weight=70, canary_weight=30))
    outcome = await reconcile.tick(
        _body(_progressing(0)), _ports(kube, FakePrometheus(99.9), T0 + timedelta(seconds=12))
    )
    assert kube.calls == []
    assert not outcome.settled, "a progressing Rollout's next tick depends on time (holds, checks)"


async def test_a_finished_rollout_with_a_notification_pending_is_not_settled() -> None:
    """Its delivery is retried on time (the dispatcher's backoff), so its ticks must go on."""
    status = _finished("RolledBack", 0)
    status["notifications"] = [
        {
            "id": "RolledBack/2026-11-30T12:00:30Z",
            "event": "RolledBack",
            "channel": "team",
            "message": "rolled back",
            "at": "2026-11-30T12:00:30.000Z",
        }
    ]
    kube = FakeKube(virtual_service(stable_weight=100, canary_weight=0))
    outcome = await reconcile.tick(_body(status), _ports(kube, FakePrometheus(99.9), T0 + timedelta(minutes=5)))
    assert kube.calls == []
    assert not outcome.settled
