# cython: language_level=3
"""The heartbeats' UDP datagrams: read in batches, sent by a thread of their own.

The heart runs in its own thread beside the module's event loop.  Each socket call
releases the GIL, and taking it back from a busy event loop costs the interpreter's
switch interval (5 ms): a pulse to 31 peers, one sendto and one recvfrom each, waited
some 400 ms behind a loop that computed.  recvmmsg makes that one wait per batch, and
the pacer sends without the GIL at all (sendmmsg), what is more when the loop lost its
CPU while holding the GIL.  IPv4 only, as the heartbeat sockets are.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


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
    b.msgs = <mmsghdr *>malloc(n * sizeof(mmsghdr))
    b.iovs = <iovec *>malloc(n * sizeof(iovec))
    b.addrs = <sockaddr_in *>malloc(n * sizeof(sockaddr_in))
    if not (b.msgs and b.iovs and b.addrs):
        _free(b)
        memset(b, 0, sizeof(Batch))  # (its owner frees it again)
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


cdef void _free(Batch *b) noexcept nogil:
    free(b.msgs)
    free(b.iovs)
    free(b.addrs)


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


# -- the pacer

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_create(pthread_t *, void *, void *(*)(void *) noexcept nogil, void *)
    int pthread_join(pthread_t, void **)
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)
    int pthread_condattr_init(pthread_condattr_t *)
    int pthread_condattr_setclock(pthread_condattr_t *, int)
    int pthread_condattr_destroy(pthread_condattr_t *)
    int pthread_cond_init(pthread_cond_t *, pthread_condattr_t *)
    int pthread_cond_destroy(pthread_cond_t *)
    int pthread_cond_signal(pthread_cond_t *)
    int pthread_cond_wait(pthread_cond_t *, pthread_mutex_t *)
    int pthread_cond_timedwait(pthread_cond_t *, pthread_mutex_t *, const timespec *)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int, timespec *)
    int CLOCK_MONOTONIC


cdef struct Group:
    int fd
    Py_ssize_t first, count  # datagrams of the round sent on this socket


cdef struct Plan:
    Batch batch  # every datagram of every round
    char *data
    Group *groups
    Py_ssize_t *round_groups  # round r's groups: round_groups[r] .. round_groups[r + 1]
    Py_ssize_t rounds, next
    timespec due
    long period_ns


cdef void _plan_free(Plan *p) noexcept nogil:
    _free(&p.batch)
    free(p.data)
    free(p.groups)
    free(p.round_groups)
    memset(p, 0, sizeof(Plan))


cdef void _add_ns(timespec *t, long ns) noexcept nogil:
    t.tv_nsec += ns
    while t.tv_nsec >= 1000000000:
        t.tv_nsec -= 1000000000
        t.tv_sec += 1


cdef void _send_round(Plan *p) noexcept nogil:
    cdef Py_ssize_t g, i, end
    cdef int r
    for g in range(p.round_groups[p.next], p.round_groups[p.next + 1]):
        i = p.groups[g].first
        end = i + p.groups[g].count
        while i < end:
            r = sendmmsg(p.groups[g].fd, &p.batch.msgs[i], <unsigned int>(end - i), MSG_DONTWAIT)
            if r > 0:
                i += r
            elif not (r < 0 and errno == EINTR):
                i += 1  # lost, like any datagram


cdef struct Shared:
    pthread_mutex_t lock
    pthread_cond_t cond
    Plan plan
    bint closing


cdef void *_pace(void *arg) noexcept nogil:
    cdef Shared *sh = <Shared *>arg
    cdef int r
    pthread_mutex_lock(&sh.lock)
    while not sh.closing:
        if sh.plan.next < sh.plan.rounds:
            r = pthread_cond_timedwait(&sh.cond, &sh.lock, &sh.plan.due)
            if r != 0 and not sh.closing and sh.plan.next < sh.plan.rounds:
                # Due and not replaced meanwhile (a new plan signals, a timeout does not).
                _send_round(&sh.plan)
                sh.plan.next += 1
                _add_ns(&sh.plan.due, sh.plan.period_ns)
        else:
            pthread_cond_wait(&sh.cond, &sh.lock)
    pthread_mutex_unlock(&sh.lock)
    return NULL


cdef void _stop(Shared *sh, pthread_t thread) noexcept nogil:
    pthread_mutex_lock(&sh.lock)
    sh.closing = True
    pthread_cond_signal(&sh.cond)
    pthread_mutex_unlock(&sh.lock)
    pthread_join(thread, NULL)


cdef class Pacer:
    """Sends rounds of datagrams prepared in advance, one every `period`, from a thread
    that needs no GIL: what a module process's heart has already encoded still goes out
    when that process cannot run Python for a while (its loop held the GIL when the
    machine took its CPU away).  Each arm() replaces what was left to send."""

    cdef pthread_t thread
    cdef Shared sh
    cdef bint started

    def __cinit__(self):
        cdef pthread_condattr_t attr
        memset(&self.sh, 0, sizeof(Shared))
        pthread_mutex_init(&self.sh.lock, NULL)
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&self.sh.cond, &attr)
        pthread_condattr_destroy(&attr)
        if pthread_create(&self.thread, NULL, _pace, <void *>&self.sh) != 0:
            raise OSError("cannot start the pacer's thread")
        self.started = True

    def arm(self, double period, unsigned short port, list rounds):
        """Send rounds[0] at once, each next one `period` later; a round is a list of
        (fd, data: bytes, addr: str).  An empty list sends nothing more."""
        cdef Plan p
        cdef Py_ssize_t n = 0, size = 0, i = 0, g = 0, r, off = 0, ngroups = 0
        cdef bytes data
        cdef int fd, last
        memset(&p, 0, sizeof(Plan))
        for rnd in rounds:
            n += len(rnd)
            last = -1
            for fd, data, _ in rnd:
                size += len(data)
                if fd != last:
                    ngroups += 1
                    last = fd
        try:
            if n:
                _alloc(&p.batch, n)
            p.data = <char *>malloc(size or 1)
            p.groups = <Group *>malloc((ngroups or 1) * sizeof(Group))
            p.round_groups = <Py_ssize_t *>malloc((len(rounds) + 1) * sizeof(Py_ssize_t))
            if not (p.data and p.groups and p.round_groups):
                raise MemoryError()
            for r in range(len(rounds)):
                p.round_groups[r] = g
                last = -1
                for fd, data, addr in rounds[r]:
                    if inet_pton(AF_INET, addr.encode(), &p.batch.addrs[i].sin_addr) != 1:
                        raise ValueError(f"not an IPv4 address: {addr!r}")
                    p.batch.addrs[i].sin_family = AF_INET
                    p.batch.addrs[i].sin_port = htons(port)
                    memcpy(p.data + off, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
                    p.batch.iovs[i].iov_base = p.data + off
                    p.batch.iovs[i].iov_len = PyBytes_GET_SIZE(data)
                    off += PyBytes_GET_SIZE(data)
                    if fd != last:
                        p.groups[g].fd, p.groups[g].first, p.groups[g].count = fd, i, 0
                        g += 1
                        last = fd
                    p.groups[g - 1].count += 1
                    i += 1
            p.round_groups[len(rounds)] = g
            p.rounds = len(rounds)
            p.period_ns = <long>(period * 1e9)
            clock_gettime(CLOCK_MONOTONIC, &p.due)
        except BaseException:
            _plan_free(&p)
            raise
        with nogil:
            pthread_mutex_lock(&self.sh.lock)
            _plan_free(&self.sh.plan)
            self.sh.plan = p
            pthread_cond_signal(&self.sh.cond)
            pthread_mutex_unlock(&self.sh.lock)

    def close(self):
        """Stop the thread; nothing more is sent."""
        if self.started:
            self.started = False
            with nogil:
                _stop(&self.sh, self.thread)

    def __dealloc__(self):
        if self.started:
            _stop(&self.sh, self.thread)
        _plan_free(&self.sh.plan)
        pthread_cond_destroy(&self.sh.cond)
        pthread_mutex_destroy(&self.sh.lock)
