"""Which node owns which bucket of a load-balancing group: a pure function of the
members and their power, so every node computes the same table without talking.

Each (bucket, node) pair gets a weighted rendezvous score; pairs are taken best
first and a node stops taking buckets once it holds its quota (its power's share of
the buckets, rounded by largest remainder).  Quotas make the shares exact; the
scores make the table stable: when a node leaves, nearly only its own buckets move
(docs/farm.md gives the measured margin), and a joining node takes buckets from
everyone in proportion.

A node's draws do not depend on the other members: each is ranked once (`_ranking`,
kept), and a change of members only runs the greedy step (`hakit._buckets`, C), which
looks at a few pairs per bucket instead of sorting them all.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Mapping
from functools import lru_cache

from hakit import _buckets

NO_OWNER = ""


def unit(group: str, node: str, bucket: int) -> float:
    """A uniform draw in (0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(f"{group}\0{node}\0{bucket}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


def quotas(powers: Mapping[str, int], nbuckets: int) -> dict[str, int]:
    total = sum(powers.values())
    exact = {n: nbuckets * p / total for n, p in powers.items()}
    quota = {n: int(x) for n, x in exact.items()}
    left = nbuckets - sum(quota.values())
    for n in sorted(powers, key=lambda n: (quota[n] - exact[n], n))[:left]:
        quota[n] += 1
    return quota


@lru_cache(maxsize=1024)
def _ranking(group: str, node: str, nbuckets: int) -> tuple[array, array]:
    """The node's buckets best score first (log of the draw descending, then the bucket
    descending, as the pair's score -power/log(u) orders them whatever the power)."""
    logs = [math.log(unit(group, node, b)) for b in range(nbuckets)]
    order = sorted(range(nbuckets), key=lambda b: (logs[b], b), reverse=True)
    return array("d", (logs[b] for b in order)), array("H", order)


@lru_cache(maxsize=64)
def _table(group: str, members: tuple[tuple[str, int], ...], nbuckets: int) -> tuple[str, ...]:
    powers = {n: p for n, p in members if p > 0}
    if not powers:
        # Every member has power 0: rather than nobody, everybody serves, evenly.
        powers = {n: 1 for n, _ in members}
    if not powers:
        return (NO_OWNER,) * nbuckets
    names = sorted(powers)
    share = quotas(powers, nbuckets)
    ranked = [_ranking(group, n, nbuckets) for n in names]
    owners = _buckets.assign([r[0] for r in ranked], [r[1] for r in ranked], [powers[n] for n in names],
                             [share[n] for n in names], nbuckets)
    return tuple(map(names.__getitem__, owners))


def assign(group: str, powers: Mapping[str, int], nbuckets: int) -> tuple[str, ...]:
    """The owner of each bucket of `group` when the members are the keys of `powers`."""
    return _table(group, tuple(sorted(powers.items())), nbuckets)


@lru_cache(maxsize=1024)
def _owned(group: str, members: tuple[tuple[str, int], ...], nbuckets: int, node: str) -> tuple[int, ...]:
    return tuple(b for b, owner in enumerate(_table(group, members, nbuckets)) if owner == node)


def owned(group: str, powers: Mapping[str, int], nbuckets: int, node: str) -> tuple[int, ...]:
    """The buckets `node` owns in assign(group, powers, nbuckets)."""
    return _owned(group, tuple(sorted(powers.items())), nbuckets, node)
