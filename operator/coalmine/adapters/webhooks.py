"""Outgoing HTTP: the Rollouts' webhooks and the operator's notification channels, off the tick.

A webhook URL is written by whoever may write a Rollout, so without care the operator is a request
proxy into the cluster network and to the cloud metadata endpoint. Every webhook call therefore goes
through the `Allowlist` (--webhook-allow): the URL must be http(s) without credentials, its host must
match a name pattern (default `*.svc`, `*.svc.cluster.local`) or be an address in a listed network,
and every address the name resolves to is checked: loopback, link-local, unspecified and multicast
addresses are refused unless a listed network holds them. The call then goes to the checked address
(the name is not resolved a second time, so DNS cannot swap it in between), with the Host header and
TLS server name of the URL. Redirects are never followed, at most MAX_BODY bytes of an answer are read,
no credentials, cookies or proxy settings are used, and each call is bounded by its timeout.

Notification channels come from the operator's own config (a Secret), so their URLs are trusted and
not held to the allowlist; they get the same client rules otherwise.

`Dispatcher` runs calls and deliveries as background tasks, at most `concurrency` calls and as many
deliveries at once (two pools, so slow webhooks never hold up notifications), one call per webhook of a
Rollout at a time (a during-step webhook still answering when the next check comes is not called for
that check) and one delivery per (notification, channel), and keeps their results until a tick folds
them into the status (core/hooks.fold, core/notify.fold). A tick never awaits any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fnmatch
import functools
import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from coalmine.core import hooks, notify
from coalmine.core.models import NotificationStatus, Subscription, WebhookType

log = logging.getLogger("coalmine.webhooks")

DEFAULT_ALLOW = ("*.svc", "*.svc.cluster.local")
MAX_BODY = 16 * 1024  # bytes of an answer read; the rest is dropped
MAX_MESSAGE = 256  # characters of an answer kept in the status
DELIVERY_ATTEMPTS = 5  # a notification is tried this often, 1, 2, 4, 8 s apart, then Failed
DELIVERY_TIMEOUT = 10.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The allowlist refuses the URL (the message says why and what would allow it)."""


class Unresolved(Exception):
    """An allowed name that does not resolve now (a Service not created yet): a failed call, tried again."""


def _special(address: IPAddress) -> str:
    """What kind of address is refused unless listed, or ''."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    return ""


@dataclass(frozen=True)
class Allowlist:
    """Name patterns (fnmatch, case-insensitive) and networks (CIDR) a webhook may call."""

    names: tuple[str, ...] = DEFAULT_ALLOW
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """Comma-separated: `*.svc,hooks.example.com,10.0.0.0/8,127.0.0.1/32`. Errors name the entry."""
        names: list[str] = []
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or ":" in entry or not all(c.isalnum() or c in "-.*?" for c in entry):
                raise ValueError(f"--webhook-allow entry {raw.strip()!r} is neither a host name pattern nor a CIDR")
            names.append(entry)
        return cls(tuple(names), tuple(networks))

    def __str__(self) -> str:
        return ",".join([*self.names, *(str(n) for n in self.networks)])

    def _listed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    async def check(self, url: str, resolve: Callable[[str, int], Any] | None = None) -> tuple[httpx.URL, IPAddress]:
        """The URL and the address to connect to, or Refused saying why."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise Refused(f"{url!r} is not a URL: {exc}") from exc
        if parsed.scheme not in ("http", "https"):
            raise Refused(f"{url}: only http and https URLs are called")
        if parsed.userinfo:
            raise Refused(f"{_redact(parsed)}: a URL with credentials is never called")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise Refused(f"{url}: no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            if not self._listed(literal):
                raise Refused(f"{url}: address {literal} is not in --webhook-allow ({self})")
            return parsed, literal
        if not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.names):
            raise Refused(f"{url}: host {host} is not allowed by --webhook-allow ({self})")
        addresses = await (resolve or _resolve)(host, port)
        if not addresses:
            raise Unresolved(f"{url}: {host} does not resolve")
        for address in addresses:
            kind = _special(address)
            if kind and not self._listed(address):
                raise Refused(
                    f"{url}: {host} resolves to {kind} address {address}, refused unless --webhook-allow lists it"
                )
        return parsed, addresses[0]


