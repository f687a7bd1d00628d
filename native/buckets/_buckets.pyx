# cython: language_level=3
"""The greedy step of the farm's bucket table (hakit.vip.buckets): members take the
(bucket, member) pairs best score first, each until it holds its quota.

Each member comes with its buckets ranked once for all: `logs[k]` is log(u) of its k-th
best bucket `order[k]` (u its uniform draw; the score of that pair is -power / log(u),
so the ranking does not depend on the power).  Taking the members' rankings together
by a heap of their next pairs gives the pairs in the order a sort of all of them would
(score descending, then member, then bucket, both descending), without the sort.  A
pair whose bucket is already owned would take nothing when its turn came (an owner is
never taken back), so a member's ranking is read past such pairs at once, outside the
heap: a membership change costs one heap step per bucket.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint16_t


cdef struct Head:
    double score
    int32_t member
    int32_t bucket


cdef inline bint _before(const Head *a, const Head *b) noexcept nogil:
    """Whether pair a comes before pair b: higher score, then higher member, then bucket."""
    if a.score != b.score:
        return a.score > b.score
    if a.member != b.member:
        return a.member > b.member
    return a.bucket > b.bucket


cdef void _sift_down(Head *heap, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t best, left
    cdef Head tmp
    while True:
        best = i
        left = 2 * i + 1
        if left < n and _before(&heap[left], &heap[best]):
            best = left
        if left + 1 < n and _before(&heap[left + 1], &heap[best]):
            best = left + 1
        if best == i:
            return
        tmp = heap[i]
        heap[i] = heap[best]
        heap[best] = tmp
        i = best


def assign(list logs, list orders, list powers, list quotas, Py_ssize_t nbuckets):
    """The member index owning each bucket, members in name order.

    logs[i] (doubles) and orders[i] (uint16 buckets) rank member i's buckets best first;
    powers[i] > 0 and quotas[i] (summing to nbuckets) are its power and its share."""
    cdef Py_ssize_t m = len(logs), i, n, taken = 0
    if not (len(orders) == len(powers) == len(quotas) == m):
        raise ValueError("logs, orders, powers and quotas must have one entry per member")
    cdef const double[::1] lv
    cdef const uint16_t[::1] ov
    cdef double **lp = <double **>PyMem_Malloc(max(m, 1) * sizeof(double *))
    cdef uint16_t **op = <uint16_t **>PyMem_Malloc(max(m, 1) * sizeof(uint16_t *))
    cdef Py_ssize_t *pos = <Py_ssize_t *>PyMem_Malloc(max(m, 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t *left = <Py_ssize_t *>PyMem_Malloc(max(m, 1) * sizeof(Py_ssize_t))
    cdef double *pw = <double *>PyMem_Malloc(max(m, 1) * sizeof(double))
    cdef Head *heap = <Head *>PyMem_Malloc(max(m, 1) * sizeof(Head))
    cdef int32_t *owner = <int32_t *>PyMem_Malloc(max(nbuckets, 1) * sizeof(int32_t))
    cdef Head *top
    cdef Py_ssize_t b
    if not (lp and op and pos and left and pw and heap and owner):
        PyMem_Free(lp); PyMem_Free(op); PyMem_Free(pos); PyMem_Free(left); PyMem_Free(pw)
        PyMem_Free(heap); PyMem_Free(owner)
        raise MemoryError()
    try:
        for i in range(m):
            lv = logs[i]
            ov = orders[i]
            if lv.shape[0] != nbuckets or ov.shape[0] != nbuckets:
                raise ValueError(f"member {i}: a ranking of {lv.shape[0]} buckets, not {nbuckets}")
            lp[i] = <double *>&lv[0] if nbuckets else NULL
            op[i] = <uint16_t *>&ov[0] if nbuckets else NULL
            pw[i] = <double>powers[i]
            left[i] = quotas[i]
            pos[i] = 0
        for b in range(nbuckets):
            owner[b] = -1
        with nogil:
            n = 0
            for i in range(m):
                if left[i] > 0 and nbuckets > 0:
                    heap[n].score = -pw[i] / lp[i][0]
                    heap[n].member = <int32_t>i
                    heap[n].bucket = op[i][0]
                    n += 1
            i = n // 2
            while i > 0:
                i -= 1
                _sift_down(heap, n, i)
            while n > 0 and taken < nbuckets:
                top = &heap[0]
                i = top.member
                if owner[top.bucket] < 0:
                    owner[top.bucket] = <int32_t>i
                    left[i] -= 1
                    taken += 1
                pos[i] += 1
                while pos[i] < nbuckets and owner[op[i][pos[i]]] >= 0:
                    pos[i] += 1
                if left[i] == 0 or pos[i] == nbuckets:
                    n -= 1
                    heap[0] = heap[n]
                else:
                    top.score = -pw[i] / lp[i][pos[i]]
                    top.bucket = op[i][pos[i]]
                _sift_down(heap, n, 0)
        if taken < nbuckets:
            raise ValueError(f"quotas summing to {taken}, not to the {nbuckets} buckets")
        return [owner[b] for b in range(nbuckets)]
    finally:
        PyMem_Free(lp); PyMem_Free(op); PyMem_Free(pos); PyMem_Free(left); PyMem_Free(pw)
        PyMem_Free(heap); PyMem_Free(owner)
