"""Istio as teams run it in 2026 (issue 19) on the real stack: gRPC failures answered with HTTP 200,
ambient telemetry reported by a waypoint, the ambient preflight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rollout_support import OperatorProcess, Shop

pytestmark = pytest.mark.integration

RPS = 100.0
SHORT = [{"weight": 50, "hold": "4s"}, {"weight": 100, "hold": "3s"}]


def _metric(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((m for m in (status.get("analysis") or {}).get("metrics", []) if m["name"] == name), {})


@pytest.mark.parametrize(
    ("code", "listed", "phase"),
    [
        pytest.param(14, [], "RolledBack", id="UNAVAILABLE-rolled-back"),
        pytest.param(5, ["NOT_FOUND"], "Succeeded", id="listed-NOT_FOUND-promoted"),
    ],
)
def test_grpc_failures_answered_with_http_200(
    code: int,
    listed: list[str],
    phase: str,
    shop: Shop,
    meshsim: Any,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """A gRPC canary answering every call with HTTP 200 and grpc-status `code`: a failure unless the
    Rollout lists the code in successRate.grpcSuccessCodes."""
    meshsim.client.set_service(shop.ns, "order", rps=RPS, protocol="grpc")
    meshsim.client.set_destination(shop.ns, "order", "v2", grpc_error_ratio=1.0, grpc_error_code=code)
    op = operator_factory(shop.ns)
    shop.create_rollout(steps=SHORT, analysis={"successRate": {"min": 95, "grpcSuccessCodes": listed}})
    status = shop.wait_for_phase(phase, 60, op)
    if phase == "RolledBack":
        assert status["rollback"]["metric"] == "success-rate"
        assert status["rollback"]["value"] == 0
        assert 'grpc_response_status=~"|0"' in status["rollback"]["query"]
        assert shop.primary_weights() == {"v1": 100, "v2": 0}
    else:
        assert 'grpc_response_status=~"|0|5"' in _metric(status, "success-rate")["query"]
        assert shop.primary_weights() == {"v1": 0, "v2": 100}
    responses = meshsim.client.counts()["responses"][f"{shop.ns}/order/v2"]
    assert set(responses) == {"200"}, "every canary response was an HTTP 200"
