"""An operator killed (or cut off from the API server) between moving traffic and recording the weight leaves
`status.canaryWeight` behind the routes. Found by bench/chaos.py: the next tick decided a rollback and wrote
RollingBack with the stale weight (canaryWeight 0 while the routes gave the canary 10 %), a status untrue of the
VirtualService until the rollback's write landed, and for as long as a failover takes if the new leader dies too.
"""

from __future__ import annotations

from datetime import timedelta

from builders import T0, rollout, spec
from test_plan import Mesh, check

from coalmine.core import plan
from coalmine.core.models import Phase, Verdict


def test_a_rollback_decided_after_a_lost_weight_record_records_the_weight_the_routes_have() -> None:
    mesh = Mesh()
    body = spec(analysis={"interval": "30s", "checkEvery": "10s", "maxNoData": "1m", "failureLimit": 1})
    r = rollout(body)
    start = plan.decide(r, mesh.resolve(r), None, T0)
    assert start.traffic is not None
    assert start.weight == 10
    r = r.model_copy(update={"status": start.status})
    mesh.write(start.traffic, start.weight)  # the routes moved to 10 % ...
    assert (r.status.canary_weight, mesh.canary()) == (0, 10)  # ... and the operator died before recording it

    decision = plan.decide(r, mesh.resolve(r), check(Verdict.FAIL, 60.0), T0 + timedelta(seconds=10))
    assert decision.status.phase is Phase.ROLLING_BACK
    assert decision.weight == 0
    assert decision.status.canary_weight == 10, "the status says what the routes have until the write lands"
    assert "step 1/4 (10%)" in (decision.status.message or "")
