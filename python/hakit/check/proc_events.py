"""The kernel's process-event connector: births, name changes and deaths as they happen.

A netlink socket (NETLINK_CONNECTOR, group CN_IDX_PROC) that subscribed with
PROC_CN_MCAST_LISTEN receives one message per fork, exec, comm change and exit of
every process of the machine.  errd keeps its counts from these, never by polling.

The kernel serves this connector in the initial network namespace only.  A process
in another one (a node of the simulated cluster) opens the socket from a thread that
first joined the namespace named by HAKIT_PROC_NETNS (a bind mount of the host's
/proc/self/ns/net): a socket stays in the namespace it was created in, and the
thread's setns() affects nobody else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hakit.errors import HakitError
from hakit.runtime.netlink import EventReader

NETNS_ENV = "HAKIT_PROC_NETNS"

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33  # not in Python's socket module; root may go past rmem_max

# enum proc_cn_event (linux/cn_proc.h)
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_COMM = 0x00000200
PROC_EVENT_EXIT = 0x80000000
WANTED = PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_COMM | PROC_EVENT_EXIT
# Since 6.6 a listener may name the events it wants (struct proc_input); an older
# kernel ignores a request of that size, so it gets the plain one (every event).
FILTER_SINCE = (6, 6)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_EVENT_AT = _NLMSGHDR.size + _CN_MSG.size
_DATA_AT = _EVENT_AT + _EVENT_HEAD.size
_IDS = struct.Struct("=II")
_FORK = struct.Struct("=IIII")  # parent pid, parent tgid, child pid, child tgid

RCVBUF = 8 << 20  # a fork bomb elsewhere must not make errd lose a death


@dataclass(frozen=True)
class Fork:
    parent_tgid: int
    child_pid: int
    child_tgid: int


@dataclass(frozen=True)
class Exec:
    pid: int
    tgid: int


@dataclass(frozen=True)
class Comm:
    pid: int
    tgid: int


@dataclass(frozen=True)
class Exit:
    pid: int
    tgid: int


Event = Fork | Exec | Comm | Exit
_BY_PID: dict[int, type[Exec] | type[Comm] | type[Exit]] = {
    PROC_EVENT_EXEC: Exec, PROC_EVENT_COMM: Comm, PROC_EVENT_EXIT: Exit}


def parse(data: bytes) -> list[Event]:
    """Events in one datagram (others, such as the answer to the subscription, are skipped)."""
    out: list[Event] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, pos)[0]
        if length < _NLMSGHDR.size or pos + length > len(data):
            break
        msg = data[pos : pos + length]
        pos += (length + 3) & ~3
        if len(msg) < _DATA_AT or _CN_MSG.unpack_from(msg, _NLMSGHDR.size)[:2] != (CN_IDX_PROC, CN_VAL_PROC):
            continue
        what = _EVENT_HEAD.unpack_from(msg, _EVENT_AT)[0]
        if what == PROC_EVENT_FORK and len(msg) >= _DATA_AT + _FORK.size:
            _ppid, ptgid, cpid, ctgid = _FORK.unpack_from(msg, _DATA_AT)
            out.append(Fork(ptgid, cpid, ctgid))
        elif what in (PROC_EVENT_EXEC, PROC_EVENT_COMM, PROC_EVENT_EXIT) and len(msg) >= _DATA_AT + 8:
            pid, tgid = _IDS.unpack_from(msg, _DATA_AT)
            out.append(_BY_PID[what](pid, tgid))
    return out


def _kernel_filters() -> bool:
    try:
        release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return release >= FILTER_SINCE


def _listen_request() -> bytes:
    body = struct.pack("=II", PROC_CN_MCAST_LISTEN, WANTED) if _kernel_filters() else struct.pack(
        "=I", PROC_CN_MCAST_LISTEN
    )
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(body), 0) + body
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def _subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, CN_IDX_PROC))
        sock.send(_listen_request())
    except BaseException:
        sock.close()
        raise
    return sock


def _subscribe_in(netns: str) -> socket.socket:
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(_subscribe())
        except BaseException as exc:
            result.append(exc)

    # The thread ends right after: its network namespace goes with it.
    thread = threading.Thread(target=work, name="hakit-proc-netns")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def open_socket() -> socket.socket:
    """A subscribed, non-blocking connector socket; HakitError when the kernel refuses one."""
    netns = os.environ.get(NETNS_ENV)
    try:
        sock = _subscribe_in(netns) if netns else _subscribe()
    except OSError as exc:
        where = f" (through {NETNS_ENV}={netns})" if netns else ""
        hint = (
            f"; from a network namespace other than the host's, set {NETNS_ENV} to a bind mount "
            "of the host's /proc/self/ns/net"
            if exc.errno == errno.ECONNREFUSED and not netns
            else ""
        )
        raise HakitError(
            f"cannot open the kernel's process-event connector{where}: {exc.strerror or exc}{hint}"
        ) from None
    sock.setblocking(False)
    return sock


class ProcEvents(EventReader):
    """Delivers connector events to on_event from the event loop.  When the kernel
    dropped events (receive buffer overrun), on_overrun is called instead: whoever
    counts processes must look at /proc again."""

    def __init__(self, on_event: Callable[[Event], None], on_overrun: Callable[[], None]) -> None:
        super().__init__(open_socket, parse, on_event, on_overrun)
