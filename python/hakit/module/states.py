"""The automaton's states and statuses, shared by its core, its drivers, the module
process and the heartbeat payload (news.py), apart from all of them so that each can
import them without importing the others.

A mirror moves through STOP, WAIT, ALONE, PRIM, SECOND; a farm through STOP, WAIT, UP;
a light module through STOP, WAIT, ALONE.  Each state is Ready, Transient (scripts
running) or NotReady.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOP = "STOP"
    WAIT = "WAIT"
    ALONE = "ALONE"
    PRIM = "PRIM"
    SECOND = "SECOND"
    UP = "UP"


class Status(StrEnum):
    READY = "Ready"
    TRANSIENT = "Transient"
    NOT_READY = "NotReady"


PRIMARY = (State.ALONE, State.PRIM)
# The states in which the application runs (a restart applies to them).
RUNNING = (*PRIMARY, State.SECOND, State.UP)

# The exit status of a module process started with --resume that could not take over
# what the process before it ran (hakitd then runs the crash cleanup and starts the
# module afresh).  1 is a module refusing to start.
RESUME_REFUSED = 3
