"""IstioCache's DestinationRules by host: a tick asks for the rules of its own hosts (validation.rule_hosts)
and gets them from an index, kept current through adds, host changes and deletes."""

from __future__ import annotations

from typing import Any

from builders import rollout, spec, virtual_service

from coalmine.adapters.kube import IstioCache
from coalmine.core.validation import rule_hosts


def _rule(name: str, host: str, rv: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": str(rv)}, "spec": {"host": host}}


def _names(rules: list[dict[str, Any]]) -> list[str]:
    return sorted(r["metadata"]["name"] for r in rules)


def test_rules_are_found_by_the_first_label_of_their_host() -> None:
    cache = IstioCache()
    cache.observe("destinationrules", "ADDED", _rule("order", "order"))
    cache.observe("destinationrules", "ADDED", _rule("order-fqdn", "order.shop.svc.cluster.local"))
    for i in range(100):
        cache.observe("destinationrules", "ADDED", _rule(f"svc-{i}", f"svc-{i}"))
    assert _names(cache.rules_for("shop", {"order"})) == ["order", "order-fqdn"]
    assert len(cache.rules_for("shop", None)) == 102
    assert cache.rules_for("other", {"order"}) == []


def test_a_host_change_and_a_delete_move_the_rule_in_the_index() -> None:
    cache = IstioCache()
    cache.observe("destinationrules", "ADDED", _rule("r", "order"))
    cache.observe("destinationrules", "MODIFIED", _rule("r", "cart", rv=2))
    assert cache.rules_for("shop", {"order"}) == []
    assert _names(cache.rules_for("shop", {"cart"})) == ["r"]
    cache.observe("destinationrules", "MODIFIED", _rule("r", "order", rv=1))  # older: ignored
    assert _names(cache.rules_for("shop", {"cart"})) == ["r"]
    cache.observe("destinationrules", "DELETED", _rule("r", "cart", rv=3))
    assert cache.rules_for("shop", {"cart"}) == []
    assert cache.rules_for("shop", None) == []


def test_the_hosts_a_tick_asks_for_cover_its_routes_and_spec() -> None:
    hosts = rule_hosts(rollout(), virtual_service())
    assert hosts is not None
    assert "order" in hosts
    named = rollout({**spec(), "destinationRule": {"name": "order-rules"}})
    assert rule_hosts(named, virtual_service()) is None, "a named rule is looked up by name among all"
