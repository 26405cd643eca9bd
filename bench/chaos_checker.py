"""The chaos run's invariant checker: replays every write etcd committed (chaos_history) and counts violations.

It shares no code with the operator: it knows the README's promises, not how the operator keeps them.

Who wrote what. Every write the run's own actors make carries an annotation of theirs with a new value
in the same request: `chaos.coalmine.dev/driver` (the scenario: creates, releases), `.../gitops` (the
GitOps actor's re-apply) and `.../person` (a person's edit). A write to a VirtualService that changes
none of these is the operator's: it never touches annotations. Writes are taken in etcd's revision
order, which is the order they happened in across all objects.

The invariants (each violation names the Rollout, the revision and what was found):

weights-on-record  After an operator write, each owned route is exactly [stable, canary] (the status's
                   stable and canary of the generation, in that order) with weights summing to 100, and
                   the canary's weight is one the Rollout has on record. "On record" is the status as
                   committed before that write: its `canaryWeight` (the routes as last written or read),
                   or the weight its recorded decision asks of the routes (the status is written first,
                   then the VirtualService, then the weight is recorded): the step's weight while
                   Progressing, 0 while RollingBack or RolledBack, 100 when Succeeded.
status-true        At every revision at which the operator wrote the owned routes last, the canary's share
                   of them is the status's `canaryWeight` or the weight its decision asks (the write in
                   flight between the two). After a write of the GitOps actor the status may lag until
                   the operator acts again; that is the fight, counted, not a violation.
invalid-untouched  No operator write to a VirtualService while its Rollout's status says Invalid or Pending
                   (or has no phase yet). Until the operator has picked up a spec change, the last
                   generation's record is in force (a tick that read the Rollout just before the change
                   acts on it): its writes are judged by weights-on-record against that record.
history            Within a generation `status.history` only grows, and each entry is the step after the
                   one before it, at that step's weight: no step skipped, none repeated.
rollback-bound     Every canary made to fail (meshsim answers 50 % errors once it reached its failing
                   step) is at 0 with the Rollout RollingBack/RolledBack within 2 scrape intervals +
                   failureLimit x checkEvery + 2 s (README), counted from when the canary has served
                   FILL_REQUESTS (10) requests at its weight after the break (meshsim's rate x weight:
                   before that a check may see no error), plus the duration of every fault that overlaps
                   that window; never promoted.
not-owned          The operator changes nothing it does not own: in a VirtualService only the owned
                   routes' destinations; never a DestinationRule; never a Rollout's spec or metadata.
stuck              A Rollout in flight (Progressing, RollingBack, Pending, or a new generation not yet
                   started) makes progress (phase, step or generation changes) within the stuck bound plus
                   the duration of every disruptive fault overlapping the wait, until the run ends.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chaos_history import Write

MARKERS = {
    "driver": "chaos.coalmine.dev/driver",
    "gitops": "chaos.coalmine.dev/gitops",
    "person": "chaos.coalmine.dev/person",
}
# A canary failing half its requests serves these before every check must see it: all 10 succeed with p = 0.1 %.
FILL_REQUESTS = 10
INVARIANTS = (
    "weights-on-record",
    "status-true",
    "invalid-untouched",
    "history",
    "rollback-bound",
    "not-owned",
    "stuck",
)
DEFAULT_STEPS = (10, 30, 50, 100)
NOT_DISRUPTIVE = ("person-edits", "kill-follower")  # faults that give no allowance: nothing should wait on them


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float
    end: float
    detail: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Injection:
    """A canary made to fail: from `at`, meshsim answers `subset` of the Rollout's host with errors."""

    key: str
    generation: int
    subset: str
    at: float
    weight: int = 0  # the canary's share of the route when it started failing (0: unknown, no traffic term)
    rps: float = 0.0  # the requests/s meshsim sends to the service

    def fill_seconds(self) -> float:
        """How long the canary takes to serve FILL_REQUESTS failing requests at its weight: no check can see the
        failure before they are there (README's bound counts from then)."""
        if self.weight <= 0 or self.rps <= 0:
            return 0.0
        return FILL_REQUESTS / (self.rps * self.weight / 100)


