"""The judges of issue 14 on the real stack: relative checks against the stable on the same window, dry-run
metrics, the statistical judge, and `coalmine replay` over the same Prometheus data the operator used."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rollout_support import OperatorProcess, Shop, ts

from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

RPS = 150.0
HOLD_30 = [{"weight": 10}, {"weight": 30, "hold": "20s"}, {"weight": 50}, {"weight": 100}]


def _metric(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((m for m in (status.get("analysis") or {}).get("metrics", []) if m["name"] == name), {})


@pytest.mark.parametrize("checks", ["relative", "absolute"])
def test_a_failure_shared_by_stable_and_canary(
    checks: str, shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """A shared dependency fails both versions alike (20 % errors): relative checks see a canary no worse
    than its stable and promote; absolute ones roll it back."""
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    for subset in ("v1", "v2"):
        meshsim.client.set_destination(shop.ns, "order", subset, error_ratio=0.2)
    # 15 points: at 20 % of 150 rps a 4-s window holds ~120 canary requests (one standard deviation of the
    # difference is ~4 points), and the windows right after the shift read the canary 7-11 points below
    # the stable (4 of 5 runs with a 5-point bound and a 10-s hold, 1 of 5 with 10 points: the new canary
    # series under rate(); noted in the closing note of 2026-12-01). The test is about a failure
    # both versions share, which an absolute bound rolls back and a relative one does not.
    # The 8-s interval is the window of the check the relative case reads, 8 s into a 20-s hold: ~240 canary
    # requests, one standard deviation of its rate ~3 points against the 10-point band it asserts. With the
    # 4-s window a check 3 s into the step read 93.2 % (CI of 2026-12-02, 1 in 953 tests).
    success = {"min": 50, "maxDropVsStable": 15} if checks == "relative" else {"min": 95}
    op = operator_factory(shop.ns)
    shop.create_rollout(
        steps=[{"weight": 20, "hold": "20s"}, {"weight": 100, "hold": "3s"}],
        analysis={"interval": "8s", "successRate": success, "failFast": {"enabled": False}},
    )
    if checks == "relative":
        # A check whose whole window is the step's: before that the canary's 503 series may have one sample
        # only, which rate() cannot use, and the first checks can read 100 % (seen: "assert 100 < 90").
        at_20 = shop.wait_for(
            lambda s: (
                s.get("canaryWeight") == 20
                and "stableValue" in _metric(s, "success-rate")
                and bool(s.get("stepStartedAt"))
                and (ts(s["analysis"]["checkedAt"]) - ts(s["stepStartedAt"])).total_seconds() >= 8
            ),
            45,
            "a check at 20 % with the stable's value, 8 s into the step",
            op,
        )
        row = _metric(at_20, "success-rate")
        assert at_20["analysis"]["window"] == "8s"
        assert 70 < row["value"] < 90
        assert 70 < row["stableValue"] < 90, "the stable failed alike, on the same window"
        assert 'destination_version="v1"' in row["stableQuery"]
        assert "drop vs stable <= 15%" in row["threshold"]
        shop.wait_for_phase("Succeeded", 60, op)
    else:
        status = shop.wait_for_phase("RolledBack", 60, op)
        assert status["rollback"]["reason"] == "FailureLimit"
        assert status["rollback"]["metric"] == "success-rate"


def test_a_canary_three_points_worse_than_its_stable_is_rolled_back(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.03)
    op = operator_factory(shop.ns)
    shop.create_rollout(
        steps=[{"weight": 30, "hold": "30s"}, {"weight": 100}],
        analysis={"interval": "10s", "successRate": {"min": 90, "maxDropVsStable": 1}, "failFast": {"enabled": False}},
    )
    status = shop.wait_for_phase("RolledBack", 90, op)
    assert status["rollback"]["metric"] == "success-rate"
    assert "points below the stable's" in status["message"]
    assert shop.primary_weights() == {"v1": 100, "v2": 0}


def test_a_failing_dry_run_metric_changes_nothing(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    op = operator_factory(shop.ns)
    trial = {"name": "queue-depth", "query": "vector(250)", "max": 10, "dryRun": True}
    shop.create_rollout(
        steps=[{"weight": 20, "hold": "4s"}, {"weight": 100, "hold": "2s"}], analysis={"metrics": [trial]}
    )
    status = shop.wait_for_phase("Succeeded", 60, op)
    row = _metric(status, "queue-depth")
    assert (row["value"], row["verdict"], row["dryRun"]) == (250, "Fail", True)
    assert [h["weight"] for h in status["history"]] == [20, 100]


def test_a_canary_whose_pods_lack_sidecars_fails_the_traffic_check_with_both_numbers(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """70 % of the canary's requests are served by pods without a sidecar, so Prometheus sees it get about
    11 % of the route's requests while the routes give it 30 %: every other check passes (the requests
    that are reported are all healthy), and the traffic check rolls it back with TrafficMismatch."""
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    meshsim.client.set_destination(shop.ns, "order", "v2", sidecarless=0.7)
    shop.patch_vs([{"op": "remove", "path": f"/spec/http/{shop.route_index('beta')}"}])  # it also sends to v2
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=[{"weight": 30, "hold": "60s"}, {"weight": 100}], analysis={"interval": "3s"})
    status = shop.wait_for_phase("RolledBack", 90, op)
    assert status["rollback"]["metric"] == "traffic"
    assert "TrafficMismatch" in status["message"]
    row = _metric(status, "traffic")
    assert row["verdict"] == "Fail"
    assert 5 < row["value"] < 20, "about 30 % x 0.3 / (70 % + 30 % x 0.3) = 11 % of the reported requests"
    assert row["threshold"].startswith("30% ± ")
    assert _metric(status, "success-rate")["verdict"] == "Pass", "the reported requests were all healthy"
    assert shop.primary_weights() == {"v1": 100, "v2": 0}


def test_the_statistical_judge_rolls_back_a_worse_canary_and_says_inconclusive_first(
    shop: Shop, meshsim: Any, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Mann-Whitney U over per-interval samples (4 scrapes each): too few samples at first, then a canary
    whose success rate is consistently worse than the stable's fails, with its p-value in the status."""
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.08)
    op = operator_factory(shop.ns)
    shop.create_rollout(
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100}],
        analysis={
            "interval": "60s",
            "successRate": {"min": 50},
            "judge": {"kind": "mannWhitney", "confidence": 0.95, "minSamples": 5},
            "failFast": {"enabled": False},
        },
    )
    inconclusive = shop.wait_for(
        lambda s: (s.get("analysis") or {}).get("verdict") == "Inconclusive", 30, "an inconclusive check", op
    )
    assert "the judge needs 5 each" in inconclusive["message"]
    status = shop.wait_for_phase("RolledBack", 90, op)
    row = _metric(status, "success-rate-vs-stable")
    assert row["verdict"] == "Fail"
    assert row["score"] < 0.05
    assert row["value"] < row["stableValue"]
    assert status["rollback"]["metric"] == "success-rate-vs-stable"


