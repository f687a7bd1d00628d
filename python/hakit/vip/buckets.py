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
from collections.abc import Iterable, Mapping
from functools import lru_cache

from hakit import _buckets

NO_OWNER = ""


def _draws(group: str, node: str, buckets: Iterable[int]) -> list[float]:
    """unit() of each bucket, what the draws share encoded once (a node ranks every
    member's 4,096 buckets, 32 members at a farm's start)."""
    prefix = f"{group}\0{node}\0".encode()
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [(from_bytes(blake2b(prefix + b"%d" % b, digest_size=8).digest(), "big") + 1) / (2**64 + 2)
            for b in buckets]


def unit(group: str, node: str, bucket: int) -> float:
    """A uniform draw in (0, 1) that depends only on its arguments."""
    return _draws(group, node, (bucket,))[0]


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
    logs = list(map(math.log, _draws(group, node, range(nbuckets))))
    ranked = sorted(zip(logs, range(nbuckets), strict=True), reverse=True)
    return array("d", [log for log, _ in ranked]), array("H", [b for _, b in ranked])


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
