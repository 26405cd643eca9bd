"""The allowlist (adapters/webhooks.Allowlist) and the notification messages, without a network.

Names are resolved by a stand-in resolver, so the rules are checked for addresses no test machine
has (a metadata endpoint, a public address); the real resolver and real receivers are exercised in
tests/integration/test_webhooks.py."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime

import pytest

from coalmine.adapters.webhooks import Allowlist, NotificationsConfig, Refused, Unresolved
from coalmine.core import notify
from coalmine.core.models import NotificationStatus, NotifyEvent

DNS = {
    "hooks.shop.svc": ["10.96.0.12"],
    "hooks.shop.svc.cluster.local": ["10.96.0.12"],
    "sneaky.shop.svc": ["169.254.169.254"],
    "local.shop.svc": ["127.0.0.1"],
    "both.shop.svc": ["10.96.0.13", "127.0.0.1"],
    "example.com": ["93.184.215.14"],
}


async def fake_resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(a) for a in DNS.get(host, [])]


def check(allow: Allowlist, url: str) -> str:
    try:
        _, address = asyncio.run(allow.check(url, fake_resolve))
    except Refused as exc:
        return f"refused: {exc}"
    return str(address)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://hooks.shop.svc/gate", "10.96.0.12"),
        ("https://hooks.shop.svc.cluster.local:8443/x", "10.96.0.12"),
        ("http://example.com/", "refused: http://example.com/: host example.com is not allowed"),
        ("http://127.0.0.1:8080/", "refused: http://127.0.0.1:8080/: address 127.0.0.1 is not in --webhook-allow"),
        ("http://[::1]/", "refused: http://[::1]/: address ::1 is not in --webhook-allow"),
        ("http://169.254.169.254/latest/meta-data", "refused: http://169.254.169.254/latest/meta-data: address"),
        ("http://sneaky.shop.svc/", "refused: http://sneaky.shop.svc/: sneaky.shop.svc resolves to link-local"),
        ("http://local.shop.svc/", "refused: http://local.shop.svc/: local.shop.svc resolves to loopback"),
        ("http://both.shop.svc/", "refused: http://both.shop.svc/: both.shop.svc resolves to loopback"),
        ("http://user:pw@hooks.shop.svc/", "refused: http://hooks.shop.svc/: a URL with credentials"),
        ("file:///etc/passwd", "refused: file:///etc/passwd: only http and https"),
        ("http://hooks.shop.svc.evil.com/", "refused: http://hooks.shop.svc.evil.com/: host"),
    ],
)
def test_the_default_allows_in_cluster_services_only(url: str, expected: str) -> None:
    assert check(Allowlist(), url).startswith(expected)


def test_a_name_that_does_not_resolve_is_not_a_refusal() -> None:
    """A Service not created yet (Git applied the Rollout first) is a failed call, asked again; not a refusal."""
    with pytest.raises(Unresolved, match=r"gone.shop.svc does not resolve"):
        asyncio.run(Allowlist().check("http://gone.shop.svc/", fake_resolve))


def test_a_listed_network_allows_loopback() -> None:
    allow = Allowlist.parse("*.svc, 127.0.0.1/32")
    assert check(allow, "http://127.0.0.1:9/") == "127.0.0.1"
    assert check(allow, "http://local.shop.svc/") == "127.0.0.1"
    assert check(allow, "http://sneaky.shop.svc/").startswith("refused"), "link-local still refused"
    assert str(allow) == "*.svc,127.0.0.1/32"


def test_bad_allowlist_entries_are_named() -> None:
    with pytest.raises(ValueError, match=r"entry 'http://x' is neither"):
        Allowlist.parse("*.svc,http://x")


def test_notifications_config_errors_name_the_file_and_field(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "n.json"  # type: ignore[operator]
    path.write_text('{"channels": {"ops": {"kind": "pager", "url": "http://x"}}}')
    with pytest.raises(ValueError, match=r"n.json: channels.ops.kind: Input should be 'slack', 'msteams' or"):
        NotificationsConfig.load(str(path))
    path.write_text('{"channels": {}, "default": [{"channel": "ops"}]}')
    with pytest.raises(ValueError, match=r"default names channel 'ops', not in channels"):
        NotificationsConfig.load(str(path))
    with pytest.raises(ValueError, match=r"missing.json: No such file"):
        NotificationsConfig.load(str(tmp_path / "missing.json"))  # type: ignore[operator]


ENTRY = NotificationStatus(
    id="shop/order/g2/RolledBack/2026-12-01T10:00:00.000Z",
    event=NotifyEvent.ROLLED_BACK,
    channel="team-shop",
    message="rolled back at step 2/4 (30%): success-rate 60% < 95%",
    details={
        "Release": "shop/order: v1 -> v2 (generation 2)",
        "Weights": "canary 0%, stable 100%",
        "Failed": "success-rate = 60 (threshold >= 95%)",
        "Query": 'sum(rate(istio_requests_total{response_code!~"5.."}[10s]))',
        "More": "coalmine status order -n shop",
    },
    at=datetime(2026, 12, 1, 10, tzinfo=UTC),
)


def test_slack_message_is_block_kit() -> None:
    body = notify.slack(ENTRY)
    assert body["text"].startswith("Rollout shop/order rolled back: ")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    fields = body["blocks"][2]["fields"]
    assert {"type": "mrkdwn", "text": "*More*\n`coalmine status order -n shop`"} in fields


def test_teams_message_is_an_adaptive_card() -> None:
    body = notify.msteams(ENTRY)
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Failed"] == "success-rate = 60 (threshold >= 95%)"


def test_events_are_queued_once_per_subscribed_channel_and_delivered_entries_stay_delivered() -> None:
    from coalmine.core.models import RolloutStatus, Subscription
    from coalmine.core.plan import Event, EventType, Reason

    at = datetime(2026, 12, 1, 10, tzinfo=UTC)
    events = [
        Event(EventType.WARNING, Reason.ROLLED_BACK, "rolled back at step 2/4"),
        Event(EventType.NORMAL, Reason.STEP_ADVANCED, "not a notification"),
    ]
    subs = [Subscription(channel="ops", on=(NotifyEvent.ROLLED_BACK,)), Subscription(channel="team", on=())]
    status = notify.queue(None, RolloutStatus(), 2, events, subs, at, namespace="shop", name="order")
    assert [(n.channel, n.event, n.result) for n in status.notifications] == [
        ("ops", NotifyEvent.ROLLED_BACK, "Pending")
    ]
    again = notify.queue(None, status, 2, events, subs, at, namespace="shop", name="order")
    assert again.notifications == status.notifications, "the same event at the same time is queued once"
    (entry,) = notify.pending(status)
    done = notify.Outcome(entry.id, entry.channel, notify.DELIVERED, 1, at)
    status = notify.fold(status, [done])
    assert notify.pending(status) == []
    failed = notify.Outcome(entry.id, entry.channel, notify.FAILED, 5, at, "HTTP 500")
    assert notify.fold(status, [failed]) == status, "a Delivered entry is never changed again"
