"""core/sharding.py: the shard of a Rollout is stable and spreads Rollouts evenly; fair shares cover
every shard and hand over the excess."""

from __future__ import annotations

from collections import Counter

import pytest

from coalmine.core.sharding import fair_share, shard_of, to_hand_over


def test_a_rollouts_shard_is_stable_and_in_range() -> None:
    assert shard_of("shop", "order", 16) == shard_of("shop", "order", 16)
    assert shard_of("shop", "order", 1) == 0
    assert all(0 <= shard_of("ns", f"r-{i}", 7) < 7 for i in range(500))
    # Known values: another process (another replica, a restart) computes the same.
    assert [shard_of("scale-0", f"svc-{i}", 16) for i in range(3)] == [
        int.from_bytes(__import__("hashlib").sha256(f"scale-0/svc-{i}".encode()).digest()[:8], "big") % 16
        for i in range(3)
    ]


def test_rollouts_spread_evenly_over_the_shards() -> None:
    counts = Counter(shard_of(f"ns-{i % 10}", f"svc-{i}", 16) for i in range(10_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.15 * 10_000 / 16


@pytest.mark.parametrize("shards", [1, 2, 7, 16])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5, 20])
def test_fair_shares_cover_every_shard(shards: int, replicas: int) -> None:
    assert fair_share(shards, replicas) * replicas >= shards
    assert fair_share(shards, replicas) >= 1


def test_the_excess_is_handed_over_highest_first() -> None:
    assert to_hand_over({0, 1, 2, 3, 4, 5, 6, 7}, 8, 1) == []
    assert to_hand_over({0, 1, 2, 3, 4, 5, 6, 7}, 8, 2) == [7, 6, 5, 4]
    assert to_hand_over({1, 5, 6}, 8, 3) == []
    assert to_hand_over({1, 5, 6, 7}, 8, 3) == [7]
    assert to_hand_over(set(), 8, 3) == []
