"""A TCP forwarder to run as its own process, so that a test can take a server away
with ``kill -9`` without touching the server other tests share.

``python -m omniq.testing.tcp_proxy TARGET_HOST TARGET_PORT`` listens on a free port of
127.0.0.1, prints that port on one line, and copies bytes both ways until it is killed.
A killed proxy closes every connection and refuses new ones, as a dead server would.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, server_writer), _pipe(server_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
