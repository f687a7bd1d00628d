"""The application of the farm tests, started on every farm node by start_both:
TCP servers that answer every line with the node's name (and close after answering
"bye"), and UDP servers that answer
every datagram with the node's name and the datagram's length.

    python3 farm_app.py VIP TCP_PORT,... UDP_PORT,...
"""

import asyncio
import socket
import sys

NAME = socket.gethostname().encode()


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(NAME + b"\n")
            await writer.drain()
            if line == b"bye\n":
                break  # this server closes first, as many do
    except OSError:
        pass
    finally:
        writer.close()


class Datagrams(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(NAME + b" %d" % len(data), addr)  # type: ignore[attr-defined]


async def main() -> None:
    vip, tcp, udp = sys.argv[1], sys.argv[2], sys.argv[3]
    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(answer, vip, int(p), reuse_address=True, backlog=4096)
               for p in tcp.split(",") if p]
    for p in udp.split(","):
        if p:
            await loop.create_datagram_endpoint(Datagrams, local_addr=(vip, int(p)))
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
