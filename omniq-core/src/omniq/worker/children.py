"""The process pool's children: one spawned process per slot, each behind its own pipe.

``concurrent.futures.ProcessPoolExecutor`` cannot stop one call: a timed-out task could
only be stopped by terminating every child, which charged the tasks running beside it an
attempt and ran them twice. Here the pool knows which process runs which call, kills
that one alone, and starts a new child for the next call.

The call and its outcome cross the pipe as dill bytes: a local pipe between our own
processes, never a network peer.

Logging: the child sends its log records back over the same pipe, tagged, and the parent
hands them to its own loggers. So a task's ``log.info()`` reaches whatever handlers the
worker process has (the CLI's text or JSON lines, or the application's own set-up) in
the same format and order as the worker's lines, and carries the task's id; a child
logging to its own stderr could not know the application's handlers, and its lines
would interleave with the parent's mid-line. The call carries the task's context
(:func:`omniq.current_task`), which the child sets before the call. When a middleware
carries context into the child (:func:`omniq.context.at_body_start`: a trace's span),
the call says so (its first byte), and the context follows as one more message: with
the call to a child that has loaded the task's function before (its body starts as the
call is unpickled), else once the child has loaded the call and told the parent (a new
child's start-up, an import), which it waits for. The child enters it around the body.
A call no middleware carries anything for is sent as before.

A registered task's function crosses as its name (:class:`TaskName`), which the child
imports: sent by value, its globals would take along the task functions it calls
(``second.delay()``) and through them the app, its stores and their connections, which
do not pickle. The child so has the module's own app, opened by its first call there;
coroutines run on one loop kept for the child's life, where an async app's stores stay
usable from one call to the next (a blocking app's on that app's portal, as in the worker).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from typing import Any, cast

from ..context import Enter, TaskContext, TaskLogFilter, body_started, set_current

__all__ = ["Child", "RemoteTraceback", "TaskName", "child_main"]

_OK, _ERROR, _LOG, _STARTED = b"\x00", b"\x01", b"\x02", b"\x03"
#: A call's first byte when a middleware carries context into the child (else the dill's
#: own, b"\x80"): the context follows the call at once, or once the child has said it
#: loaded the call (see Child.send).
_CONTEXT_NOW, _CONTEXT_LATER = b"\x04", b"\x05"

#: LogRecord attributes that do not survive the pipe (formatted into ``msg`` first).
_DROP = ("args", "exc_info", "msg")


class _PipeHandler(logging.Handler):
    """The child's one handler: each record, formatted to plain values, up the pipe."""

    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        super().__init__()
        self.conn = conn
        self.send_lock = lock
        self.addFilter(TaskLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in record.__dict__.items() if k not in _DROP}
            fields["msg"] = record.getMessage()
            if record.exc_info and not record.exc_text:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            try:
                data = pickle.dumps(fields)
            except Exception:  # an extra that does not pickle travels as its repr
                data = pickle.dumps(
                    {
                        k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                        for k, v in fields.items()
                    }
                )
            with self.send_lock:
                self.conn.send_bytes(_LOG + data)
        except Exception:
            self.handleError(record)


def _forward(data: bytes) -> None:
    """Hand a record a child sent to this process's logger of the same name."""
    record = logging.makeLogRecord(pickle.loads(data))
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def log_level() -> int:
    """The lowest level any logger of this process emits: what a child must send."""
    levels = [logging.getLogger().getEffectiveLevel()]
    levels += [
        lg.level
        for lg in logging.Logger.manager.loggerDict.values()
        if isinstance(lg, logging.Logger) and lg.level
    ]
    return min(levels)


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


class TaskName:
    """A registered task's function, by the module and name it is found at."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __getstate__(self) -> tuple[str, str]:
        return self.module, self.qualname

    def __setstate__(self, state: tuple[str, str]) -> None:
        self.module, self.qualname = state

    @classmethod
    def of(cls, func: Callable[..., Any]) -> TaskName | None:
        """How the child finds ``func``: the name of the task function (``.fn``) that
        its module holds at its qualified name, or None (sent by value, as before). A
        ``__main__`` without a file is not imported again by a spawned child."""
        module = sys.modules.get(getattr(func, "__module__", None) or "")
        qualname = getattr(func, "__qualname__", "")
        if module is None or not qualname or "<" in qualname:
            return None
        if module.__name__ == "__main__" and not getattr(module, "__file__", None):
            return None
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part, None)
        return cls(module.__name__, qualname) if getattr(found, "fn", None) is func else None

    def resolve(self) -> tuple[Callable[..., Any], Any]:
        """The function, and the portal of its app's blocking facade (or None): a
        coroutine of a blocking app runs on that app's loop, as in the worker."""
        found: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            found = getattr(found, part)
        app = getattr(found, "app", None)
        portal = app.portal() if app is not None and hasattr(app, "portal") else None
        return cast("Callable[..., Any]", getattr(found, "fn", found)), portal


_resolved: dict[tuple[str, str], tuple[Callable[..., Any], Any]] = {}
_loop: asyncio.AbstractEventLoop | None = None


