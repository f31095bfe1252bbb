"""A TCP forwarder to run as its own process, so that a test can take a server away
with ``kill -9`` without touching the server other tests share.

``python -m omniq.testing.tcp_proxy TARGET_HOST TARGET_PORT [LISTEN_PORT]`` listens on
LISTEN_PORT of 127.0.0.1 (a free one by default), prints that port on one line, and
copies bytes both ways until it is killed. A killed proxy closes every connection and
refuses new ones, as a dead server would; one started again on the same port is that
server back.

It can also lose one answer, as a connection dropped at the wrong moment does: a line
``cut HEX`` on its standard input arms it (it prints ``armed``), and the next request a
client sends that holds those bytes goes to the server whole (what the client sends is
forwarded as before, however many reads it takes); the first bytes the server sends
back on that connection are dropped instead, the client's connection is reset (not
closed cleanly) and the server's closed, and the proxy prints ``cut`` (also after
``ANSWER_WAIT`` without an answer). The server applies the request; the client never
learns it did. Lines armed before the first cut wait their turn: each is watched for once
the one before it was cut.

:mod:`omniq.testing.proxies` starts and steers it from a test.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import ClassVar

#: How long a cut connection waits for the server's answer before the client is reset
#: all the same.
ANSWER_WAIT = 1.0


class _Armed:
    """The bytes whose next request from a client is cut, once each, in the order armed
    (see the module): the first waits, the next is watched for once it was cut."""

    markers: ClassVar[list[bytes]] = []


class _Link:
    """One client's connection through the proxy, and whether its next answer is lost."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client, self.server = client, server
        self.cutting = False  # the armed bytes went to the server: its answer is lost
        self.lost = False
        self.timer: asyncio.TimerHandle | None = None

    def lose(self) -> None:
        """Reset the client's connection (a reset, not a clean close) and close the
        server's, once; the answer, if any, goes nowhere."""
        if self.lost:
            return
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
        self.client.transport.abort()
        self.server.close()
        print("cut", flush=True)


async def _upstream(reader: asyncio.StreamReader, link: _Link) -> None:
    """Client to server, watching for the armed bytes (also across two reads). Once seen,
    what the client sends still goes on (the rest of a request longer than one read)
    until the server answers."""
    tail = b""
    try:
        while data := await reader.read(65536):
            link.server.write(data)
            await link.server.drain()
            marker = _Armed.markers[0] if _Armed.markers else None
            # (a match holds a byte of this read: never one of a request sent earlier)
            if (
                marker is not None
                and not link.cutting
                and marker in tail[max(0, len(tail) - len(marker) + 1) :] + data
            ):
                _Armed.markers.pop(0)
                link.cutting = True
                loop = asyncio.get_running_loop()
                link.timer = loop.call_later(ANSWER_WAIT, link.lose)
            tail = (tail + data)[-1024:]
    except OSError:
        pass
    finally:
        if not link.cutting:
            link.server.close()


async def _downstream(reader: asyncio.StreamReader, link: _Link) -> None:
    """Server to client, but for the answer after a cut, which resets the client."""
    try:
        while data := await reader.read(65536):
            if link.cutting:
                break  # the answer: lost
            link.client.write(data)
            await link.client.drain()
    except OSError:
        pass
    finally:
        if link.cutting:
            link.lose()
        else:
            link.client.close()


async def _serve(host: str, port: int, listen: int = 0) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        link = _Link(writer, server_writer)
        await asyncio.gather(_upstream(reader, link), _downstream(server_reader, link))

    def control(loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb == "cut" and arg:
                loop.call_soon_threadsafe(_arm, bytes.fromhex(arg))

    server = await asyncio.start_server(forward, "127.0.0.1", listen)
    threading.Thread(target=control, args=(asyncio.get_running_loop(),), daemon=True).start()
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _arm(marker: bytes) -> None:
    _Armed.markers.append(marker)
    print("armed", flush=True)


if __name__ == "__main__":
    host, port, *listen = sys.argv[1:]
    asyncio.run(_serve(host, int(port), int(listen[0]) if listen else 0))
