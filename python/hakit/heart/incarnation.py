"""The number of this module process among all those of the module on this node.

Peers order a sender's heartbeats by (incarnation, seq), so the incarnation must
grow from one process to the next whatever the clock does: a clock stepped back
by NTP, or a node booted with a wrong one, must not make a new process look older
than the last.  It is a counter on the node's disk; the wall clock is only its floor,
so that a module whose state directory was wiped (reinstalled) still comes back
ahead of the process its peers remember, when the clocks are sane.
"""

from __future__ import annotations

import time
from pathlib import Path

from hakit.files import write_atomic


def next_incarnation(path: Path) -> tuple[int, str | None]:
    """The incarnation for a new process, and what went wrong saving it (None if nothing).

    A counter that cannot be read or saved (a read-only or full disk) does not keep
    the module from starting: the clock floor still orders it in the common case.
    """
    try:
        last = int(path.read_text())
    except (OSError, ValueError):
        last = 0  # none yet, or damaged: the clock floor takes over
    value = max(last + 1, int(time.time()))
    try:
        write_atomic(path, f"{value}\n".encode())
    except OSError as exc:
        return value, f"cannot save the heartbeat incarnation in {path}: {exc.strerror or exc}"
    return value, None