def _run_daemonic(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run ``coro`` on ``loop`` with the threads it starts made daemons (aiosqlite's
    connection threads, executors'), as the portal does: the app the child's tasks
    opened is never closed, and its threads would hold the child's exit up (Python
    joins non-daemon threads first), so every stop or recycle waited for the parent
    to kill the child."""
    thread = threading.current_thread()
    daemon = thread._daemonic  # type: ignore[attr-defined]  # (the property's value)
    thread._daemonic = True  # type: ignore[attr-defined]
    try:
        return loop.run_until_complete(coro)
    finally:
        thread._daemonic = daemon  # type: ignore[attr-defined]


def _call(blob: bytes, started: Callable[[], None], carried: Callable[[], bytes] | None) -> bytes:
    global _loop
    import dill

    func, args, kwargs, context = dill.loads(blob)
    portal = None
    if type(func) is TaskName:
        key = (func.module, func.qualname)
        func, portal = _resolved.get(key) or _resolved.setdefault(key, func.resolve())
    started()
    # What the worker's middleware carry (omniq.context.at_body_start): only when some do.
    enters: list[Enter] = [] if carried is None else pickle.loads(carried())
    set_current(None if context is None else TaskContext(*context))
    body_started()  # (the deadline the parent set before this child started, moved on)
    try:
        with ExitStack() as stack:
            for enter in enters:
                stack.enter_context(enter())
            value = func(*args, **kwargs)
            if inspect.isawaitable(value):

                async def wait() -> Any:
                    return await value

                if portal is not None:
                    value = portal.call(wait)
                else:
                    if _loop is None:  # one loop for the child's life (see the module's doc)
                        _loop = asyncio.new_event_loop()
                    value = _run_daemonic(_loop, wait())
    finally:
        set_current(None)
    return bytes(dill.dumps(value))


def _exit_with_parent() -> None:
    """End this child when its worker dies (kill -9, the OOM killer): the task's lease
    then lapses and another worker runs it, so a body still running here would run twice
    at once. The pipe would tell only after the body returned. A daemon thread waits on
    the parent's sentinel (readable once the parent is gone); nothing per task."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing (a test calling child_main)
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="omniq-parent-watch", daemon=True).start()


def child_main(conn: Connection, level: int = logging.WARNING) -> None:
    """The child's loop: one call at a time until the parent says stop (an empty
    message) or goes away (end of file). ``level``: the lowest the parent emits."""
    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group; when to stop
    # a child is the parent's call: it drains, or kills the child running a task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    lock = threading.Lock()  # a thread the task started may log while the reply is sent
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(_PipeHandler(conn, lock))
    root.setLevel(level)

    def started() -> None:
        with lock:
            conn.send_bytes(_STARTED)

    while True:
        carried: Callable[[], bytes] | None = None
        try:
            blob = conn.recv_bytes()
            if blob[:1] == _CONTEXT_NOW:  # (read at once: never left for the next call)
                blob, context = blob[1:], conn.recv_bytes()
                carried = partial(bytes, context)
            elif blob[:1] == _CONTEXT_LATER:  # (sent only once "started" is)
                blob, carried = blob[1:], conn.recv_bytes
        except (EOFError, OSError):
            return
        if not blob:
            return
        try:
            reply = _OK + _call(blob, started, carried)
        except BaseException as exc:  # the task's own failure, sent back to be reported
            reply = _ERROR + _dump_error(exc)
        try:
            with lock:
                conn.send_bytes(reply)
        except OSError:  # the parent is gone
            return


class Child:
    """The parent's handle on one child process."""

    def __init__(self, context: SpawnContext) -> None:
        self.conn, theirs = context.Pipe(duplex=True)
        self.process = context.Process(
            target=child_main, args=(theirs, log_level()), name="omniq-pool-child"
        )
        self.process.start()
        theirs.close()  # ours closed too, the pipe reads end-of-file when the child dies
        self.calls = 0
        self.killed = False
        #: The task functions (TaskName) this child has loaded: their module imported.
        self.loaded: set[TaskName] = set()
        self._early: bytes | None = None  # a reply that came instead of "started"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    async def send(self, blob: bytes, context: bytes | None = None, later: bool = False) -> bool:
        """Send one call and wait until the child has loaded it and starts the body:
        False if the call failed before (an unpickle error, or the import of its
        function).

        A task's timeout runs from here, so a child still starting up (a new process
        imports the task's module) or a slow unpickle is not charged to the task.
        ``EOFError`` if the child died first.

        ``context``: what the child enters around the body (see
        :func:`omniq.context.at_body_start`), sent with the call; ``later``: sent by
        :meth:`carry` once this returned True (the child waits for it then)."""
        if context is not None:
            self.conn.send_bytes(_CONTEXT_NOW + blob)
            self.conn.send_bytes(context)
        else:
            self.conn.send_bytes(_CONTEXT_LATER + blob if later else blob)
        message = await self._next()
        if message[:1] != _STARTED:
            self._early = message
            return False
        return True

    def carry(self, enters: bytes) -> None:
        """Send what the child enters around the body of a call sent to carry them (it
        waits for them once loaded; see :func:`omniq.context.at_body_start`)."""
        self.conn.send_bytes(enters)

    async def reply(self) -> bytes:
        """The call's reply (see :meth:`decode`); ``EOFError`` if the child died first."""
        reply, self._early = self._early or await self._next(), None
        self.calls += 1
        return reply

    async def _next(self) -> bytes:
        """The child's next message that is not a log record (those are handed on)."""
        while True:
            if not self.conn.poll():
                await self._readable()
            message = self.conn.recv_bytes()  # the child writes each message whole, at once
            if message[:1] != _LOG:
                return message
            _forward(message[1:])

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
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