@dataclass(frozen=True)
class Violation:
    invariant: str
    at: float
    key: str
    revision: int
    detail: str


@dataclass
class Findings:
    violations: list[Violation] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)  # VirtualService writes by writer
    judged: Counter[str] = field(default_factory=Counter)  # how many times each invariant was checked
    fight: Counter[str] = field(default_factory=Counter)  # gitops reverts / operator restores, by mode
    rollback_seconds: list[tuple[Injection, float]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # generations ended, by phase and rollback reason
    recovery: dict[int, float | None] = field(default_factory=dict)  # fault index -> seconds (None: not seen)
    baseline_recovery: list[float] = field(default_factory=list)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def same_host(a: str, b: str, namespace: str) -> bool:
    def norm(host: str) -> str:
        parts = host.split(".")
        return f"{host}.{namespace}" if len(parts) == 1 else ".".join(parts[:2])

    return norm(a) == norm(b)


def shares(route: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host, subset, percent) of each destination: Istio's weights are relative; a lone one gets all."""
    entries = [e for e in route.get("route") or [] if isinstance(e.get("destination"), dict)]
    weights = [int(e.get("weight") or 0) if len(entries) > 1 else 100 for e in entries]
    total = sum(weights)
    return [
        (
            str(e["destination"].get("host", "")),
            str(e["destination"].get("subset", "")),
            round(100 * w / total) if total else 0,
        )
        for e, w in zip(entries, weights, strict=True)
    ]


# --- the objects as the checker sees them ---------------------------------------------------------------


@dataclass
class RolloutView:
    key: str
    obj: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return self.obj.get("spec") or {}

    @property
    def status(self) -> dict[str, Any]:
        return self.obj.get("status") or {}

    @property
    def generation(self) -> int:
        return int((self.obj.get("metadata") or {}).get("generation") or 0)

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def steps(self) -> list[int]:
        steps = self.spec.get("steps")
        return [int(s.get("weight", 0)) for s in steps] if isinstance(steps, list) else list(DEFAULT_STEPS)

    @property
    def vs_name(self) -> str | None:
        vs = self.spec.get("virtualService")
        return vs.get("name") if isinstance(vs, dict) else None

    def owned_routes(self, vs: dict[str, Any]) -> list[int] | None:
        """Indices of the owned http routes in `vs`, None when they cannot be found."""
        http = (vs.get("spec") or {}).get("http") or []
        names = (self.spec.get("virtualService") or {}).get("routes") or []
        if not names:
            return [0] if len(http) == 1 else None
        found = [next((i for i, r in enumerate(http) if r.get("name") == n), None) for n in names]
        return None if any(i is None for i in found) else [i for i in found if i is not None]

    @property
    def waiting(self) -> bool:
        """The operator has judged this generation and it may not move traffic: Invalid or Pending (or no status)."""
        return self.status.get("phase") in (None, "Pending", "Invalid")

    def on_record(self) -> set[int]:
        """canaryWeight, and the weight the recorded decision asks of the routes (see the module doc).

        A spec change the operator has not picked up yet leaves the last generation's record in force: a
        tick that read the Rollout before the change acts on that record, and may write its weight."""
        status = self.status
        allowed = {int(status["canaryWeight"])} if status.get("canaryWeight") is not None else set()
        if self.waiting:
            return allowed
        phase = status.get("phase")
        if phase in ("RollingBack", "RolledBack"):
            allowed.add(0)
        elif phase == "Succeeded":
            allowed.add(100)
        elif phase == "Progressing":
            index = int(status.get("stepIndex") or 0)
            if 0 <= index < len(self.steps):
                allowed.add(self.steps[index])
        return allowed

    def canary_share(self, vs: dict[str, Any], subset: str | None = None) -> int | None:
        canary = self.status.get("canary") or {}
        subset = subset or canary.get("subset")
        owned = self.owned_routes(vs)
        if owned is None or not subset:
            return None
        http = vs["spec"]["http"]
        host = canary.get("host") or ""
        return max(
            sum(p for h, s, p in shares(http[i]) if s == subset and (not host or same_host(h, host, self.namespace)))
            for i in owned
        )

    def progress_mark(self) -> tuple[Any, ...]:
        s = self.status
        return (s.get("observedGeneration"), s.get("phase"), s.get("stepIndex"))

    @property
    def in_flight(self) -> bool:
        if self.status.get("observedGeneration") != self.generation:
            return True
        return self.status.get("phase") in (None, "Progressing", "RollingBack", "Pending")


def writer_of(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """Which actor made the write from `before` to `after`: the one whose marker changed, else the operator."""
    if before is None or after is None:
        return "driver"  # creates and deletes are the scenario's
    old = (before.get("metadata") or {}).get("annotations") or {}
    new = (after.get("metadata") or {}).get("annotations") or {}
    for actor, key in MARKERS.items():
        if old.get(key) != new.get(key):
            return actor
    return "operator"


def without_owned(vs: dict[str, Any], owned: Iterable[int]) -> dict[str, Any]:
    """The VirtualService less what the operator owns (the owned routes' `route`) and server metadata."""
    result = copy.deepcopy({"spec": vs.get("spec"), "labels": (vs.get("metadata") or {}).get("labels")})
    result["annotations"] = (vs.get("metadata") or {}).get("annotations")
    http = (result["spec"] or {}).get("http") or []
    for i in owned:
        if i < len(http):
            http[i].pop("route", None)
    return result


# --- the replay ---------------------------------------------------------------------------------------


class Checker:
    def __init__(
        self,
        writes: Sequence[Write],
        faults: Sequence[Fault],
        injections: Sequence[Injection],
        *,
        rollback_bound: float,
        stuck_bound: float,
        run_end: float,
    ) -> None:
        self.writes = writes
        self.faults = list(faults)
        self.injections = sorted(injections, key=lambda i: i.at)
        self.rollback_bound = rollback_bound
        self.stuck_bound = stuck_bound
        self.run_end = run_end
        self.found = Findings()
        self.rollouts: dict[str, RolloutView] = {}
        self.vss: dict[str, dict[str, Any]] = {}
        self.vs_last_writer: dict[str, str] = {}
        self.vs_reverted: dict[str, str] = {}  # VS key -> gitops mode whose revert the operator has not answered
        self.progress: dict[str, tuple[float, tuple[Any, ...]]] = {}  # key -> (since, mark) while in flight
        self.pending: list[tuple[Injection, float]] = []  # injections waiting for their rollback, with deadline
        self.seen_generation_end: set[tuple[str, int]] = set()
        self.drs: dict[str, dict[str, Any] | None] = {}

    # fault allowances

    def deadline(self, start: float, base: float, *, disruptive_only: bool = True) -> float:
        """start + base + the duration of every fault overlapping [start, deadline], to a fixed point."""
        counted: set[int] = set()
        end = start + base
        while True:
            more = [
                i
                for i, f in enumerate(self.faults)
                if i not in counted
                and f.start <= end
                and f.end >= start
                and not (disruptive_only and f.kind in NOT_DISRUPTIVE)
            ]
            if not more:
                return end
            counted.update(more)
            end += sum(self.faults[i].duration for i in more)

    def violate(self, invariant: str, write: Write, key: str, detail: str) -> None:
        self.found.violations.append(Violation(invariant, write.at, key, write.revision, detail))

    # main loop

    def run(self) -> Findings:
        next_injection = 0
        for write in self.writes:
            while next_injection < len(self.injections) and self.injections[next_injection].at <= write.at:
                injection = self.injections[next_injection]
                bound = self.rollback_bound + injection.fill_seconds()
                self.pending.append((injection, self.deadline(injection.at, bound)))
                next_injection += 1
            if write.plural == "rollouts":
                self._rollout(write)
            elif write.plural == "virtualservices":
                self._virtual_service(write)
            else:
                self._destination_rule(write)
            self._check_pending(write)
        self._finish()
        return self.found

    def _rollout(self, write: Write) -> None:
        before = self.rollouts.get(write.key)
        if write.obj is None:
            self.rollouts.pop(write.key, None)
            self.progress.pop(write.key, None)
            return
        after = RolloutView(write.key, write.obj)
        self.rollouts[write.key] = after
        if before is not None:
            self._rollout_owned(write, before, after)
            self._history(write, before, after)
            self._generation_end(before, after)
        self._stuck(write, after)
        self._status_true(write, after)

    def _rollout_owned(self, write: Write, before: RolloutView, after: RolloutView) -> None:
        self.found.judged["not-owned"] += 1
        if writer_of(before.obj, after.obj) != "operator":
            return
        if before.spec != after.spec or before.generation != after.generation:
            self.violate("not-owned", write, write.key, "the Rollout's spec changed without the scenario changing it")
        old_meta = {k: v for k, v in (before.obj.get("metadata") or {}).items() if k != "generation"}
        new_meta = {k: v for k, v in (after.obj.get("metadata") or {}).items() if k != "generation"}
        if old_meta != new_meta:
            self.violate("not-owned", write, write.key, f"the Rollout's metadata changed: {old_meta} -> {new_meta}")

    def _history(self, write: Write, before: RolloutView, after: RolloutView) -> None:
        new = after.status.get("history") or []
        if not new:
            return
        self.found.judged["history"] += 1
        steps = after.steps
        for a, b in itertools.pairwise(new):
            if int(b.get("stepIndex", -1)) != int(a.get("stepIndex", -1)) + 1:
                kind = "repeated" if b.get("stepIndex") == a.get("stepIndex") else "skipped"
                self.violate("history", write, write.key, f"step {kind}: history {self._steps_of(new)}")
                return
        for entry in new:
            index = int(entry.get("stepIndex", -1))
            if not 0 <= index < len(steps) or int(entry.get("weight", -1)) != steps[index]:
                self.violate("history", write, write.key, f"entry {entry} is not step {index} of {steps}")
                return
        same_generation = before.status.get("observedGeneration") == after.status.get(
            "observedGeneration"
        ) and before.status.get("startedAt") == after.status.get("startedAt")
        old = before.status.get("history") or []
        if same_generation and old and new[: len(old)] != old:
            self.violate(
                "history",
                write,
                write.key,
                f"history rewritten within generation {after.status.get('observedGeneration')}: "
                f"{self._steps_of(old)} -> {self._steps_of(new)}",
            )

    @staticmethod
    def _steps_of(history: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        return [(h.get("stepIndex"), h.get("weight")) for h in history]

    def _generation_end(self, before: RolloutView, after: RolloutView) -> None:
        phase = after.status.get("phase")
        gen = after.status.get("observedGeneration")
        if phase in ("Succeeded", "RolledBack") and (after.key, gen) not in self.seen_generation_end:
            self.seen_generation_end.add((after.key, gen))
            reason = (after.status.get("rollback") or {}).get("reason")
            self.found.outcomes[f"{phase} ({reason})" if reason else phase] += 1

    def _stuck(self, write: Write, after: RolloutView) -> None:
        mark = after.progress_mark()
        known = self.progress.get(write.key)
        if not after.in_flight:
            if known is not None:
                self._judge_wait(write.key, known[0], write.at, write)
            self.progress.pop(write.key, None)
            return
        if known is None:
            self.progress[write.key] = (write.at, mark)
        elif known[1] != mark:
            self._judge_wait(write.key, known[0], write.at, write)
            self.progress[write.key] = (write.at, mark)

    def _judge_wait(self, key: str, since: float, until: float, write: Write | None) -> None:
        self.found.judged["stuck"] += 1
        allowed = self.deadline(since, self.stuck_bound)
        if until > allowed:
            detail = (
                f"no progress for {until - since:.1f} s (bound {self.stuck_bound:.0f} s + faults = "
                f"{allowed - since:.1f} s)"
            )
            revision = write.revision if write is not None else 0
            self.found.violations.append(Violation("stuck", until, key, revision, detail))

    def _virtual_service(self, write: Write) -> None:
        before = self.vss.get(write.key)
        who = writer_of(before, write.obj)
        self.found.writes[who] += 1
        if write.obj is None:
            self.vss.pop(write.key, None)
            return
        self.vss[write.key] = write.obj
        owners = [r for r in self.rollouts.values() if r.namespace == write.namespace and r.vs_name == write.name]
        owned = sorted({i for r in owners for i in (r.owned_routes(write.obj) or [])})
        routes_changed = before is None or any(self._route(before, i) != self._route(write.obj, i) for i in owned)
        if before is not None and who == "gitops" and routes_changed:
            marker = ((write.obj.get("metadata") or {}).get("annotations") or {}).get(MARKERS["gitops"], "")
            mode = str(marker).split("-")[0]
            self.found.fight[f"{mode} reverts"] += 1
            self.vs_reverted[write.key] = mode
        if before is not None and who == "operator":
            self._operator_vs_write(write, before, owners, owned)
        if routes_changed:  # whose weights the owned routes carry now
            self.vs_last_writer[write.key] = who
        for rollout in owners:
            self._status_true(write, rollout)

    @staticmethod
    def _route(vs: dict[str, Any], index: int) -> Any:
        http = (vs.get("spec") or {}).get("http") or []
        return http[index].get("route") if index < len(http) else None

    def _operator_vs_write(
        self, write: Write, before: dict[str, Any], owners: list[RolloutView], owned: list[int]
    ) -> None:
        assert write.obj is not None
        if write.key in self.vs_reverted:
            self.found.fight[f"{self.vs_reverted.pop(write.key)} restores"] += 1
        self.found.judged["invalid-untouched"] += 1
        waiting = [r for r in owners if r.waiting or r.owned_routes(write.obj) is None]
        if waiting or not owners:
            who = waiting[0] if waiting else None
            self.violate(
                "invalid-untouched",
                write,
                who.key if who else write.key,
                f"the operator wrote VirtualService {write.key} while its Rollout is "
                + (
                    f"{who.status.get('phase')} (generation {who.generation}, observed "
                    f"{who.status.get('observedGeneration')}): {who.status.get('message', '')[:200]}"
                    if who
                    else "absent"
                ),
            )
            return
        self.found.judged["not-owned"] += 1
        if without_owned(before, owned) != without_owned(write.obj, owned):
            self.violate(
                "not-owned", write, write.key, "an operator write changed the VirtualService outside the owned routes"
            )
        for rollout in owners:
            indices = rollout.owned_routes(write.obj) or []
            changed = [i for i in indices if self._route(before, i) != self._route(write.obj, i)]
            if not changed:
                continue
            self.found.judged["weights-on-record"] += 1
            for i in changed:
                problem = self._owned_shape(rollout, self._route(write.obj, i) or [], self._route(before, i) or [])
                if problem:
                    self.violate("weights-on-record", write, rollout.key, problem)
                    break

    def _owned_shape(self, rollout: RolloutView, route: list[dict[str, Any]], old: list[dict[str, Any]]) -> str:
        status, ns = rollout.status, rollout.namespace
        stable, canary = status.get("stable") or {}, status.get("canary") or {}
        subsets = [(e.get("destination") or {}).get("subset") for e in route]
        if len(route) != 2 or subsets != [stable.get("subset"), canary.get("subset")]:
            return f"owned route is {self._brief(route)}, not exactly [stable {stable}, canary {canary}]"
        for entry, side in zip(route, (stable, canary), strict=True):
            host = side.get("host")
            if host and not same_host(str(entry["destination"].get("host", "")), host, ns):
                return f"owned route is {self._brief(route)}: host is not {host}"
        weights = [e.get("weight") for e in route]
        if not all(isinstance(w, int) for w in weights) or sum(weights) != 100:
            return f"owned route weights {weights} do not sum to 100"
        allowed = rollout.on_record()
        if weights[1] not in allowed:
            return (
                f"canary weight {weights[1]} is not on record ({status.get('phase')} step "
                f"{status.get('stepIndex')}, canaryWeight {status.get('canaryWeight')}: allowed {sorted(allowed)})"
            )
        for entry in route:
            prior = next(
                (o for o in old if (o.get("destination") or {}).get("subset") == entry["destination"].get("subset")),
                None,
            )
            if prior is not None and {k: v for k, v in prior.items() if k != "weight"} != {
                k: v for k, v in entry.items() if k != "weight"
            }:
                return f"destination {prior} changed beyond its weight: {entry}"
        return ""

    @staticmethod
    def _brief(route: list[dict[str, Any]]) -> str:
        return str([((e.get("destination") or {}).get("subset"), e.get("weight")) for e in route])

    def _status_true(self, write: Write, rollout: RolloutView) -> None:
        if rollout.vs_name is None:
            return
        vs_key = f"{rollout.namespace}/{rollout.vs_name}"
        vs = self.vss.get(vs_key)
        if vs is None or self.vs_last_writer.get(vs_key) not in ("operator", "driver"):
            return
        allowed = rollout.on_record()
        share = rollout.canary_share(vs)
        if not allowed or share is None:
            return
        self.found.judged["status-true"] += 1
        if share not in allowed:
            self.violate(
                "status-true",
                write,
                rollout.key,
                f"status {rollout.status.get('phase')} step {rollout.status.get('stepIndex')} canaryWeight "
                f"{rollout.status.get('canaryWeight')} (allowed {sorted(allowed)}) while the routes give the canary "
                f"{rollout.status.get('canary', {}).get('subset')} {share}%",
            )

    def _destination_rule(self, write: Write) -> None:
        """DestinationRules are written by the scenario and the person only: any other write is the operator's."""
        before = self.drs.get(write.key)
        self.drs[write.key] = write.obj
        self.found.judged["not-owned"] += 1
        if before is not None and write.obj is not None and writer_of(before, write.obj) == "operator":
            self.violate(
                "not-owned", write, write.key, "a DestinationRule was written by neither the scenario nor the person"
            )

    def _check_pending(self, write: Write) -> None:
        still = []
        for injection, deadline in self.pending:
            rollout = self.rollouts.get(injection.key)
            verdict = self._rolled_back(injection, rollout)
            if verdict in ("promoted", "superseded"):
                self.found.judged["rollback-bound"] += 1
                what = (
                    "was promoted" if verdict == "promoted" else "was replaced by a new generation, never rolled back"
                )
                self.violate("rollback-bound", write, injection.key, f"failing canary {injection.subset} {what}")
            elif verdict == "done":
                self.found.judged["rollback-bound"] += 1
                took = write.at - injection.at
                self.found.rollback_seconds.append((injection, took))
                if write.at > deadline:
                    record = (rollout.status.get("rollback") or {}) if rollout is not None else {}
                    decided = parse_time(record.get("at"))
                    self.violate(
                        "rollback-bound",
                        write,
                        injection.key,
                        f"failing canary {injection.subset} at {injection.weight}% reached 0 after {took:.1f} s (bound "
                        f"{self.rollback_bound:.0f} s + {injection.fill_seconds():.1f} s to serve {FILL_REQUESTS} "
                        f"requests + faults = {deadline - injection.at:.1f} s); rollback decided "
                        + (f"{decided - injection.at:.1f} s after" if decided else "at an unknown time")
                        + f" ({record.get('reason')}: {str(record.get('message', ''))[:160]})",
                    )
            else:
                still.append((injection, deadline))
        self.pending = still

    def _rolled_back(self, injection: Injection, rollout: RolloutView | None) -> str:
        if rollout is None or rollout.vs_name is None:
            return "waiting"
        status = rollout.status
        if status.get("observedGeneration") != injection.generation:
            return "waiting" if (status.get("observedGeneration") or 0) < injection.generation else "superseded"
        if status.get("phase") == "Succeeded":
            return "promoted"
        vs = self.vss.get(f"{rollout.namespace}/{rollout.vs_name}")
        rolled_back = status.get("phase") in ("RollingBack", "RolledBack")
        if rolled_back and vs is not None and rollout.canary_share(vs, injection.subset) == 0:
            return "done"
        return "waiting"

    def _finish(self) -> None:
        end = self.run_end
        for key, (since, _) in self.progress.items():
            if self.deadline(since, self.stuck_bound) < end:
                self._judge_wait(key, since, end, None)
        for injection, deadline in self.pending:
            if deadline < end:
                self.found.judged["rollback-bound"] += 1
                self.found.violations.append(
                    Violation(
                        "rollback-bound",
                        end,
                        injection.key,
                        0,
                        f"failing canary {injection.subset} still has traffic at the end, "
                        f"{end - injection.at:.0f} s after it started failing",
                    )
                )


# --- recovery -------------------------------------------------------------------------------------------


def recovery_times(
    writes: Sequence[Write],
    moments: Sequence[float],
    horizon: float,
    no_data: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[float | None]:
    """For each moment: how long until every Rollout in flight then has been judged again, i.e. has a status
    write after the moment that records a check with data (Pass, Fail, Inconclusive) made after it, or has
    moved on (phase, step or generation changed). None when that did not happen within `horizon`.
    Rollouts in `no_data` (no traffic by design) count as judged by any check made after the moment.

    Passing checks in a row are written every third check (README), so this has a floor of about
    3 x checkEvery even with no fault at all: the "no fault" row measures it."""
    order = sorted(range(len(moments)), key=lambda i: moments[i])
    answers: dict[int, float | None] = {}
    states: dict[str, RolloutView] = {}
    waiting: dict[int, dict[str, tuple[Any, ...]]] = {}
    position = 0
    for write in writes:
        while position < len(order) and moments[order[position]] <= write.at:
            i = order[position]
            keys = {k: r.progress_mark() for k, r in states.items() if r.in_flight}
            if keys:
                waiting[i] = keys
            else:
                answers[i] = 0.0
            position += 1
        if write.plural != "rollouts":
            continue
        if write.obj is None:
            states.pop(write.key, None)
        else:
            states[write.key] = RolloutView(write.key, write.obj)
        view = states.get(write.key)
        for i in list(waiting):
            keys, moment = waiting[i], moments[i]
            if write.key in keys:
                if view is None:
                    del keys[write.key]
                else:
                    analysis = view.status.get("analysis") or {}
                    checked = parse_time(analysis.get("checkedAt"))
                    with_data = analysis.get("verdict") != "NoData" or write.key in no_data
                    judged = checked is not None and checked > moment and with_data
                    if judged or view.progress_mark() != keys[write.key] or not view.in_flight:
                        del keys[write.key]
            if not keys:
                answers[i] = write.at - moment
                del waiting[i]
            elif write.at - moment > horizon:
                answers[i] = None
                del waiting[i]
    return [answers.get(i) for i in range(len(moments))]


def clean(faults: Sequence[Fault], recovery: Sequence[float | None]) -> list[bool]:
    """Whether each fault's recovery was measured alone: no other disruptive fault was active in the 5 s
    before it ended or during its recovery (overlapping faults stretch each other's recovery)."""
    result = []
    for i, fault in enumerate(faults):
        took = recovery[i]
        until = fault.end + (took if took is not None else 0.0)
        others = [
            f
            for j, f in enumerate(faults)
            if j != i and f.kind not in NOT_DISRUPTIVE and f.start <= until and f.end >= fault.end - 5.0
        ]
        result.append(took is not None and not others)
    return result


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def by_kind(faults: Sequence[Fault], violations: Sequence[Violation], margin: float) -> dict[str, list[Violation]]:
    """Each violation under every fault kind active at its moment (or within `margin` before it), else '(none)'."""
    table: dict[str, list[Violation]] = defaultdict(list)
    for violation in violations:
        kinds = {f.kind for f in faults if f.start - 1.0 <= violation.at <= f.end + margin}
        for kind in kinds or {"(no fault)"}:
            table[kind].append(violation)
    return table
