"""The ``/metrics`` endpoint: one HTTP server per worker process.

Why one port per process, not prometheus_client's multiprocess mode: the worker is the
one process that records metrics (a process-pool task's body runs in a child, but its
middleware, and so every metric, runs in the worker), so the only processes to combine
are separate ``omniq worker`` commands. Those are started, restarted and recycled
independently (a recycling worker re-executes itself under the same pid), with no parent
that could wipe a shared metrics directory before they start or mark a killed one dead,
which multiprocess mode needs; a ``kill -9`` would leave its in-progress gauge counted
for ever. Multiprocess mode also drops the client's process metrics and the collectors
that read the workers at scrape time. One port per process is Prometheus's own model
instead: each worker is a target, a dead one shows as down (``up == 0``) and its series
go stale, and totals are ``sum`` across targets.

Why not prometheus_client's ``start_http_server``: it binds in the calling thread and
hands each connection to a new thread. Under the gevent pool, sockets are gevent's, each
tied to the hub of the thread that made it; a request thread that waited on its
connection switched to another thread's hub (``greenlet.error: Cannot switch to a
different thread``) and the scrape was dropped. Here one thread makes the listening
socket and serves every connection itself, which holds whatever socket class the process
has, with nothing to import from gevent. That thread serves its connections all at once
through a selector (non-blocking sockets, so nothing ever waits on a hub): answering one
at a time let a client that connected and sent nothing hold every scrape for as long as
its read timeout, and a few such connections made Prometheus (10 s per scrape) see the
target as down. Each connection has :data:`CLIENT_TIMEOUT` from accept to the last byte
of its answer, and at most :data:`MAX_CLIENTS` are kept (a new one closes the oldest).
"""

from __future__ import annotations

import io
import logging
import os
import selectors
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from omniq.errors import ConfigError

__all__ = ["ENV", "Address", "check_free", "configured", "parse_address", "serve"]

log = logging.getLogger("omniq.prometheus")

#: The environment variable that gives the address too (``omniq worker --metrics-port``
#: reads it as its default; a worker started from Python, ``app.run_worker()``, reads it
#: when it starts).
ENV = "OMNIQ_METRICS_PORT"

Address = tuple[str, int]

#: Seconds a client may take, from its connection to the end of the answer.
CLIENT_TIMEOUT = 10.0
#: Connections served at once; a new one beyond it closes the oldest.
MAX_CLIENTS = 64
#: Bytes of a request's line and headers read at most (a scrape sends a few hundred).
MAX_HEAD = 65536

_lock = threading.Lock()
_serving: Address | None = None


def parse_address(value: str) -> Address:
    """``"9100"``, ``":9100"``, ``"127.0.0.1:9100"`` or ``"[::1]:9100"`` as (host, port);
    no host means every IPv4 interface, as Prometheus exporters listen by default."""
    text = value.strip()
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ConfigError(
            f"metrics address {value!r} is not [HOST:]PORT with a port from 1 to 65535 "
            f"(e.g. 9100 or 127.0.0.1:9100)"
        )
    return host, number


def configured() -> Address | None:
    """The address set through :data:`ENV`, if any."""
    value = os.environ.get(ENV, "").strip()
    return parse_address(value) if value else None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _unavailable(address: Address, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot serve metrics on {address[0]}:{address[1]}: {exc.strerror or exc}. Each "
        f"worker process needs its own port (one Prometheus target per process)"
    )


def check_free(address: Address) -> None:
    """Fail now, naming the address, when it cannot be listened on: several workers on one
    host each need a port of their own."""
    host, port = address
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _unavailable(address, exc) from exc


class _Handler(WSGIRequestHandler):
    """Answers one request read whole beforehand, into a buffer: the socket is the loop's."""

    def __init__(self, client: _Client, server: _Server) -> None:
        self._head = client.received
        self.answer = io.BytesIO()
        super().__init__(client.sock, client.address, server)

    def setup(self) -> None:
        self.rfile = io.BytesIO(self._head)
        self.wfile = self.answer

    def finish(self) -> None:
        """Keep the answer in ``wfile`` for the loop to send."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (a line per scrape is noise)."""


