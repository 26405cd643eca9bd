"""`coalmine demo --fast` end to end on the session's real stack: outcomes, untouched objects, the PNG.

The demo runs as a subprocess, reusing the session devstack through `--state-dir` (so it must
leave that stack running), in the test's fresh namespace. What it reports is checked against
the cluster itself: the VirtualService and DestinationRule are compared with examples/ as
applied, not with the demo's own record.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rollout_support import COALMINE, ISTIO

from coalmine_dev.demo import scenario
from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_promotes_v2_rolls_back_v3_and_touches_nothing_else(
    stack: devstack.StackInfo, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "demo-output"
    argv = [sys.executable, "-m", "coalmine", "demo", "--fast", "--state-dir", str(stack.state_dir)]
    argv += ["--namespace", namespace, "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    log = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, log
    assert "\x1b" not in done.stdout, "control codes in the non-interactive output"

    summary = json.loads((output / "summary.json").read_text())
    first, second = summary["scenarios"]
    assert (first["stable"], first["canary"], first["phase"]) == ("v1", "v2", "Succeeded"), log
    assert first["history"] == [10, 30, 50, 100]
    # The 50 % step waited for a person, and the demo's person promoted it with the CLI.
    assert "step 3/4 waits for a person (approval: manual)" in done.stdout, log
    assert f"$ coalmine promote order -n {namespace}" in done.stdout, log
    assert "applied: promote by" in done.stdout, log
    assert first["vsWeights"] == [0, 10, 30, 50, 100], "canary weights seen on the VirtualService, in order"
    assert first["abRoute"] is None, "scenario 1 has no A/B step"
    assert (second["stable"], second["canary"], second["phase"]) == ("v2", "v3", "RolledBack"), log
    assert second["canaryWeight"] == 0
    assert second["vsWeights"][-1] == 0
    assert 30 in second["vsWeights"], "v3 failed part-way, after reaching 30 %"
    assert second["rollback"]["reason"] in ("FailFast", "FailureLimit")
    # The seed story's A/B step: the users who opted in (cookie beta=1) got v3 first, through the operator's
    # route ahead of `primary`, while `primary` gave v3 0 %; the route went in the write that began the
    # weights, and the rollback ended without it.
    assert second["history"] == [0, 10, 30], "A/B step (weight 0 on primary), then 10 %, then 30 %"
    assert second["vsStory"][-4:] == ["A/B", "10", "30", "0"], second["vsStory"]
    assert second["vsStory"].count("A/B") == 1
    assert second["abProblem"] == ""
    route = second["abRoute"]
    assert route["name"] == "coalmine-order"
    assert route["match"] == [{"headers": {"cookie": {"regex": ".*beta=1.*"}}}]
    assert [d["destination"]["subset"] for d in route["route"]] == ["v3"]
    primary_before = next(
        r for r in scenario.load_examples(EXAMPLES, namespace).virtual_service["spec"]["http"] if r["name"] == "primary"
    )
    assert (route["retries"], route["timeout"]) == (primary_before["retries"], primary_before["timeout"])
    assert "VirtualService order: route coalmine-order added (routes now beta, coalmine-order, primary)" in done.stdout
    assert "VirtualService order: route coalmine-order removed (canary 10% on primary)" in done.stdout
    # The live view showed the A/B route while it was there, and readiness (kwok's Ready pods).
    assert (
        "|   A/B      route coalmine-order ahead of primary: users with header cookie regex .*beta=1.*" in done.stdout
    )
    assert "|   ready    canary 2 ready pods (needs 1), stable 2 ready" in done.stdout, log
    assert summary["ok"] is True
    assert all(u["equal"] for u in summary["untouched"])
    assert {u["name"]: u["equal"] for u in summary["untouched"]}["VS route coalmine-order (operator's A/B)"]

    # The cluster, read independently: v3 at 0 on the owned route, the rest byte-for-byte as applied.
    custom = client.CustomObjectsApi(api_client)
    rollout: dict[str, Any] = custom.get_namespaced_custom_object(*COALMINE, namespace, "rollouts", "order")
    assert rollout["status"]["phase"] == "RolledBack"
    vs: dict[str, Any] = custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "order")
    dr: dict[str, Any] = custom.get_namespaced_custom_object(*ISTIO, namespace, "destinationrules", "order")
    applied = scenario.load_examples(EXAMPLES, namespace)
    assert [r["name"] for r in vs["spec"]["http"]] == ["beta", "primary"], "the operator's A/B route is gone"
    primary = next(r for r in vs["spec"]["http"] if r["name"] == "primary")
    assert {d["destination"]["subset"]: d["weight"] for d in primary["route"]} == {"v2": 100, "v3": 0}
    routes = ("primary",)
    assert scenario.canonical(scenario.untouched_vs(vs, routes)) == scenario.canonical(
        scenario.untouched_vs(applied.virtual_service, routes)
    )
    assert scenario.canonical(scenario.untouched_dr(dr)) == scenario.canonical(
        scenario.untouched_dr(applied.destination_rule)
    )
    assert dr["metadata"]["generation"] == 1

    png = output / "timeline.png"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000, f"timeline.png is only {len(data)} bytes"

    # It reused the session's stack: still running, and its scrape target is gone.
    assert devstack.is_running(stack.state_dir)
    assert not (stack.state_dir / "targets" / "coalmine-demo-meshsim.json").exists()
