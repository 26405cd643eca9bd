"""bench/chaos_checker.py's rollback-bound: README's bound counts from when the failing canary has served
FILL_REQUESTS requests at its weight (before that no check can see the failure), and no later."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chaos_checker import FILL_REQUESTS, Checker, Injection
from chaos_history import Write

BOUND = 12.0  # 2 scrapes of 2 s + failureLimit 2 x checkEvery 3 s + 2 s, as bench/chaos.py's defaults
T0 = 1_000_000.0


def _rollout(phase: str, weight: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "svc", "namespace": "ns", "generation": 1},
        "spec": {"virtualService": {"name": "svc"}, "stable": {"subset": "v1"}, "canary": {"subset": "v2"}},
        "status": {"observedGeneration": 1, "phase": phase, "canaryWeight": weight, "canary": {"subset": "v2"}},
    }


def _vs(canary: int) -> dict[str, Any]:
    route = [
        {"destination": {"host": "svc", "subset": "v1"}, "weight": 100 - canary},
        {"destination": {"host": "svc", "subset": "v2"}, "weight": canary},
    ]
    return {"metadata": {"name": "svc", "namespace": "ns"}, "spec": {"hosts": ["svc"], "http": [{"route": route}]}}


def _rollback_violations(injection: Injection, rolled_back_after: float) -> list[str]:
    at = injection.at + rolled_back_after
    writes = [
        Write(1, T0, "rollouts", "ns", "svc", _rollout("Progressing", 10)),
        Write(2, T0, "virtualservices", "ns", "svc", _vs(10)),
        Write(3, at, "rollouts", "ns", "svc", _rollout("RollingBack", 0)),
        Write(4, at, "virtualservices", "ns", "svc", _vs(0)),
    ]
    found = Checker(writes, [], [injection], rollback_bound=BOUND, stuck_bound=600, run_end=at + 1).run()
    assert found.judged["rollback-bound"] == 1
    return [v.detail for v in found.violations if v.invariant == "rollback-bound"]


def test_the_fill_time_is_the_time_to_serve_fill_requests_at_the_canary_s_weight() -> None:
    assert Injection("ns/svc", 1, "v2", T0, weight=10, rps=25.0).fill_seconds() == pytest.approx(FILL_REQUESTS / 2.5)
    assert Injection("ns/svc", 1, "v2", T0, weight=50, rps=25.0).fill_seconds() == pytest.approx(FILL_REQUESTS / 12.5)
    assert Injection("ns/svc", 1, "v2", T0).fill_seconds() == 0.0, "unknown weight (older run.json): no term"


def test_a_low_traffic_canary_gets_the_time_to_serve_its_requests_and_no_more() -> None:
    slow = Injection("ns/svc", 1, "v2", T0 + 0.1, weight=10, rps=25.0)  # 2.5 requests/s: 4 s to serve 10
    assert _rollback_violations(slow, BOUND + 3.9) == []
    late = _rollback_violations(slow, BOUND + 4.1)
    assert len(late) == 1
    assert "at 10% reached 0 after 16.1 s" in late[0]


def test_without_the_traffic_term_the_bound_is_readme_s() -> None:
    unknown = Injection("ns/svc", 1, "v2", T0 + 0.1)
    assert _rollback_violations(unknown, BOUND - 0.1) == []
    assert len(_rollback_violations(unknown, BOUND + 0.1)) == 1
