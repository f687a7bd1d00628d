"""Types of hakit._buckets (native/buckets/_buckets.pyx): the greedy step of the farm's bucket table."""

from collections.abc import Sequence

def assign(logs: list[Sequence[float]], orders: list[Sequence[int]], powers: list[int], quotas: list[int],
           nbuckets: int) -> list[int]: ...
