"""The CRD is the public contract: it must match the models and describe every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from coalmine.core.models import (
    Analysis,
    Approval,
    Capacity,
    HandledRequest,
    HistoryEntry,
    Latency,
    MirrorStatus,
    Pause,
    Phase,
    Readiness,
    ReadinessStatus,
    Request,
    RollbackInfo,
    RolloutSpec,
    RolloutStatus,
    Step,
    SuccessRate,
    format_duration,
)

CRD = yaml.safe_load((Path(__file__).parents[2] / "crds" / "rollout.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
STATUS = SCHEMA["properties"]["status"]


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize(("path", "node"), [pytest.param(p, n, id=p) for p, n in _walk(SPEC, "spec")])
def test_every_spec_field_is_described_for_kubectl_explain(path: str, node: dict[str, Any]) -> None:
    if path.endswith("[]"):
        return  # list items are described by their list
    assert node.get("description"), f"{path} has no description"


def _aliases(model: type[BaseModel]) -> set[str]:
    """The fields a model reads and writes on the wire (an excluded field is never written)."""
    return {field.alias or name for name, field in model.model_fields.items() if not field.exclude}


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        pytest.param(SPEC, RolloutSpec, id="spec"),
        pytest.param(SPEC["properties"]["analysis"], Analysis, id="analysis"),
        pytest.param(STATUS, RolloutStatus, id="status"),
        pytest.param(SPEC["properties"]["steps"]["items"], Step, id="step"),
        pytest.param(STATUS["properties"]["paused"], Pause, id="paused"),
        pytest.param(STATUS["properties"]["rollback"], RollbackInfo, id="rollback"),
        pytest.param(STATUS["properties"]["history"]["items"], HistoryEntry, id="history"),
        pytest.param(STATUS["properties"]["history"]["items"]["properties"]["request"], Request, id="history-request"),
        pytest.param(STATUS["properties"]["lastRequest"], HandledRequest, id="lastRequest"),
        pytest.param(SPEC["properties"]["readiness"], Readiness, id="readiness"),
        pytest.param(STATUS["properties"]["readiness"], ReadinessStatus, id="status-readiness"),
        pytest.param(STATUS["properties"]["mirror"], MirrorStatus, id="status-mirror"),
    ],
)
def test_schema_properties_match_model_fields(schema: dict[str, Any], model: type[BaseModel]) -> None:
    assert set(schema["properties"]) == _aliases(model)


def test_schema_defaults_match_model_defaults() -> None:
    analysis = SPEC["properties"]["analysis"]["properties"]
    defaults = Analysis()
    assert analysis["interval"]["default"] == format_duration(defaults.interval)
    assert analysis["checkEvery"]["default"] == format_duration(defaults.check_every)
    assert analysis["maxNoData"]["default"] == format_duration(defaults.max_no_data)
    assert analysis["minRequests"]["default"] == defaults.min_requests
    assert analysis["failureLimit"]["default"] == defaults.failure_limit
    assert analysis["successRate"]["properties"]["min"]["default"] == SuccessRate().min
    assert analysis["latency"]["properties"]["quantile"]["default"] == Latency().quantile
    assert analysis["latency"]["properties"]["maxMs"]["default"] == Latency().max_ms
    steps = RolloutSpec.model_fields["steps"].default
    assert SPEC["properties"]["steps"]["default"] == [{"weight": s.weight} for s in steps]
    assert SPEC["properties"]["steps"]["items"]["properties"]["approval"]["enum"] == [a.value for a in Approval]
    assert Step(weight=10).approval is Approval.AUTO, "omitted, a step goes on by itself"
    readiness = SPEC["properties"]["readiness"]["properties"]
    assert readiness["minReady"]["default"] == Readiness().min_ready
    assert readiness["capacity"]["default"] == Readiness().capacity.value
    assert readiness["capacity"]["enum"] == [c.value for c in Capacity]
    assert readiness["timeout"]["default"] == format_duration(Readiness().timeout)


def test_status_subresource_and_printer_columns() -> None:
    version = CRD["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Weight": ".status.canaryWeight",
        "Step": ".status.stepLabel",
        "Age": ".metadata.creationTimestamp",
        "Message": ".status.message",
    }
    assert STATUS["properties"]["phase"]["enum"] == [p.value for p in Phase]