class _Client:
    """One accepted connection: what it sent so far, what is left to send back, and when
    it is cut off."""

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.received = b""
        self.answer = b""
        self.deadline = time.monotonic() + CLIENT_TIMEOUT


class _Server(WSGIServer):
    """Binds in its own thread and serves every connection there, all at once through a
    selector, so a client that stalls holds up nobody else."""

    # socketserver listens with a backlog of 5: a burst of connections beyond it (a scan)
    # had a real scrape's SYN dropped and retried a second later.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: Address) -> None:
        from prometheus_client import make_wsgi_app

        self.address_family = _family(address[0])
        super().__init__(address, WSGIRequestHandler)
        self.set_app(make_wsgi_app())
        self.socket.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._clients: dict[socket.socket, _Client] = {}

    def run(self) -> None:
        while True:
            now = time.monotonic()
            for client in [c for c in self._clients.values() if c.deadline <= now]:
                self._drop(client)
            wait = min((c.deadline for c in self._clients.values()), default=now + 60) - now
            for key, events in self._selector.select(max(wait, 0.0)):
                if key.data is None:
                    for _ in range(MAX_CLIENTS):  # all waiting, up to a bound
                        if not self._accept():
                            break
                elif key.fileobj in self._clients:  # not dropped by an earlier event
                    self._exchange(key.data, events)

    def _accept(self) -> bool:
        """Accept one connection; False when none is waiting (or none could be taken)."""
        try:
            sock, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionAbortedError:
            return True  # gone before it was accepted; others may wait
        except OSError:  # out of descriptors: make room rather than spin on the listener
            if self._clients:
                self._drop_oldest()
            return False
        if len(self._clients) >= MAX_CLIENTS:
            self._drop_oldest()
        sock.setblocking(False)
        client = _Client(sock, address)
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        return True

    def _exchange(self, client: _Client, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                data = client.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before its request ended")
                client.received += data
                if len(client.received) > MAX_HEAD:
                    raise ConnectionError("request head too long")
                if b"\r\n\r\n" in client.received or b"\n\n" in client.received:
                    client.answer = self._answer(client)
                    self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
            elif events & selectors.EVENT_WRITE:
                client.answer = client.answer[client.sock.send(client.answer) :]
                if not client.answer:
                    client.sock.shutdown(socket.SHUT_WR)
                    self._drop(client)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(client)

    def _answer(self, client: _Client) -> bytes:
        try:
            return _Handler(client, self).answer.getvalue()
        except Exception:  # the loop must outlive any request
            log.exception("metrics request from %s failed", client.address)
            return b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"

    def _drop_oldest(self) -> None:
        self._drop(min(self._clients.values(), key=lambda c: c.deadline))

    def _drop(self, client: _Client) -> None:
        del self._clients[client.sock]
        self._selector.unregister(client.sock)
        client.sock.close()


def _start(address: Address) -> None:
    """Start the server thread; it binds the socket itself. Raise what binding raised."""
    bound = threading.Event()
    failed: list[Exception] = []

    def main() -> None:
        try:
            server = _Server(address)
        except Exception as exc:
            failed.append(exc)
            return
        finally:
            bound.set()
        try:
            server.run()
        except BaseException:
            log.exception("the metrics server stopped; /metrics no longer answers")
            raise

    threading.Thread(target=main, name="omniq-metrics", daemon=True).start()
    bound.wait()
    if failed:
        raise failed[0]


def serve(address: Address) -> None:
    """Serve the default registry on ``address`` from a daemon thread, once per process
    (a second worker of the same process shares it). It serves until the process exits,
    so a draining worker stays visible and a scrape after the last task still answers."""
    global _serving

    with _lock:
        if _serving == address:
            return
        if _serving is not None:
            raise ConfigError(
                f"this process already serves metrics on {_serving[0]}:{_serving[1]}; "
                f"it cannot also serve them on {address[0]}:{address[1]}"
            )
        try:
            _start(address)
        except OSError as exc:
            raise _unavailable(address, exc) from exc
        _serving = address
    log.info("serving Prometheus metrics on http://%s:%d/metrics", *address)
