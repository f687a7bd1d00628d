# cython: language_level=3
"""UDP datagrams sent and received in batches, with the GIL released once per batch.

The heart runs in its own thread beside the module's event loop.  Each socket call
releases the GIL, and taking it back from a busy event loop costs the interpreter's
switch interval (5 ms): a pulse to 31 peers, one sendto and one recvfrom each, waited
some 400 ms behind a loop that computed.  sendmmsg/recvmmsg make that one wait per batch.
IPv4 only, as the heartbeat sockets are.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memset


cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<netinet/in.h>":
    struct in_addr:
        unsigned int s_addr
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    unsigned short htons(unsigned short)

cdef extern from "<arpa/inet.h>":
    int inet_pton(int, const char *, void *)
    const char *inet_ntop(int, const void *, char *, unsigned int)
    int INET_ADDRSTRLEN

cdef extern from "<sys/socket.h>":
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int, mmsghdr *, unsigned int, int) nogil
    int recvmmsg(int, mmsghdr *, unsigned int, int, void *) nogil
    int AF_INET
    int MSG_DONTWAIT

# An error other than "nothing waiting" (ICMP unreachable from a dead peer, reported once
# on a later call) is read past this many times in one call.
cdef enum:
    MAX_ERRORS = 8


cdef struct Batch:
    mmsghdr *msgs
    iovec *iovs
    sockaddr_in *addrs


cdef int _alloc(Batch *b, Py_ssize_t n) except -1:
    b.msgs = <mmsghdr *>PyMem_Malloc(n * sizeof(mmsghdr))
    b.iovs = <iovec *>PyMem_Malloc(n * sizeof(iovec))
    b.addrs = <sockaddr_in *>PyMem_Malloc(n * sizeof(sockaddr_in))
    if not (b.msgs and b.iovs and b.addrs):
        _free(b)
        raise MemoryError()
    memset(b.msgs, 0, n * sizeof(mmsghdr))
    memset(b.addrs, 0, n * sizeof(sockaddr_in))
    cdef Py_ssize_t i
    for i in range(n):
        b.msgs[i].msg_hdr.msg_name = &b.addrs[i]
        b.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        b.msgs[i].msg_hdr.msg_iov = &b.iovs[i]
        b.msgs[i].msg_hdr.msg_iovlen = 1
    return 0


cdef void _free(Batch *b) noexcept:
    PyMem_Free(b.msgs)
    PyMem_Free(b.iovs)
    PyMem_Free(b.addrs)


def send_many(int fd, unsigned short port, list datagrams):
    """Send each (data: bytes, addr: str) to addr:port without blocking; one that cannot
    go (a full buffer, an unreachable peer) is lost like any datagram.  Returns how many
    went."""
    cdef Py_ssize_t n = len(datagrams), i = 0
    cdef int r, sent = 0
    cdef Batch b
    cdef bytes data
    if n == 0:
        return 0
    _alloc(&b, n)
    try:
        for i in range(n):
            data, addr = datagrams[i]
            if inet_pton(AF_INET, addr.encode(), &b.addrs[i].sin_addr) != 1:
                raise ValueError(f"not an IPv4 address: {addr!r}")
            b.addrs[i].sin_family = AF_INET
            b.addrs[i].sin_port = htons(port)
            b.iovs[i].iov_base = PyBytes_AS_STRING(data)
            b.iovs[i].iov_len = PyBytes_GET_SIZE(data)
        i = 0
        with nogil:
            while i < n:
                r = sendmmsg(fd, &b.msgs[i], <unsigned int>(n - i), MSG_DONTWAIT)
                if r > 0:
                    i += r
                    sent += r
                elif r < 0 and errno == EINTR:
                    continue
                else:
                    # The kernel reports the first datagram that failed on this call.
                    i += 1
        return sent
    finally:
        _free(&b)


def recv_many(int fd, Py_ssize_t size, Py_ssize_t count):
    """Up to `count` datagrams waiting on the socket, without blocking, as a list of
    (data: bytes, source address: str); a datagram longer than `size` comes truncated."""
    cdef Batch b
    cdef char *buf
    cdef int r = -1, errors = 0, e
    cdef Py_ssize_t i
    cdef char text[16]
    if size <= 0 or count <= 0:
        raise ValueError("size and count must be positive")
    buf = <char *>PyMem_Malloc(size * count)
    if not buf:
        raise MemoryError()
    try:
        _alloc(&b, count)
        try:
            for i in range(count):
                b.iovs[i].iov_base = buf + i * size
                b.iovs[i].iov_len = size
            with nogil:
                while True:
                    r = recvmmsg(fd, b.msgs, <unsigned int>count, MSG_DONTWAIT, NULL)
                    if r >= 0:
                        break
                    e = errno
                    if e == EAGAIN:  # (EWOULDBLOCK on Linux)
                        break
                    if e != EINTR:
                        errors += 1
                        if errors > MAX_ERRORS:
                            break
            if r < 0:
                return []
            out = []
            for i in range(r):
                inet_ntop(AF_INET, &b.addrs[i].sin_addr, text, sizeof(text))
                out.append((PyBytes_FromStringAndSize(buf + i * size, b.msgs[i].msg_len),
                            text.decode()))
            return out
        finally:
            _free(&b)
    finally:
        PyMem_Free(buf)
