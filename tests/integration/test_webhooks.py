"""Webhooks and notifications on the real stack: the operator as a process, a real API server,
Prometheus and meshsim, and real HTTP receivers on 127.0.0.1 (the test operator's --webhook-allow
lists 127.0.0.1/32; the default refuses it, which the last test checks).

Each test reads the VirtualService's weights (the status's word is not enough) and what the receivers
got: a gate holds the traffic where it is, a slow or dead receiver never delays a rollback, and each
post-rollout call and notification arrives once per event, also across an operator restart.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rollout_support import OperatorProcess, Shop, rollback_bound, rollback_deadline, ts

pytestmark = pytest.mark.integration

RPS = 150.0
ALLOW_LOOPBACK = ["--webhook-allow", "*.svc,127.0.0.1/32"]


@dataclass
class Got:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers per path (`answer`)."""

    url: str
    got: list[Got] = field(default_factory=list)
    answers: dict[str, tuple[int, float]] = field(default_factory=dict)  # path -> (status, delay s)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, status: int = 200, delay: float = 0.0) -> None:
        self.answers[path] = (status, delay)

    def calls(self, path: str) -> list[Got]:
        with self.lock:
            return [g for g in self.got if g.path == path]

    def wait(self, path: str, count: int, timeout: float) -> list[Got]:
        deadline = time.monotonic() + timeout
        while len(self.calls(path)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{path}: {len(self.calls(path))} calls after {timeout:.0f} s, wanted {count}")
            time.sleep(0.1)
        return self.calls(path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.got.append(
                    Got(self.path, body, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
                )
            status, delay = state.answers.get(self.path, (200, 0.0))
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"not yet")
            except OSError:
                pass  # the operator gave up waiting

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def dead_url() -> str:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"


def channels(tmp_path: Path, receiver: Receiver, default: list[dict[str, Any]] | None = None) -> list[str]:
    """--notifications-config with a slack, an msteams and a generic channel, all to the receiver."""
    path = tmp_path / "notifications.json"
    config = {
        "channels": {
            "team-shop": {"kind": "slack", "url": f"{receiver.url}/slack"},
            "team-teams": {"kind": "msteams", "url": f"{receiver.url}/teams"},
            "ops": {"kind": "generic", "url": f"{receiver.url}/generic"},
        },
        "default": default or [],
    }
    path.write_text(json.dumps(config))
    return ["--notifications-config", str(path)]


def hook(name: str, type_: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "url": url, **extra}


def record(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((w for w in status.get("webhooks") or [] if w["name"] == name), {})


def test_gates_hold_then_pass_post_rollout_and_notifications_once_across_a_restart(
    shop: Shop,
    meshsim: Any,
    receiver: Receiver,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    args = [*ALLOW_LOOPBACK, *channels(tmp_path, receiver)]
    op = operator_factory(shop.ns, args)
    receiver.answer("/pre-rollout", 503)
    receiver.answer("/pre-step", 503)
    shop.create_rollout(
        steps=[{"weight": 50, "hold": "2s"}, {"weight": 100}],
        webhooks=[
            hook("accept", "pre-rollout", f"{receiver.url}/pre-rollout", timeout="60s"),
            hook("confirm", "pre-step", f"{receiver.url}/pre-step", timeout="2s"),
            hook("load", "during-step", f"{receiver.url}/during", metadata={"cmd": "hey -z 1m"}),
            hook("done", "post-rollout", f"{receiver.url}/post"),
        ],
        notify=[{"channel": "team-shop", "on": ["Succeeded"]}, {"channel": "team-teams"}],
    )

    # pre-rollout: no 2xx, no start; asked again; then a 2xx starts it
    receiver.wait("/pre-rollout", 2, 60)
    status = shop.status()
    assert status["phase"] == "Pending"
    assert "pre-rollout webhook accept" in status["message"]
    assert "must answer 2xx before the first shift; last answer: HTTP 503" in status["message"]
    assert record(status, "accept")["result"] == "Fail"
    assert shop.primary_weights() == {"v1": 100}, "nothing moves before the pre-rollout webhook says yes"
    first = receiver.calls("/pre-rollout")[0].body
    assert first["webhook"] == {"name": "accept", "type": "pre-rollout", "key": "g1"}
    assert (first["rollout"], first["namespace"], first["phase"]) == ("order", shop.ns, "Pending")
    assert first["canary"] == {"host": "order", "subset": "v2"}
    receiver.answer("/pre-rollout", 200)
    shop.wait_for(lambda s: s.get("canaryWeight") == 50, 60, "at 50 % after the pre-rollout 2xx", op)

    # pre-step: the hold ends and checks pass, but 50 -> 100 waits for a 2xx; checks keep running
    status = shop.wait_for(
        lambda s: "waiting for pre-step webhook confirm" in (s.get("message") or ""), 60, "held by pre-step", op
    )
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Reconciling"] == "WaitingForWebhook"
    checked = ts(status["analysis"]["checkedAt"])
    shop.wait_for(lambda s: ts(s["analysis"]["checkedAt"]) > checked, 10, "checks go on while held", op)
    assert shop.primary_weights() == {"v1": 50, "v2": 50}
    assert len(receiver.calls("/pre-step")) >= 1
    shop.wait_for_event("WaitingForWebhook")
    receiver.answer("/pre-step", 200)
    status = shop.wait_for_phase("Succeeded", 60, op)
    assert shop.primary_weights() == {"v1": 0, "v2": 100}
    assert record(status, "confirm")["result"] == "Pass"

    # during-step: called at the checks, with the check's numbers and the metadata
    during = receiver.calls("/during")
    assert during, "during-step called at every check"
    assert during[-1].body["webhook"]["type"] == "during-step"
    assert during[-1].body["metadata"] == {"cmd": "hey -z 1m"}
    assert during[-1].body["metrics"]["results"], "the check's metrics"
    assert "authorization" not in during[-1].headers
    assert "cookie" not in during[-1].headers

    # post-rollout once; Succeeded to both subscribed channels, once each, with the documented shapes
    post = receiver.wait("/post", 1, 20)
    assert post[0].body["phase"] == "Succeeded"
    slack = receiver.wait("/slack", 1, 20)[0].body
    assert [b["type"] for b in slack["blocks"]][:2] == ["header", "section"]
    assert f"Rollout {shop.ns}/order succeeded" in slack["text"]
    assert f"coalmine status order -n {shop.ns}" in json.dumps(slack["blocks"])
    teams = receiver.wait("/teams", 1, 20)[0].body
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    shop.wait_for(
        lambda s: [n["result"] for n in s.get("notifications") or []] == ["Delivered", "Delivered"],
        20,
        "both notifications Delivered in the status",
        op,
    )

    # a restart (SIGKILL, then a new process) sends nothing again. To know the new process has ticked the
    # Rollout, move its routes by hand: the operator puts them back (and dispatches what the status asks).
    op.kill()
    again = operator_factory(shop.ns, args)
    index = shop.route_index("primary")
    shop.patch_vs(
        [
            {"op": "replace", "path": f"/spec/http/{index}/route/0/weight", "value": 50},
            {"op": "replace", "path": f"/spec/http/{index}/route/1/weight", "value": 50},
        ]
    )
    deadline = time.monotonic() + 60
    while shop.primary_weights() != {"v1": 0, "v2": 100}:
        assert time.monotonic() < deadline, f"the new operator did not restore the routes:\n{again.tail()}"
        time.sleep(0.2)
    time.sleep(3)
    assert shop.status()["phase"] == "Succeeded"
    assert "Traceback" not in again.tail(200)
    assert [len(receiver.calls(p)) for p in ("/post", "/slack", "/teams", "/generic")] == [1, 1, 1, 0]


def test_slow_and_dead_receivers_never_delay_a_rollback(
    shop: Shop,
    meshsim: Any,
    receiver: Receiver,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    receiver.answer("/slow", 200, delay=60)
    receiver.answer("/generic", 200, delay=30)
    op = operator_factory(shop.ns, [*ALLOW_LOOPBACK, *channels(tmp_path, receiver, [{"channel": "ops"}])])
    shop.create_rollout(
        steps=[{"weight": 30, "hold": "60s"}, {"weight": 100}],
        webhooks=[
            hook("slow-load", "during-step", f"{receiver.url}/slow", timeout="50s", gating=True),
            hook("dead-load", "during-step", dead_url()),
            hook("slow-post", "post-rollout", f"{receiver.url}/slow", timeout="3s"),
            hook("dead-post", "post-rollout", dead_url()),
        ],
    )
    shop.wait_for(lambda s: s.get("canaryWeight") == 30 and s.get("analysis"), 60, "at 30 % and checked", op)
    receiver.wait("/slow", 1, 10)  # a call in flight, unanswered for 60 s
    broken_at = time.monotonic()
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.5, p50_ms=40, p99_ms=120)
    deadline = broken_at + 30
    while shop.canary_weight() != 0:
        assert time.monotonic() < deadline, f"not rolled back after 30 s:\n{op.tail()}"
        time.sleep(0.02)
    latency = time.monotonic() - broken_at
    bound = rollback_bound(failure_limit=2, check_every=1.0, scrape_interval=1.0)
    limit = rollback_deadline(failure_limit=2, check_every=1.0, scrape_interval=1.0)
    print(f"\ndetection-to-rollback with slow and dead webhooks: {latency:.2f} s (README's bound {bound:.0f} s)")
    assert latency < limit, f"rollback took {latency:.1f} s with slow webhooks, over {limit:.0f} s"

    status = shop.wait_for_phase("RolledBack", 10, op)
    assert not record(status, "slow-load"), "rolled back while every slow call was still unanswered"
    assert record(status, "dead-load")["result"] == "Fail"
    assert "ConnectError" in record(status, "dead-load")["message"]
    # post-rollout: each called once for the rollback; the slow one gives up at its timeout
    deadline = time.monotonic() + 10
    while not [p for p in receiver.calls("/slow") if p.body["webhook"]["type"] == "post-rollout"]:
        assert time.monotonic() < deadline, "no post-rollout call after the rollback"
        time.sleep(0.1)
    during = [p for p in receiver.calls("/slow") if p.body["webhook"]["type"] == "during-step"]
    assert len(during) == 1, "a during-step webhook still answering is not called again"
    status = shop.wait_for(
        lambda s: (
            record(s, "slow-post").get("message") == "no answer within 3s"
            and record(s, "dead-post").get("result") == "Fail"
        ),
        15,
        "both post-rollout calls recorded",
        op,
    )
    assert record(status, "slow-post")["result"] == "Fail"
    # the default channel got the RolledBack notification (its answer is slow: still Pending)
    got = receiver.wait("/generic", 1, 10)
    assert got[0].body["event"] == "RolledBack"
    details = got[0].body["details"]
    assert details["Failed"].startswith("success-rate = ")
    assert "threshold >= 95" in details["Failed"]
    assert 'response_code!~"5.."' in details["Query"]
    assert details["More"] == f"coalmine status order -n {shop.ns}"
    assert details["Weights"] == "canary 0%, stable 100%"
    time.sleep(2)
    post_calls = [p for p in receiver.calls("/slow") if p.body["webhook"]["type"] == "post-rollout"]
    assert len(post_calls) == 1, "post-rollout once per rollback"


def test_the_default_allowlist_refuses_loopback_link_local_and_external(
    shop: Shop, receiver: Receiver, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = operator_factory(shop.ns)  # no --webhook-allow: the default, *.svc and *.svc.cluster.local
    port = receiver.url.rsplit(":", 1)[1]
    shop.create_rollout(
        webhooks=[
            hook("loopback", "pre-rollout", f"{receiver.url}/x"),
            hook("localhost", "pre-rollout", f"http://localhost:{port}/x"),
            hook("metadata", "pre-rollout", "http://169.254.169.254/latest/meta-data/"),
            hook("external", "pre-rollout", "https://example.com/hook"),
        ]
    )
    status = shop.wait_for(lambda s: len(s.get("webhooks") or []) == 4, 60, "four refusals recorded", op)
    refused = {w["name"]: w for w in status["webhooks"]}
    assert {w["result"] for w in refused.values()} == {"Refused"}
    assert "address 127.0.0.1 is not in --webhook-allow (*.svc,*.svc.cluster.local)" in refused["loopback"]["message"]
    assert "host localhost is not allowed" in refused["localhost"]["message"]
    assert "address 169.254.169.254 is not in --webhook-allow" in refused["metadata"]["message"]
    assert "host example.com is not allowed" in refused["external"]["message"]
    status = shop.wait_for(
        lambda s: {c["type"]: c["reason"] for c in s.get("conditions") or []}.get("Stalled") == "WebhookFailed",
        10,
        "Stalled WebhookFailed",
        op,
    )
    assert status["phase"] == "Pending"
    assert "pre-rollout webhook loopback" in status["message"]
    assert "was not called" in status["message"]
    assert shop.primary_weights() == {"v1": 100}, "nothing moved"
    assert receiver.got == [], "no request reached the receiver"
