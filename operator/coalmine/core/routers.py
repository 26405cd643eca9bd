"""The traffic routers behind one small interface (Flagger's per-mesh router is the model): what the shell
needs to move a Rollout's traffic, whichever object carries it.

    VirtualService  Istio (sidecars)          spec.virtualService   http routes, destinations with subsets
    HTTPRoute       Gateway API (ambient,     spec.httpRoute        rules, backendRefs of one Service per version;
                    ingress Gateway, GAMMA)                         its controller reports Accepted/ResolvedRefs

Both share the resolution (validation.py over routes.py), the status, the plan and the rollback; a router
adds only its guarded weight patch and whether its controller has taken the object as it is now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coalmine.core import httproute, virtualservice
from coalmine.core.models import HTTP_ROUTE, VIRTUAL_SERVICE
from coalmine.core.validation import Traffic

JsonDict = Mapping[str, Any]
Op = dict[str, Any]


def _always_ready(_: JsonDict) -> str | None:
    return None  # istiod reports nothing per VirtualService generation: written is in force


@dataclass(frozen=True)
class Router:
    kind: str
    group: str
    version: str
    plural: str
    weight_patch: Callable[[JsonDict, Traffic, int], list[Op]]  # the guarded owned-fields-only patch
    not_ready: Callable[[JsonDict], str | None]  # why the controller has not taken this generation; None: it has


ROUTERS = {
    VIRTUAL_SERVICE: Router(
        VIRTUAL_SERVICE, "networking.istio.io", "v1", "virtualservices", virtualservice.weight_patch, _always_ready
    ),
    HTTP_ROUTE: Router(
        HTTP_ROUTE, "gateway.networking.k8s.io", "v1", "httproutes", httproute.weight_patch, httproute.not_accepted
    ),
}


def router(kind: str) -> Router:
    return ROUTERS[kind]
