"""Durations the CRD's pattern accepts but no clock can hold. Found by tests/integration/test_fuzz.py: a step hold
of "99999999999h" made the tick raise OverflowError (timedelta) on every try, "tick of ... failed" every 5 s
forever, and the Rollout never said why; "99999999h" fits a timedelta but not a date 11,000 years out, so the
step's end could not be computed. Both must be Invalid, naming the field, with nothing written.
"""

from __future__ import annotations

import pytest
from builders import T0, virtual_service
from test_reconcile import FakeKube, FakePrometheus, _body, _ports

from coalmine import reconcile


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("steps", 0, "hold"), "99999999999h"),
        (("steps", 0, "hold"), "99999999h"),
        (("analysis", "interval"), "100000000000000000000ms"),
        (("analysis", "maxNoData"), "2562048h"),
    ],
)
async def test_a_duration_beyond_any_clock_is_invalid_with_the_field(path: tuple[str | int, ...], value: str) -> None:
    kube = FakeKube(virtual_service())
    body = _body({})
    target = body["spec"]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    outcome = await reconcile.tick(body, _ports(kube, FakePrometheus(99.9), T0))
    assert outcome.body is not None
    status = outcome.body["status"]
    field = "spec." + ".".join(str(p) for p in path).replace(".0.", "[0].")
    assert status["phase"] == "Invalid", status
    assert field in status["message"], status["message"]
    assert "vs" not in kube.calls
