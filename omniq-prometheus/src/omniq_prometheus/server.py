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
has, with nothing to import from gevent. One at a time is enough: a scrape takes
milliseconds and a client that stalls is cut off after :data:`CLIENT_TIMEOUT`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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

#: Seconds a client may take to send its request or read the answer.
CLIENT_TIMEOUT = 10.0

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
    timeout = CLIENT_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (a line per scrape is noise)."""


class _Server(WSGIServer):
    """Serves the connections it accepts in its own thread, one at a time."""

    def __init__(self, address: Address) -> None:
        from prometheus_client import make_wsgi_app

        self.address_family = _family(address[0])
        super().__init__(address, _Handler)
        self.set_app(make_wsgi_app())


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
        server.serve_forever()

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
