"""A namespace of 1,000 services decides as an empty one: claims on other route objects and DestinationRules
of other hosts change nothing. So the tick may be handed only its own (the runtime's claims by route, the
cache's rules by host: bench/scale.py --at-rest found the scans of all of them at 70 % of the operator's CPU)."""

from __future__ import annotations

import copy
from datetime import datetime

from builders import destination_rule, rollout, spec, virtual_service

from coalmine.core.validation import Claim, Cluster, resolve

CROWD = 1000


def crowd_rules() -> list[dict[str, object]]:
    rules = []
    for i in range(CROWD):
        rule = destination_rule(f"svc-{i}")
        rule["spec"]["host"] = f"svc-{i}"
        rules.append(rule)
    return rules


def crowd_claims() -> tuple[Claim, ...]:
    return tuple(Claim(f"svc-{i}", f"svc-{i}", ("primary",), datetime(2026, 1, 1), True) for i in range(CROWD))


def test_a_crowded_namespace_resolves_as_an_empty_one() -> None:
    r = rollout()
    alone = resolve(r, Cluster(virtual_service(), [destination_rule()]))
    crowded = resolve(r, Cluster(virtual_service(), [*crowd_rules(), destination_rule()], crowd_claims()))
    assert alone.problem is None
    assert crowded == alone


def test_two_rules_for_one_host_are_still_found_among_many() -> None:
    other = destination_rule("order-copy")
    crowded = resolve(rollout(), Cluster(virtual_service(), [*crowd_rules(), destination_rule(), other]))
    assert crowded.problem is not None
    assert "DestinationRules order, order-copy in shop all have host order" in crowded.problem.message


def test_a_rule_with_the_fqdn_host_is_found_among_many() -> None:
    fqdn = destination_rule()
    fqdn["spec"]["host"] = "order.shop.svc.cluster.local"
    assert resolve(rollout(), Cluster(virtual_service(), [*crowd_rules(), fqdn])).problem is None


def test_a_named_rule_is_found_among_many() -> None:
    named = destination_rule("order-rules")
    body = copy.deepcopy(spec())
    body["destinationRule"] = {"name": "order-rules"}
    resolution = resolve(rollout(body), Cluster(virtual_service(), [*crowd_rules(), named]))
    assert resolution.problem is None
    assert resolution.target is not None
    assert resolution.target.destination_rule == "order-rules"


def test_an_older_claim_on_the_same_route_still_wins_among_many() -> None:
    older = Claim("order-first", "order", ("primary",), datetime(2020, 1, 1), False)
    resolution = resolve(rollout(), Cluster(virtual_service(), [destination_rule()], (*crowd_claims(), older)))
    assert resolution.problem is not None
    assert resolution.problem.claimed_by == "order-first"
