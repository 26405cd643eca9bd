"""Which replica ticks which Rollout when several run: a fixed number of shards, one Lease each.

A Rollout's shard is a hash of its namespace/name over the shard count, the same on every replica
and across restarts (sha256, not Python's per-process `hash`). A replica ticks the Rollouts of the
shards whose Lease it holds; each Lease is won and kept as the single leader Lease is
(adapters/election.py), so no Rollout is ever ticked by two replicas at once. Replicas take at most
their fair share of the shards, so a new replica gets some and a dead one's move to the others.
"""

from __future__ import annotations

import hashlib
import math


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of Rollout namespace/name, in 0 .. shards-1."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def fair_share(shards: int, replicas: int) -> int:
    """The most shards one of `replicas` live replicas takes: together they hold them all."""
    return math.ceil(shards / max(1, replicas))


def to_hand_over(held: set[int], shards: int, replicas: int) -> list[int]:
    """The shards a replica holding `held` gives up so that no replica holds more than its fair share
    (the highest first, so replicas converge on the same split)."""
    excess = len(held) - fair_share(shards, replicas)
    return sorted(held, reverse=True)[:excess] if excess > 0 else []
