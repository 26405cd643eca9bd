"""The caches keep watched objects without `metadata.managedFields` (nothing reads it; a quarter of a Rollout's
memory), and never change the object the watch delivered."""

from __future__ import annotations

import copy
from typing import Any

from coalmine.adapters.kube import IstioCache, cached
from coalmine.runtime import Operator, OperatorConfig

MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]


def _obj(kind: str, rv: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "order", "namespace": "shop", "resourceVersion": str(rv), "managedFields": MANAGED},
        "spec": {"virtualService": {"name": "order"}} if kind == "Rollout" else {"hosts": ["order"]},
    }


def test_cached_drops_only_managed_fields_and_copies() -> None:
    obj = _obj("VirtualService", 1)
    delivered = copy.deepcopy(obj)
    kept = cached(obj)
    assert "managedFields" not in kept["metadata"]
    assert {**kept["metadata"], "managedFields": MANAGED} == delivered["metadata"]
    assert kept["spec"] == delivered["spec"]
    assert obj == delivered, "the watch's object is left as it came"
    bare = {"metadata": {"name": "x"}}
    assert cached(bare) is bare


def test_the_istio_cache_and_the_rollout_cache_keep_no_managed_fields() -> None:
    istio = IstioCache()
    assert istio.observe("virtualservices", "ADDED", _obj("VirtualService", 1))
    assert istio.observe("destinationrules", "ADDED", _obj("DestinationRule", 1))
    assert "managedFields" not in istio.virtual_services["shop", "order"]["metadata"]
    assert "managedFields" not in istio.rules["shop"]["order"]["metadata"]
    assert not istio.observe("virtualservices", "MODIFIED", _obj("VirtualService", 1)), "an echo is no news"

    op = Operator(config=OperatorConfig())
    op.observe("ADDED", _obj("Rollout", 5))
    assert "managedFields" not in op.bodies["shop/order"]["metadata"]
    assert op.bodies["shop/order"]["metadata"]["resourceVersion"] == "5"