def test_replay_reproduces_the_rollback_the_operator_made(
    shop: Shop,
    meshsim: Any,
    operator_factory: Callable[..., OperatorProcess],
    stack: devstack.StackInfo,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    meshsim.client.set_service(shop.ns, "order", rps=RPS)
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=HOLD_30, analysis={"failFast": {"enabled": False}})
    shop.wait_for(lambda s: s.get("canaryWeight") == 30, 60, "at 30 %", op)
    time.sleep(3)
    meshsim.client.set_destination(shop.ns, "order", "v2", error_ratio=0.5)
    status = shop.wait_for_phase("RolledBack", 30, op)
    started, rolled_back = ts(status["startedAt"]), ts(status["rollback"]["at"])
    time.sleep(2)  # the last scrapes land

    def replay(*extra: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "coalmine", "replay", "-n", shop.ns, "order", "--kubeconfig", str(kubeconfig)]
        argv += ["--from", status["startedAt"], "--to", (rolled_back + timedelta(seconds=10)).isoformat()]
        argv += ["--prometheus-url", stack.prometheus_url, "--scrape-interval", stack.scrape_interval, "-o", "json"]
        done = subprocess.run(
            [*argv, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    replayed = replay()
    assert replayed["outcome"] == "RolledBack"
    at = ts(replayed["at"])
    print(
        f"\noperator rolled back at +{(rolled_back - started).total_seconds():.2f} s, replay at +{(at - started).total_seconds():.2f} s"
    )
    # Give or take one check (checkEvery 1s), and the write latency: the operator's steps begin when their
    # traffic arrived (f84e2d5), replay's at its decisions (a clean-clone run read 1.238 s with 0.2 s allowed).
    assert abs((at - rolled_back).total_seconds()) <= 1.0 + 0.5, "the same check, give or take one"

    # Another threshold on the same data: a 40 % bound would have let it through that check.
    lenient = tmp_path / "spec.yaml"
    lenient.write_text(json.dumps({"analysis": {"interval": "3s", "checkEvery": "1s", "successRate": {"min": 40}}}))
    assert replay("--spec", str(lenient))["outcome"] != "RolledBack"
