"""`coalmine promote|abort|pause|resume|retry NAME`: steer a rollout by hand (also `kubectl coalmine ...`).

How a request travels: this command reads the Rollout, asks the core whether the request can apply to
it as its status stands (core/steering.py; it refuses at once when not), finds out who is asking from
the API server (SelfSubjectReview), and writes the request as the annotation `coalmine.dev/request` with
a merge patch guarded by the resourceVersion it read. No spec edit (no new generation, no GitOps
drift) and nothing the operator has to write but its status: the operator acknowledges the request
there exactly once. The command then waits (`--timeout`) for that acknowledgement and for the routes to
be recorded at the weight the request asked, and prints both.

A person needs `get` and `patch` on rollouts.coalmine.dev in the namespace, nothing more.
Exit codes: 0 applied, 1 refused (here or by the operator), 2 could not ask (kubeconfig, access, no
such Rollout), 3 written but not handled within the timeout (the operator applies it when it runs), or
applied but the routes do not have its weight yet (the operator keeps trying; the message says why).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from coalmine.core import plan, steering
from coalmine.core.models import REQUEST_ANNOTATION, Request, Rollout

GROUP, VERSION, PLURAL = "coalmine.dev", "v1alpha1", "rollouts"
FIELD_MANAGER = "coalmine-cli"
POLL = 0.2  # seconds between reads while waiting for the operator
WRITE_ATTEMPTS = 5  # the Rollout changed between our read and our write this many times: give up
APPLIED, REFUSED, CANNOT, PENDING = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verb = parser.prog.rsplit(" ", 1)[-1]
    parser.add_argument("name", help="the Rollout")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else 'default')")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    if verb == "promote":
        parser.add_argument(
            "--full", action="store_true", help="go to 100 %% at once, skipping the remaining steps and their analysis"
        )
    parser.add_argument("--reason", default="", help="why, recorded with the request (status, history, Event)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the operator to handle the request (default 30; 0: do not wait)",
    )


@dataclass(frozen=True)
class Identity:
    name: str
    verified: bool  # from the API server (SelfSubjectReview), not from the kubeconfig


class Steerer:
    """Reads and writes one Rollout with the synchronous kubernetes client, and says what happened."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, out: TextIO, err: TextIO) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.auth = client.AuthenticationV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.out, self.err = out, err

    @property
    def label(self) -> str:
        return f"Rollout {self.namespace}/{self.name}"

    def whoami(self, kubeconfig_user: str) -> Identity:
        """The user as the API server authenticates us. Every authenticated user may ask (the built-in
        system:basic-user role); a server without the API (before v1.28) leaves the kubeconfig's name."""
        try:
            review = self.auth.create_self_subject_review(client.V1SelfSubjectReview())
        except ApiException as exc:
            if exc.status in (403, 404):
                return Identity(kubeconfig_user or "unknown", verified=False)
            raise
        user = review.status.user_info if review.status is not None else None
        if user is None or not user.username:
            return Identity(kubeconfig_user or "unknown", verified=False)
        return Identity(str(user.username), verified=True)

    def read(self) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        return cast(dict[str, Any], body)

    def write(self, body: dict[str, Any], request: Request) -> None:
        """The request as the annotation, only if the Rollout is still as read (409 otherwise)."""
        patch = {
            "metadata": {
                "resourceVersion": body["metadata"]["resourceVersion"],
                "annotations": {REQUEST_ANNOTATION: request.to_annotation()},
            }
        }
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )

    def ask(self, verb: str, who: Identity, *, full: bool, reason: str, timeout: float) -> int:
        first: int | None = None  # the generation first read: a request is for the release the person saw
        for _ in range(WRITE_ATTEMPTS):
            body = self.read()
            try:
                rollout = Rollout.from_body(body)
            except ValidationError as exc:
                return self._refused(verb, f"its spec cannot be read ({exc.errors()[0]['msg']}); fix the spec first")
            if first is not None and rollout.generation != first:
                return self._refused(
                    verb,
                    f"its spec changed while asking (generation {first} -> {rollout.generation}): nothing written; "
                    "run the command again if you mean the new release",
                )
            first = rollout.generation
            request = Request(
                id=str(uuid.uuid4()),
                verb=verb,
                full=full,
                by=who.name if who.verified else f"{who.name} (kubeconfig user, not verified)",
                reason=reason,
                at=datetime.now(UTC),
                generation=rollout.generation,
            )
            why = steering.refusal(rollout, request)
            if why is not None:
                return self._refused(verb, why)
            waiting = steering.pending(rollout)
            try:
                self.write(body, request)
            except ApiException as exc:
                if exc.status == 409:
                    continue  # the operator wrote the status meanwhile: read again, judge again
                raise
            if waiting is not None:
                self.out.write(
                    f"note: this replaces the {waiting.command or 'request'} by {waiting.by or 'someone'} that the "
                    "operator had not handled yet\n"
                )
            self.out.write(f"{request.command} requested for {self.label} by {request.by} (request {request.id[:8]})\n")
            self.out.flush()
            if timeout <= 0:
                return APPLIED
            return self.follow(request, time.monotonic() + timeout)
        self.err.write(
            f"coalmine {verb}: {self.label} kept changing; {WRITE_ATTEMPTS} writes were refused, try again\n"
        )
        return CANNOT

    def _refused(self, verb: str, why: str) -> int:
        self.err.write(f"coalmine {verb}: refused: {self.label}: {why}\n")
        return REFUSED

    def follow(self, request: Request, deadline: float) -> int:
        """Wait for the operator to handle the request, then for the routes to be recorded at its weight."""
        while True:
            rollout = Rollout.from_body(self.read())
            outcome = _outcome(rollout, request)
            if outcome is not None:
                break
            if rollout.request is None or rollout.request.id != request.id:
                by = f" by a {rollout.request.command} from {rollout.request.by}" if rollout.request else ""
                self.err.write(f"the request was replaced{by} before the operator handled it: nothing done\n")
                return REFUSED
            if time.monotonic() > deadline:
                self.err.write(
                    "not handled yet: the request stays on the Rollout and the operator applies it once when it "
                    f"runs (is it running?); watch with: coalmine status {self.name} -n {self.namespace} -w\n"
                )
                return PENDING
            time.sleep(POLL)
        result, message = outcome
        if result == steering.REFUSED:
            self.err.write(f"refused by the operator: {message}\n")
            return REFUSED
        self.out.write(f"applied: {message}\n")
        return self._traffic(rollout, deadline)

    def _traffic(self, rollout: Rollout, deadline: float) -> int:
        """Report the routes once the status records them at the weight it asks (the status is written
        first and the weight recorded after the VirtualService moved)."""
        while True:
            status = rollout.status
            wanted = plan.desired_weight(rollout)
            stalled = plan.traffic_stalled(status)
            if stalled is not None:  # applied, but the routes do not have it yet: the operator keeps trying
                self.err.write(f"traffic not moved yet: {stalled.message}\n")
                return PENDING
            if wanted is None or status.canary_weight == wanted:
                self.out.write(f"{_split(rollout)}\n")
                return APPLIED
            if time.monotonic() > deadline:
                self.err.write(f"the routes are not recorded at {wanted}% yet: {_split(rollout)}\n")
                return PENDING
            time.sleep(POLL)
            rollout = Rollout.from_body(self.read())


