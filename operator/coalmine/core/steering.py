"""Steering by hand: which requests a person may make of a rollout, and when one can apply. Pure.

A request travels as the annotation `coalmine.dev/request` on the Rollout (models.REQUEST_ANNOTATION),
written by `coalmine promote|abort|pause|resume|retry`: metadata, so no spec edit, no new generation,
no drift for Argo CD or Flux, and no write the operator itself has to make. The operator handles each
request once: the status write that applies it (or refuses it) also records it in
`status.lastRequest`, guarded by resourceVersion like every status write, so across restarts and
replicas it is acknowledged exactly once and then ignored.

`refusal` is the one rule for whether a request can apply to a rollout as its status stands. The CLI
asks it before writing anything (and refuses at once); the operator asks it again when the request
arrives, because the rollout may have moved on, and records a refusal in the status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from coalmine.core.models import (
    AnalysisStatus,
    Approval,
    Phase,
    Request,
    Rollout,
    RolloutSpec,
    RolloutStatus,
    Verdict,
    format_duration,
    format_time,
)

VERBS = ("promote", "abort", "pause", "resume", "retry")
APPLIED, REFUSED = "Applied", "Refused"


def pending(rollout: Rollout) -> Request | None:
    """The request on the Rollout that the operator has not handled yet, if any."""
    request = rollout.request
    if request is None:
        return None
    status = rollout.status
    if status.last_request is not None and status.last_request.id == request.id:
        return None
    if any(h.request is not None and h.request.id == request.id for h in status.history):
        return None
    return request


def command(rollout: Rollout, verb: str) -> str:
    """The command a person runs to make this request (shown in messages and the status view)."""
    return f"coalmine {verb} {rollout.name} -n {rollout.namespace}"


def paused_for(status: RolloutStatus, now: datetime) -> timedelta:
    """How long the current step has been paused: its earlier pauses, and the current one up to `now`.

    A pause that began before the step did (traffic that arrived late restarts the step) counts from
    the step's start."""
    total = status.step_paused_for or timedelta(0)
    if status.paused is not None and status.step_started_at is not None:
        total += max(timedelta(0), now - max(status.paused.since, status.step_started_at))
    return total


