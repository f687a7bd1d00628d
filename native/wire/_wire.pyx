# cython: language_level=3
"""Frame codec shared by every hakit byte stream (CLI <-> hakitd, node <-> node RPC).

A frame is a 4-byte big-endian body length followed by one msgpack object.  The
decoder is fed whatever the socket returned and hands back complete objects; a
length over the limit or a body that is not msgpack raises FrameError, so a peer
speaking garbage is cut off with a clear reason instead of exhausting memory.
"""
import msgpack

from libc.stdint cimport uint32_t

DEF HEADER = 4
MAX_FRAME = 16 * 1024 * 1024


class FrameError(ValueError):
    """The byte stream is not a sequence of valid hakit frames."""


cdef inline uint32_t _be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


def pack_frame(obj, Py_ssize_t max_size=MAX_FRAME):
    """Encode one object as a frame."""
    body = msgpack.packb(obj, use_bin_type=True)
    cdef Py_ssize_t n = len(body)
    if n > max_size:
        raise FrameError(f"frame of {n} bytes exceeds the {max_size}-byte limit")
    return n.to_bytes(HEADER, "big") + body


cdef class FrameDecoder:
    """Incremental decoder: feed() bytes, get the complete objects back."""

    cdef bytearray _buf
    cdef readonly Py_ssize_t max_size

    def __cinit__(self, Py_ssize_t max_size=MAX_FRAME):
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data):
        cdef Py_ssize_t pos = 0, end, avail
        cdef uint32_t n
        cdef const unsigned char *p
        out = []
        self._buf += data
        avail = len(self._buf)
        p = <const unsigned char *>(<char *>self._buf)
        while avail - pos >= HEADER:
            n = _be32(p + pos)
            if n > <uint32_t>self.max_size:
                raise FrameError(f"peer announced a {n}-byte frame (limit {self.max_size})")
            end = pos + HEADER + n
            if end > avail:
                break
            try:
                out.append(msgpack.unpackb(self._buf[pos + HEADER:end], raw=False,
                                           strict_map_key=False))
            # TypeError: a map keyed by a list or a map (unhashable) is malformed too.
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                    msgpack.StackError) as exc:
                raise FrameError(f"peer sent a malformed frame ({exc or type(exc).__name__})") from None
            pos = end
        if pos:
            del self._buf[:pos]
        return out

    @property
    def pending(self):
        """Bytes received but not yet forming a complete frame."""
        return len(self._buf)
