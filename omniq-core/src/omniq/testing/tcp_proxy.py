"""A TCP forwarder to run as its own process, so that a test can take a server away
with ``kill -9`` without touching the server other tests share.

``python -m omniq.testing.tcp_proxy TARGET_HOST TARGET_PORT`` listens on a free port of
127.0.0.1, prints that port on one line, and copies bytes both ways until it is killed.
A killed proxy closes every connection and refuses new ones, as a dead server would.

It can also lose one answer, as a connection dropped at the wrong moment does: a line
``cut HEX`` on its standard input arms it (it prints ``armed``), and the next request a
client sends that holds those bytes goes to the server whole while the client's
connection is reset at once; whatever the server answers is read and dropped, then its
side is closed too (the proxy prints ``cut``). The server applies the request; the
client never learns it did.

:mod:`omniq.testing.proxies` starts and steers it from a test.
"""

from __future__ import annotations

import asyncio
import sys
import threading

#: How long the server's side of a cut connection stays open for its answer.
ANSWER_WAIT = 1.0


class _Armed:
    """The bytes whose next request from a client is cut, once (see the module)."""

    marker: bytes | None = None


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event | None = None
) -> None:
    """Copy ``reader`` to ``writer``; the client-to-server direction (``cut`` given)
    watches for the armed bytes and sets ``cut`` after forwarding them."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            marker = _Armed.marker
            if cut is not None and marker is not None and marker in data:
                _Armed.marker = None
                cut.set()
                return
    except OSError:
        pass
    finally:
        if cut is None or not cut.is_set():
            writer.close()


async def _serve(host: str, port: int) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        cut = asyncio.Event()
        upstream = asyncio.ensure_future(_pipe(reader, server_writer, cut))
        downstream = asyncio.ensure_future(_pipe(server_reader, writer))
        await asyncio.wait(
            [upstream, asyncio.ensure_future(cut.wait())], return_when="FIRST_COMPLETED"
        )
        if not cut.is_set():
            await asyncio.gather(upstream, downstream)
            return
        # Lose the answer: the client's side goes at once (a reset, not a clean close),
        # the server's once it has answered (or after ANSWER_WAIT).
        downstream.cancel()
        writer.transport.abort()
        try:
            await asyncio.wait_for(server_reader.read(65536), ANSWER_WAIT)
        except (TimeoutError, OSError):
            pass
        server_writer.close()
        print("cut", flush=True)

    def control(loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb == "cut" and arg:
                loop.call_soon_threadsafe(_arm, bytes.fromhex(arg))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    threading.Thread(target=control, args=(asyncio.get_running_loop(),), daemon=True).start()
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _arm(marker: bytes) -> None:
    _Armed.marker = marker
    print("armed", flush=True)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