def hold_end(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> datetime:
    """When the current step's hold is over: its start + its hold + the time it spent paused.

    While paused this moves with `now`, so the hold continues where it stopped when resumed."""
    assert status.step_started_at is not None
    return status.step_started_at + spec.hold(status.step_index or 0) + paused_for(status, now)


def gated(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """The current step waits for a person's promote once its hold is over."""
    index = status.step_index or 0
    return index < len(spec.steps) and spec.steps[index].approval is Approval.MANUAL


def ready(spec: RolloutSpec, status: RolloutStatus, analysis: AnalysisStatus | None, now: datetime) -> bool:
    """At the step's weight, its hold over (pauses not counted), and the last check of the step passed."""
    assert status.step_started_at is not None
    at_weight = status.canary_weight == spec.steps[status.step_index or 0].weight
    passed = analysis is not None and analysis.verdict is Verdict.PASS and analysis.checked_at > status.step_started_at
    return at_weight and passed and now >= hold_end(spec, status, now)


def refusal(rollout: Rollout, request: Request) -> str | None:
    """Why `request` cannot apply to the rollout as its status stands, or None when it can."""
    if request.problem:
        return request.problem
    if request.verb not in VERBS:
        return f"unknown verb {request.verb!r}: a request is one of {', '.join(VERBS)}"
    if request.full and request.verb != "promote":
        return f"--full goes with promote, not {request.verb}"
    if request.generation is not None and request.generation != rollout.generation:
        return (
            f"the request was made for generation {request.generation}, and the Rollout's spec has changed "
            f"since (generation {rollout.generation}): nothing done; make it again if you mean this release"
        )
    status = rollout.status
    if status.observed_generation != rollout.generation:
        return f"the operator has not started generation {rollout.generation} yet: try again in a moment"
    return _REFUSALS[request.verb](rollout)


def _state(status: RolloutStatus) -> str:
    phase = status.phase.value if status.phase else "not started"
    return f"{phase}: {status.message}" if status.message else phase


def _promote(rollout: Rollout) -> str | None:
    spec, status = rollout.spec, rollout.status
    if status.phase is Phase.SUCCEEDED:
        return "the rollout has already succeeded: the canary has all the traffic"
    if status.phase is not Phase.PROGRESSING:
        return f"only a Progressing rollout can be promoted; this one is {_state(status)}"
    if status.paused is not None:
        return f"the rollout is paused (by {status.paused.by or 'someone'}): resume it first ({command(rollout, 'resume')})"
    index = status.step_index or 0
    label = f"{index + 1}/{len(spec.steps)}"
    weight = spec.steps[index].weight
    if status.canary_weight != weight:
        return f"the routes are not at step {label}'s weight yet (canary at {status.canary_weight}%, the step wants {weight}%)"
    analysis = status.analysis
    assert status.step_started_at is not None
    if analysis is None or analysis.checked_at <= status.step_started_at:
        every = format_duration(spec.analysis.check_every)
        return f"no check has run at step {label} yet: wait for the first (every {every})"
    if analysis.verdict is Verdict.FAIL:
        failed = "; ".join(f"{m.name} {m.reason}" for m in analysis.metrics if m.verdict is Verdict.FAIL)
        return (
            f"the last check failed ({failed}; {analysis.consecutive_failures} of failureLimit "
            f"{spec.analysis.failure_limit}): promote needs a passing check"
        )
    if analysis.verdict is Verdict.NO_DATA:
        why = "; ".join(f"{m.name}: {m.reason}" for m in analysis.metrics if m.verdict is Verdict.NO_DATA)
        return f"the last check had no data ({why or 'no canary requests'}): promote needs a passing check"
    if analysis.verdict is Verdict.INCONCLUSIVE:  # the judge cannot tell yet; every bound held: a person may
        return None
    if analysis.verdict is not Verdict.PASS:  # whatever else a check can say, only a pass lets promote through
        why = "; ".join(f"{m.name}: {m.reason}" for m in analysis.metrics if m.verdict is analysis.verdict)
        return (
            f"the last check was {analysis.verdict.value} ({why or 'no reason given'}): promote needs a passing check"
        )
    return None


def _abort(rollout: Rollout) -> str | None:
    status = rollout.status
    if status.phase is Phase.PROGRESSING:
        return None
    if status.phase is Phase.ROLLING_BACK:
        return f"the rollout is already rolling back: {status.message}"
    if status.phase is Phase.ROLLED_BACK:
        return f"the rollout is already rolled back: the canary has {status.canary_weight}%"
    if status.phase is Phase.SUCCEEDED:
        return (
            "the rollout has succeeded: the canary has all the traffic and is what serves now; "
            "to go back, release the previous version (change spec.canary)"
        )
    return f"nothing to abort: the rollout has not started ({_state(status)})"


def _pause(rollout: Rollout) -> str | None:
    status = rollout.status
    if status.phase is not Phase.PROGRESSING:
        return f"only a Progressing rollout can be paused; this one is {_state(status)}"
    if status.paused is not None:
        by = f" by {status.paused.by}" if status.paused.by else ""
        return f"the rollout is already paused{by} since {format_time(status.paused.since)}"
    return None


def _resume(rollout: Rollout) -> str | None:
    status = rollout.status
    if status.paused is None:
        return f"the rollout is not paused ({_state(status)})"
    return None


def _retry(rollout: Rollout) -> str | None:
    status = rollout.status
    if status.phase is Phase.ROLLED_BACK:
        return None
    if status.phase is Phase.PROGRESSING:
        return f"the rollout is Progressing (step {status.step_label}): retry starts a rolled-back rollout again"
    return f"only a RolledBack rollout can be retried; this one is {_state(status)}"


_REFUSALS = {"promote": _promote, "abort": _abort, "pause": _pause, "resume": _resume, "retry": _retry}
