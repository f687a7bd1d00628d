"""Types of hakit._dgram (native/dgram/_dgram.pyx): the heartbeats' datagrams, read in batches
and sent by a pacer thread without the GIL."""

def recv_many(fd: int, size: int, count: int) -> list[tuple[bytes, str]]: ...

class Pacer:
    """Sends rounds of datagrams prepared in advance from a thread that needs no GIL."""

    def arm(self, period: float, port: int, rounds: list[list[tuple[int, bytes, str]]]) -> None: ...
    def close(self) -> None: ...