def _split(rollout: Rollout) -> str:
    status = rollout.status
    weight = status.canary_weight if status.canary_weight is not None else 0
    canary = status.canary or rollout.spec.canary
    stable = status.stable or rollout.spec.stable

    def name(d: Any) -> str:
        if d is not None and d.host and not d.subset:  # spec.httpRoute: a Service per version
            return str(d.host)
        return f"{d.host}/{d.subset}" if d is not None and d.host else (d.subset if d is not None else "?")

    return f"now: {status.phase.value if status.phase else 'no phase'}, canary {name(canary)} {weight}%, stable {name(stable)} {100 - weight}%"


def _outcome(rollout: Rollout, request: Request) -> tuple[str, str] | None:
    """How the operator handled `request` (result, message), None while it has not."""
    handled = rollout.status.last_request
    if handled is not None and handled.id == request.id:
        return handled.result, handled.message
    if any(h.request is not None and h.request.id == request.id for h in rollout.status.history):
        return steering.APPLIED, "applied (a later request has been handled since)"
    return None


def _context(kubeconfig: str | None) -> tuple[str, str]:
    """The kubeconfig context's namespace (default 'default') and user name."""
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default", ""
    context = (active or {}).get("context", {})
    return str(context.get("namespace") or "default"), str(context.get("user") or "")


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{exc.status} {exc.reason}"


def run(args: argparse.Namespace) -> int:
    verb: str = args.command
    namespace, user = _context(args.kubeconfig)
    namespace = args.namespace or namespace
    try:
        api_client = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        print(f"coalmine {verb}: cannot load the kubeconfig: {error}", file=sys.stderr)
        return CANNOT
    steerer = Steerer(api_client, namespace, args.name, sys.stdout, sys.stderr)
    try:
        who = steerer.whoami(user)
        return steerer.ask(verb, who, full=getattr(args, "full", False), reason=args.reason, timeout=args.timeout)
    except ApiException as exc:
        if exc.status == 404:
            print(f"coalmine {verb}: {steerer.label} not found", file=sys.stderr)
        elif exc.status == 403:
            message = _message(exc)
            rbac = " is forbidden: User " in message  # RBAC says so; an admission policy says otherwise
            hint = f" (steering needs get and patch on rollouts.coalmine.dev in namespace {namespace})" if rbac else ""
            print(f"coalmine {verb}: not allowed: {message}{hint}", file=sys.stderr)
        else:
            print(f"coalmine {verb}: the API server refused: {_message(exc)}", file=sys.stderr)
        return CANNOT
    except (HTTPError, OSError) as error:
        print(f"coalmine {verb}: cannot reach the API server: {error}", file=sys.stderr)
        return CANNOT
    except KeyboardInterrupt:
        return PENDING
    finally:
        api_client.close()
