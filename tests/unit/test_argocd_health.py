"""deploy/argocd/health.lua, run with lupa on Rollout objects shaped as the operator writes them
(tests/integration/test_deploy.py runs it on live objects too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Health = Callable[[dict[str, Any]], dict[str, str]]


def rollout(generation: int = 2, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "coalmine.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order", "namespace": "shop", "generation": generation},
        "spec": {"virtualService": {"name": "order"}},
    }
    if status:
        obj["status"] = {"observedGeneration": generation, **status}
    return obj


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", "Progressing"),
        ("Progressing", "Progressing"),
        ("Succeeded", "Healthy"),
        ("RolledBack", "Degraded"),
        ("Invalid", "Degraded"),
        ("Sideways", "Unknown"),
    ],
)
def test_phase_maps_to_health(argocd_health: Health, phase: str, expected: str) -> None:
    assert argocd_health(rollout(phase=phase, message="m"))["status"] == expected


def test_no_status_yet_is_progressing(argocd_health: Health) -> None:
    assert argocd_health(rollout())["status"] == "Progressing"


def test_unobserved_generation_is_progressing_even_after_success(argocd_health: Health) -> None:
    obj = rollout(generation=3, phase="Succeeded", message="done")
    obj["status"]["observedGeneration"] = 2
    result = argocd_health(obj)
    assert result["status"] == "Progressing"
    assert "generation 3" in result["message"]


def test_rollback_message_is_shown(argocd_health: Health) -> None:
    obj = rollout(
        phase="RolledBack",
        canaryWeight=0,
        message="success-rate 50.0 < 95 at step 1 (query: ...)",
        conditions=[{"type": "Ready", "status": "False"}, {"type": "Stalled", "status": "True"}],
        history=[{"weight": 10, "startedAt": "2026-01-01T00:00:00Z"}],
    )
    assert argocd_health(obj) == {"status": "Degraded", "message": "success-rate 50.0 < 95 at step 1 (query: ...)"}


def test_progressing_message_names_the_weight(argocd_health: Health) -> None:
    result = argocd_health(rollout(phase="Progressing", canaryWeight=30, message="step 2/4"))
    assert result["message"] == "canary at 30%: step 2/4"
