"""deploy/grafana/coalmine.json is valid JSON, and every coalmine_* metric it queries exists in metrics.py
(a renamed metric must not leave the dashboard silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from coalmine import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "coalmine.json"


def exported_names() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            base = value._name  # prometheus_client strips _total from the name it keeps
            names |= {f"{base}_total", f"{base}_created"}
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{suffix}" for suffix in ("bucket", "sum", "count", "created")}
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def test_dashboard_is_valid_and_queries_only_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "coalmine-rollouts"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = {name for expr in queries() for name in re.findall(r"\bcoalmine_[a-z_]+", expr)}
    exported = exported_names()
    assert used, "the dashboard queries no operator metric"
    assert used - exported == set(), f"queried but not exported by coalmine.metrics: {used - exported}"


def test_every_operator_metric_is_on_the_dashboard() -> None:
    text = " ".join(queries())
    for value in vars(metrics).values():
        if isinstance(value, (Counter, Gauge, Histogram)):
            assert value._name in text, f"{value._name} is not on the dashboard"


def test_operator_metrics_sit_next_to_istio_metrics() -> None:
    text = " ".join(queries())
    assert "istio_requests_total" in text
    assert "istio_request_duration_milliseconds_bucket" in text


def test_istio_panels_select_the_reporters_the_checks_use() -> None:
    """The canary panels show what the checks judge: the same reporters as the default queries (an
    ambient namespace reports through its waypoint; a panel on reporter="destination" alone is empty there)."""
    from coalmine.core.analysis import REPORTERS

    istio = [expr for expr in queries() if "istio_request" in expr]
    assert istio
    for expr in istio:
        assert REPORTERS in expr, expr
