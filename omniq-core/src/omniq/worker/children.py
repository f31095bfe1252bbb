"""The process pool's children: one spawned process per slot, each behind its own pipe.

``concurrent.futures.ProcessPoolExecutor`` cannot stop one call: a timed-out task could
only be stopped by terminating every child, which charged the tasks running beside it an
attempt and ran them twice. Here the pool knows which process runs which call, kills
that one alone, and starts a new child for the next call.

The call and its outcome cross the pipe as dill bytes: a local pipe between our own
processes, never a network peer.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import traceback
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

__all__ = ["Child", "RemoteTraceback", "child_main"]

_OK, _ERROR = b"\x00", b"\x01"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a child, attached as its ``__cause__``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _dump_error(exc: BaseException) -> bytes:
    import dill

    text = traceback.format_exc()
    try:
        return bytes(dill.dumps((exc, text)))
    except Exception:  # an exception that does not pickle still reports its type and text
        stand_in = RuntimeError(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
        return bytes(dill.dumps((stand_in, text)))


def _call(blob: bytes) -> bytes:
    import dill

    func, args, kwargs = dill.loads(blob)
    value = func(*args, **kwargs)
    if inspect.isawaitable(value):
        async def wait() -> Any:
            return await value

        value = asyncio.run(wait())
    return bytes(dill.dumps(value))


def child_main(conn: Connection) -> None:
    """The child's loop: one call at a time until the parent says stop (an empty
    message) or goes away (end of file)."""
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group; when to stop
    # a child is the parent's call: it drains, or kills the child running a task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not blob:
            return
        try:
            reply = _OK + _call(blob)
        except BaseException as exc:  # the task's own failure, sent back to be reported
            reply = _ERROR + _dump_error(exc)
        try:
            conn.send_bytes(reply)
        except OSError:  # the parent is gone
            return


class Child:
    """The parent's handle on one child process."""

    def __init__(self, context: SpawnContext) -> None:
        self.conn, theirs = context.Pipe(duplex=True)
        self.process = context.Process(target=child_main, args=(theirs,), name="omniq-pool-child")
        self.process.start()
        theirs.close()  # ours closed too, the pipe reads end-of-file when the child dies
        self.calls = 0
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    async def call(self, blob: bytes) -> bytes:
        """Send one call and wait for its reply (see :meth:`decode`); ``EOFError`` if the
        child died first."""
        loop = asyncio.get_running_loop()
        self.conn.send_bytes(blob)
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        fd = self.conn.fileno()
        loop.add_reader(fd, ready)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        reply = self.conn.recv_bytes()  # the child writes each reply whole, at once
        self.calls += 1
        return reply

    @staticmethod
    def decode(reply: bytes) -> Any:
        """The call's return value, or raise what it raised (with the child's traceback)."""
        import dill

        if reply[:1] == _OK:
            return dill.loads(reply[1:])
        exc, text = dill.loads(reply[1:])
        exc.__cause__ = RemoteTraceback(text)
        raise exc

    def retire(self) -> None:
        """Ask an idle child to exit (it is reaped when the next child starts, or at stop)."""
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.conn.close()

    def kill(self) -> None:
        """Stop the child now, whatever it runs."""
        if self.process.exitcode is None:
            self.process.kill()
            self.killed = True
        self.conn.close()

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)
