"""Which node owns which bucket of a load-balancing group: a pure function of the
members and their power, so every node computes the same table without talking.

Each (bucket, node) pair gets a weighted rendezvous score; pairs are taken best
first and a node stops taking buckets once it holds its quota (its power's share of
the buckets, rounded by largest remainder).  Quotas make the shares exact; the
scores make the table stable: when a node leaves, nearly only its own buckets move
(docs/farm.md gives the measured margin), and a joining node takes buckets from
everyone in proportion.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import lru_cache

NO_OWNER = ""


def _unit(group: str, node: str, bucket: int) -> float:
    """A uniform draw in (0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(f"{group}\0{node}\0{bucket}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


def _quotas(powers: Mapping[str, int], nbuckets: int) -> dict[str, int]:
    total = sum(powers.values())
    exact = {n: nbuckets * p / total for n, p in powers.items()}
    quota = {n: int(x) for n, x in exact.items()}
    left = nbuckets - sum(quota.values())
    for n in sorted(powers, key=lambda n: (quota[n] - exact[n], n))[:left]:
        quota[n] += 1
    return quota


@lru_cache(maxsize=64)
def _table(group: str, members: tuple[tuple[str, int], ...], nbuckets: int) -> tuple[str, ...]:
    powers = {n: p for n, p in members if p > 0}
    if not powers:
        # Every member has power 0: rather than nobody, everybody serves, evenly.
        powers = {n: 1 for n, _ in members}
    if not powers:
        return (NO_OWNER,) * nbuckets
    quota = _quotas(powers, nbuckets)
    scores = sorted(
        ((-p / math.log(_unit(group, n, b)), n, b) for n, p in powers.items() for b in range(nbuckets)),
        reverse=True,
    )
    owners = [NO_OWNER] * nbuckets
    for _, node, bucket in scores:
        if not owners[bucket] and quota[node]:
            owners[bucket] = node
            quota[node] -= 1
    return tuple(owners)


def assign(group: str, powers: Mapping[str, int], nbuckets: int) -> tuple[str, ...]:
    """The owner of each bucket of `group` when the members are the keys of `powers`."""
    return _table(group, tuple(sorted(powers.items())), nbuckets)