# Webhook host names are resolved on threads of their own: a slow DNS answer for a user's URL must never
# take the threads the rest of the operator resolves with (the event loop's default executor).
_DNS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="coalmine-webhook-dns")


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().run_in_executor(
            _DNS, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
    except OSError:
        return []
    seen: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def _redact(url: httpx.URL) -> str:
    return str(url.copy_with(username=None, password=None))


@dataclass(frozen=True)
class Answer:
    code: int | None
    message: str

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


class Poster:
    """POST JSON: no redirects, no credentials, no proxies from the environment, bounded answer."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=None)

    async def close(self) -> None:
        await self._http.aclose()

    async def post(
        self, url: httpx.URL, body: dict[str, Any], limit: float, address: IPAddress | None = None
    ) -> Answer:
        """`limit`: seconds for the whole call, connect to last byte read."""
        headers = {"content-type": "application/json", "user-agent": "coalmine"}
        extensions: dict[str, Any] = {}
        target = url
        if address is not None:  # connect to the checked address; keep the name for Host and TLS
            headers["host"] = url.netloc.decode("ascii")
            target = url.copy_with(host=str(address))
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
        try:
            async with asyncio.timeout(limit):
                request = self._http.build_request(
                    "POST", target, content=json.dumps(body).encode(), headers=headers, extensions=extensions
                )
                response = await self._http.send(request, stream=True)
                try:
                    text = await _read(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Answer(None, f"no answer within {limit:g}s")
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        if 300 <= response.status_code < 400:
            where = response.headers.get("location", "")
            return Answer(response.status_code, f"redirect to {where[:200]} not followed")
        return Answer(response.status_code, text)


async def _read(response: httpx.Response) -> str:
    """At most MAX_BODY bytes of the body, as one line of at most MAX_MESSAGE characters."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= MAX_BODY:
            break
    text = " ".join(data[:MAX_BODY].decode("utf-8", "replace").split())
    return text[:MAX_MESSAGE]


# --- notification channels -----------------------------------------------------------------------------


class ChannelKind(enum.StrEnum):
    SLACK = "slack"
    MSTEAMS = "msteams"
    GENERIC = "generic"


class Channel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ChannelKind
    url: str


class NotificationsConfig(BaseModel):
    """--notifications-config: `{"channels": {"ops": {"kind": "slack", "url": "..."}}, "default": [...]}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channels: dict[str, Channel] = {}
    default: tuple[Subscription, ...] = ()  # subscriptions every Rollout has

    @classmethod
    def load(cls, path: str) -> NotificationsConfig:
        """Read the file, or raise ValueError naming the file and the field."""
        if not path:
            return cls()
        try:
            config = cls.model_validate_json(Path(path).read_text())
        except OSError as exc:
            raise ValueError(f"--notifications-config {path}: {exc.strerror}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise ValueError(f"--notifications-config {path}: {where}: {first['msg']}") from exc
        for sub in config.default:
            if sub.channel not in config.channels:
                raise ValueError(
                    f"--notifications-config {path}: default names channel {sub.channel!r}, not in channels"
                )
        return config


# --- the dispatcher ------------------------------------------------------------------------------------


Report = Callable[[str, str, str], None]  # (what: "webhook" | "notification", label, result)


def _ignore(what: str, label: str, result: str) -> None:
    return None


@dataclass
class Dispatcher:
    allow: Allowlist = field(default_factory=Allowlist)
    concurrency: int = 16
    config: NotificationsConfig = field(default_factory=NotificationsConfig)
    clock: Callable[[], datetime] = datetime.now
    poke: Callable[[str], None] = lambda key: None  # tick this Rollout (namespace/name) soon
    report: Report = _ignore
    backoff: float = 1.0  # first delivery retry after this many seconds, doubling
    resolve: Callable[[str, int], Any] | None = None
    _results: dict[str, dict[str, hooks.Result]] = field(default_factory=dict)
    _outcomes: dict[str, dict[tuple[str, str], notify.Outcome]] = field(default_factory=dict)
    _running: set[tuple[str, ...]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _poster: Poster | None = None
    _limit: asyncio.Semaphore | None = None  # webhook calls
    _notify_limit: asyncio.Semaphore | None = None  # deliveries: slow user webhooks never hold them up

    def _start(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _http(self, notifications: bool = False) -> tuple[Poster, asyncio.Semaphore]:
        if self._poster is None:
            self._poster = Poster()
        if self._limit is None or self._notify_limit is None:
            self._limit = asyncio.Semaphore(self.concurrency)
            self._notify_limit = asyncio.Semaphore(self.concurrency)
        return self._poster, self._notify_limit if notifications else self._limit

    def observed(self, uid: str) -> tuple[list[hooks.Result], list[notify.Outcome]]:
        """The answers and delivery outcomes of a Rollout not known to be in its status (fold is idempotent)."""
        return list(self._results.get(uid, {}).values()), list(self._outcomes.get(uid, {}).values())

    def settled(self, uid: str, results: Sequence[hooks.Result], outcomes: Sequence[notify.Outcome]) -> None:
        """These are in the status as written: forget them."""
        mine = self._results.get(uid, {})
        for r in results:
            if mine.get(r.name) == r:
                del mine[r.name]
        done = self._outcomes.get(uid, {})
        for o in outcomes:
            if done.get((o.id, o.channel)) == o:
                del done[o.id, o.channel]

    def forget(self, uid: str) -> None:
        self._results.pop(uid, None)
        self._outcomes.pop(uid, None)

    def call(self, key: str, uid: str, calls: Sequence[hooks.Call]) -> None:
        for call in calls:
            running = ("hook", uid, call.webhook.name)  # one call per webhook of a Rollout at a time: a slow
            if running in self._running:  # during-step skips checks instead of piling up calls
                continue
            answered = self._results.get(uid, {}).get(call.webhook.name)
            if answered is not None and answered.key == call.key:
                continue  # answered while the tick that asked ran; the next tick records it
            self._running.add(running)
            self._start(self._call(key, uid, call, running), f"webhook {key} {call.webhook.name}")

    async def _call(self, key: str, uid: str, call: hooks.Call, running: tuple[str, ...]) -> None:
        hook = call.webhook
        started = self.clock()
        try:
            try:
                async with asyncio.timeout(hook.timeout.total_seconds()):
                    url, address = await self.allow.check(hook.url, self.resolve)
            except (TimeoutError, Unresolved) as exc:
                message = str(exc) or f"{hook.url}: the host name did not resolve within the timeout"
                result = hooks.Result(hook.name, call.key, hooks.FAIL, started, self.clock(), None, message)
            except Refused as exc:
                result = hooks.Result(hook.name, call.key, hooks.REFUSED, started, self.clock(), None, str(exc))
            else:
                poster, limit = self._http()
                async with limit:
                    answer = await poster.post(url, call.payload, hook.timeout.total_seconds(), address)
                verdict = hooks.PASS if answer.ok else hooks.FAIL
                result = hooks.Result(hook.name, call.key, verdict, started, self.clock(), answer.code, answer.message)
            self.report("webhook", hook.type.value, result.result)
            if result.result != hooks.PASS:
                log.warning(
                    "[%s] webhook %s (%s): %s %s", key, hook.name, hook.type.value, result.result, result.message
                )
            self._results.setdefault(uid, {})[hook.name] = result
        finally:
            self._running.discard(running)
        if hook.type is not WebhookType.DURING_STEP or hook.gating:
            self.poke(key)  # an answer a decision waits for (or a post-rollout record): now; the rest: next tick

    def deliver(self, key: str, uid: str, entries: Sequence[NotificationStatus]) -> None:
        for entry in entries:
            running = ("notify", uid, entry.id, entry.channel)
            if running in self._running or (entry.id, entry.channel) in self._outcomes.get(uid, {}):
                continue
            self._running.add(running)
            self._start(self._deliver(key, uid, entry, running), f"notification {key} {entry.channel}")

    async def _deliver(self, key: str, uid: str, entry: NotificationStatus, running: tuple[str, ...]) -> None:
        try:
            channel = self.config.channels.get(entry.channel)
            attempts, error = 0, ""
            if channel is None:
                error = f"no channel {entry.channel!r} in the operator's notifications config"
                self.report("notification", entry.channel, "Failed")
            else:
                poster, limit = self._http(notifications=True)
                body = notify.body(channel.kind.value, entry)
                delay = self.backoff
                while attempts < DELIVERY_ATTEMPTS:
                    attempts += 1
                    async with limit:
                        answer = await poster.post(httpx.URL(channel.url), body, DELIVERY_TIMEOUT)
                    if answer.ok:
                        error = ""
                        break
                    error = f"HTTP {answer.code}: {answer.message}" if answer.code else answer.message
                    self.report("notification", entry.channel, "Failed")
                    log.warning(
                        "[%s] notification %s to %s, attempt %d: %s", key, entry.id, entry.channel, attempts, error
                    )
                    if attempts < DELIVERY_ATTEMPTS:
                        await asyncio.sleep(delay)
                        delay *= 2
            result = notify.DELIVERED if channel is not None and not error else notify.FAILED
            if result == notify.DELIVERED:
                self.report("notification", entry.channel, "Delivered")
            outcome = notify.Outcome(entry.id, entry.channel, result, attempts, self.clock(), error[:MAX_MESSAGE])
            self._outcomes.setdefault(uid, {})[entry.id, entry.channel] = outcome
        finally:
            self._running.discard(running)
        self.poke(key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._poster is not None:
            await self._poster.close()
