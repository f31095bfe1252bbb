"""The one mechanism that turns the async API into a blocking one.

A sync object owns an event loop (a :class:`Portal`: run by the calling thread, or by a
background thread between calls) and forwards each call to the async object living on
that loop. Methods are
declared once per name with :class:`blocking`, which keeps their signatures for type
checkers; no logic is written twice.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stubs: getsignal without the enum wrapper)
import _socket
import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio

from .errors import PortalStoppedError

__all__ = ["Portal", "SyncWrapper", "blocking", "wait_per_call"]

log = logging.getLogger("omniq")

#: How long closing an object left open waits at interpreter exit (a server that does
#: not answer must not hold the exit up).
EXIT_CLOSE_TIMEOUT = 10.0

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
#: ``with facade as f``: ``f`` is the facade (``self: T`` bound ``T``, the async object).
W = TypeVar("W", bound="SyncWrapper[Any]")


class Portal:
    """An event loop for blocking callers, run by whichever thread needs it.

    A blocking call from a thread, when no thread runs the loop, runs the loop itself
    until its call is done (:meth:`_Loop.drive`): no hand-over between threads. Between
    calls the stores' background tasks (heartbeats, LISTEN, pub/sub readers) must go on,
    so a daemon thread takes the loop back once no call has come for :data:`IDLE`
    seconds and runs it until a call comes. A call that finds the loop run by another
    thread (that thread, another caller's, or a thread already running a loop of its
    own) hands the coroutine over as a :class:`_Call`: one wake-up of the running
    thread and one of the caller (on a socket, :class:`_Waker`) per call, and nothing
    else between the two threads. Once no such call is left, the daemon thread gives
    the loop up at once, so a caller's next call drives it.

    The thread is a daemon: a program that never calls ``close()`` still exits.
    (anyio's ``BlockingPortal.call`` first waits for the loop to start a task in its task
    group, then for the task: twice that, which doubled the cost of a blocking
    ``delay()``; ``run_coroutine_threadsafe`` costs a ``concurrent.futures.Future``, its
    condition and the chaining callbacks, and one more loop iteration for them.)
    """

    def __init__(self, closes: Any = None) -> None:
        self._lock = threading.Lock()
        self._state: _Loop | None = None
        self._closes = closes  # closed with the loop if nobody did (see __del__)
        _portals.add(self)

    def _start(self) -> _Loop:
        with self._lock:
            if self._state is None:
                state = _Loop()
                state.thread.start()
                self._state = state
                if self._closes is not None:
                    _hook_exit()
            return self._state

    @property
    def started(self) -> bool:
        return self._state is not None

    @property
    def died(self) -> bool:
        """Whether the loop's thread ended without being stopped (see :meth:`_Loop.die`):
        every call raises :class:`~omniq.errors.PortalStoppedError`."""
        state = self._state
        return state is not None and state.dead

    def call(self, func: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``func(*args)`` (a coroutine function, or a function returning an
        awaitable) on the loop and return its result, raising what it raises.

        Written out in the blocking ``delay()`` (``SyncTaskFunction.delay``): a check
        added here goes there too, or into :meth:`_Loop.call`."""
        state = self._state or self._start()
        result: R = state.call(func, args)
        return result

    def on_loop_thread(self) -> bool:
        state = self._state
        return state is not None and state.is_current()

    def call_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callable on the loop without waiting (signal-safe: no lock).

        It runs when the loop next runs: at once if a thread runs it, else within
        :data:`IDLE` seconds, when the portal's thread takes the loop back."""
        state = self._state or self._start()
        if state.dead:
            raise state.stopped_error() from state.cause
        state.loop.call_soon_threadsafe(func, *args)

    def stop(self) -> None:
        """Cancel what is left on the loop, close it and end the portal's thread."""
        with self._lock:
            state, self._state = self._state, None
        if state is not None:
            state.stop()

    def __del__(self) -> None:
        """Nobody can call the portal any more and nobody closed what it was made to
        close: hand that close to the loop (never a wait here, see :func:`_close_left_open`).

        A finalizer, not a ``weakref.finalize``: that one's registry would hold the app,
        and through it the portal wherever the app leads back to its facade (a task that
        refers to its app: a cycle only a collection frees); the app was then never
        closed, its loop's thread and descriptors kept until exit."""
        state, closes = self._state, self._closes
        if state is not None and closes is not None:
            try:
                _close_left_open(closes, state)
            except Exception:  # pragma: no cover - at interpreter shutdown
                pass


#: How long the loop stays free after a caller's call before the portal's thread takes
#: it back (a caller calling again within it drives the loop itself).
IDLE = 0.005

#: Every call's task is named (Python 3.11 formats a default name, "Task-<n>", for each).
_CALL_NAME = "omniq.sync.call"
_monotonic = time.monotonic

#: ``_Loop.driver`` when the portal's own thread runs the loop.
PORTAL = -1

_portals: weakref.WeakSet[Portal] = weakref.WeakSet()


class _Loop:
    """One portal's loop and who runs it.

    ``driver`` is the ident of the thread running the loop, :data:`PORTAL` for the
    portal's thread, or None while nobody does; ``queued`` counts the calls handed over
    (:class:`_Call`) and not yet done. ``lock`` guards these for a few assignments at a
    time, nothing that allocates (a collection could run a finalizer that calls the
    portal); waiting for a change is on ``changed``, a reentrant condition.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.changed = threading.Condition(threading.RLock())
        self.driver: int | None = None
        self.driven: _Call | None = None
        self.queued = 0
        self.idle_since = time.monotonic()
        self.watching = False  # the portal's thread waits for the loop to be free
        self.handing_back = False  # the portal's thread is stopping the loop for callers
        self.closing = False
        self.finishing = False
        # The portal's thread ended without being stopped, and what ended it (see die).
        self.dead = False
        self.cause: BaseException | None = None
        self.thread = threading.Thread(target=self.serve, name="omniq-portal", daemon=True)
        self.serving: int | None = None  # the portal's thread's ident, once it runs
        # How a caller runs the loop (the task's last step, ``finish``, and the turns).
        self.finish_driven: Callable[[], None] | None = self.stop_soon
        self.run_until_done = self.run_forever_until_done
        self.hooks: tuple[Any, Any] = (None, None)
        # asyncio's own create_task, where a task factory may be set (and looked at on
        # each call): without one, the task is made as it makes it, without its two
        # Python-level calls (~1,500 instructions a call).
        self.plain_tasks = type(self.loop).create_task is asyncio.BaseEventLoop.create_task
        if _runs_asyncio_turns(self.loop):
            self.finish_driven, self.run_until_done = None, self.turns_until_done
            self.hooks = (
                self.loop._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                self.loop._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
            )

    def is_current(self) -> bool:
        """Whether this thread runs the loop now, or is the portal's."""
        return asyncio._get_running_loop() is self.loop or self.thread is threading.current_thread()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def stop(self) -> None:
        """End whatever runs the loop, then cancel what is left, close the loop and end
        the portal's thread (waited for, unless this is that thread)."""
        with self.lock:
            self.closing = True
        self.notify()
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.close_soon)
        if not self.is_current():
            self.thread.join(timeout=10)

    def call(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        me = _get_ident()
        running = _get_running_loop()
        if running is self.loop or me == self.serving:
            raise RuntimeError(
                "a blocking call (a blocking OmniQ app's delay(), get_result(), ...) was made "
                "on the thread that runs the app's event loop, as an 'async def' task of that "
                "app does: it would wait for itself. Await the async API there instead "
                "(await task.aio.delay(...), await app.aio.get_result(...)), or make the "
                "task a plain 'def' (pools run those in threads)"
            )
        with self.lock:  # the common case: the loop is free, this thread runs it
            drive = self.driver is None and running is None and not self.closing
            if drive:
                self.driver = me
        if drive:
            return self.drive(func, args, me)
        return self.enter(func, args, me, running is None)

    def enter(
        self, func: Callable[..., Any], args: tuple[Any, ...], me: int, may_drive: bool
    ) -> Any:
        """Drive the loop, or hand the call over to the thread that runs it."""
        while True:
            with self.lock:
                closing = self.closing
                if closing:
                    break
                if not self.handing_back:
                    if self.driver is None and may_drive:
                        self.driver = drive = me
                    else:
                        drive = None
                        self.queued += 1
                        wake = self.driver is None
                        if wake:  # this thread runs a loop of its own: the portal's runs
                            self.driver = PORTAL
                    break
            with self.changed:
                while self.handing_back:
                    self.changed.wait()
        if closing:  # stopped by another thread since this call found it, or dead
            if self.dead:
                raise self.stopped_error() from self.cause
            raise RuntimeError("the portal was stopped while this call started")
        if drive is not None:
            return self.drive(func, args, me)
        if wake:
            self.notify()
        call = _Call(self.loop, func, args, self.served, _waker())
        try:
            self.loop.call_soon_threadsafe(call.start)
        except RuntimeError:  # closed: it died since this call found it running
            if self.dead:
                raise self.stopped_error() from self.cause
            raise
        return call.wait(self)

    def drive(self, func: Callable[..., Any], args: tuple[Any, ...], me: int) -> Any:
        """Run the loop in this thread until the call is done."""
        global _main_driven
        loop = self.loop
        call = _Call(loop, func, args, self.finish_driven)
        self.driven = call
        main = me == _main_ident
        if main:
            _main_driven = call
            if _getsignal(_SIGINT) is _default_int_handler:
                _sigint.install()
            thread = _main_thread
        else:
            thread = _current_thread()
        # Threads the call starts (aiosqlite's, executors') are daemons, as they were
        # when only the portal's daemon thread ran the loop: a store nobody closed must
        # not hold the interpreter's exit up (Python joins non-daemon threads first).
        daemon = thread._daemonic  # type: ignore[attr-defined]  # (the property's value)
        thread._daemonic = True  # type: ignore[attr-defined]
        try:
            call.task = (
                _Task(call.run(), loop=loop, name=_CALL_NAME)
                if self.plain_tasks and loop._task_factory is None  # type: ignore[attr-defined]
                else loop.create_task(call.run(), name=_CALL_NAME)
            )
            self.run_until_done(call, me)
        except BaseException:
            # Interrupted inside the loop: the call is cancelled and whoever runs the
            # loop next (the portal's thread, at once) lets it end.
            call.finish = _ignore
            call.cancel()
            self.release(hand_over=True)
            raise
        finally:
            thread._daemonic = daemon  # type: ignore[attr-defined]
            self.driven = None
            if main:
                _main_driven = None
        self.release()
        return call.outcome()

    def run_forever_until_done(self, call: _Call, me: int) -> None:
        """Run the loop until ``call`` is done: its task's last step stops it
        (:meth:`stop_soon`). The way for any loop."""
        loop = self.loop
        while not call.done:
            loop.run_forever()

    def turns_until_done(self, call: _Call, me: int) -> None:
        """:meth:`run_forever_until_done` with asyncio's own ``run_forever`` written out,
        for a loop that runs it (:func:`_runs_asyncio_turns`): ~8,500 instructions less
        per call (an empty call ~57,600 -> ~49,000 on 3.11, about as much on 3.12 and
        3.13; the hooks' get and two sets alone were ~7,500 with keywords). It keeps
        what a call can see (the running loop, ``is_running()``, the loop's async
        generator hooks, restored after) and leaves out what the portal already knows
        (the loop is not closed by anyone but its thread, nobody else runs it, its debug
        mode is off) and the hooks' keyword parsing. Loop turns as in
        :meth:`stop_soon`: one more once the call is done if callbacks wait; a
        ``loop.stop()`` during the call is let go, as ``run_forever`` run again did.

        The call's first step, when nothing else is ready, runs without a turn around it
        (its handle run as ``_run_once`` runs one): a call that then waits for I/O (a
        ``delay()`` on Redis, PostgreSQL, NATS) turns the loop while it waits, so the
        turn's ``select(0)`` and timer check before the step were one turn too many
        (~8,000-14,000 instructions of a blocking ``delay()``). A call its first step
        ends gets that turn all the same, without waiting (``_stopping``, as
        ``stop()`` does): timers and I/O go on while such calls come back to back.

        A loop put in debug mode since (``set_debug(True)`` in a call) is run with
        ``run_forever``: its coroutine origin tracking is set on the thread that runs
        the loop and must be taken off it again, as ``run_forever`` does (and as the
        turns do when debug mode comes on during them)."""
        loop = self.loop
        if loop._debug:  # type: ignore[attr-defined]
            call.finish = self.stop_soon  # (read at the call's last step, not yet run)
            self.run_forever_until_done(call, me)
            return
        hooks = _get_asyncgen_hooks()
        loop._thread_id = me  # type: ignore[attr-defined]
        _set_asyncgen_hooks(*self.hooks)
        _set_running_loop(loop)
        try:
            run_once, ready = loop._run_once, loop._ready  # type: ignore[attr-defined]
            if len(ready) == 1:  # the call's first step alone: run it without a turn
                ready.popleft()._run()
                if call.done:  # a turn all the same: I/O and timers are not starved
                    loop._stopping = True  # type: ignore[attr-defined]  # (no wait)
                    run_once()
            while not call.done:
                run_once()
                if loop._stopping:  # type: ignore[attr-defined]
                    loop._stopping = False  # type: ignore[attr-defined]
            if ready:
                run_once()
        finally:
            loop._stopping = False  # type: ignore[attr-defined]
            loop._thread_id = None  # type: ignore[attr-defined]
            _set_running_loop(None)
            _set_asyncgen_hooks(*hooks)
            if loop._coroutine_origin_tracking_enabled:  # type: ignore[attr-defined]
                loop._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]

    def release(self, hand_over: bool = False) -> None:
        now = _monotonic()
        with self.lock:
            if hand_over or self.queued or self.closing:
                self.driver = PORTAL
                wake = True
            else:
                self.driver = None
                self.idle_since = now
                wake = self.watching
        if wake:
            self.notify()

    def served(self) -> None:
        """A handed-over call is done (on the loop): with none left, the portal's thread
        stops the loop, so that a caller's next call drives it."""
        with self.lock:
            self.queued -= 1
            stop = not self.queued and self.driver == PORTAL and not self.closing
            if stop:
                self.handing_back = True
        if stop:
            self.stop_soon()

    def stop_soon(self) -> None:
        """For the portal's thread and a caller in ``run_forever``: stop the loop after
        its next turn, not at once: what the call left for that turn (a client's
        buffered write, such as a NATS wake-up, its flusher's kick) runs first, instead
        of waiting for whoever runs the loop next (the portal's thread after
        :data:`IDLE`, or the next call). A call that left nothing stops it at once: no
        turn more (``_ready``, the loop's queue of callbacks; a loop without it gets the
        turn)."""
        loop = self.loop
        if getattr(loop, "_ready", True):
            loop.call_soon(loop.stop)
        else:
            loop.stop()

    def close_soon(self) -> None:
        """On the loop, when the portal stops: end whatever runs it."""
        if self.finishing:
            return
        if self.driver == PORTAL:
            self.loop.stop()
        elif self.driven is not None:
            self.driven.cancel()

    def serve(self) -> None:
        """The portal's thread: run the loop whenever nobody else does, then close it.

        What else ends it (a ``SystemExit`` or ``KeyboardInterrupt`` raised on the loop,
        which asyncio lets out of ``run_forever``) is told to every caller (:meth:`die`)
        before the loop's tasks are cancelled and the loop closed."""
        cause: BaseException | None = None
        try:
            self.serve_calls()
        except BaseException as exc:
            cause = exc
        finally:
            if cause is not None or not self.closing:
                self.die(cause)
            self.finishing = True
            self.finish()

    def die(self, cause: BaseException | None) -> None:
        """The portal's thread is ending without being stopped: the calls waiting on
        the loop and every later call raise :class:`PortalStoppedError` (they waited
        for ever for a loop nobody runs). Every waiting thread's waker is woken (a
        byte too many costs another thread one more ``recv``); a waiter looks at
        ``dead`` before each wait, so one whose waker came after this sweep does not
        wait either."""
        with self.lock:
            self.dead, self.cause = True, cause
            self.closing = self.finishing = True
            self.handing_back = False  # (a caller waiting for the hand-back looks again)
        log.error(
            "the event loop of a blocking OmniQ app stopped: %s; its blocking calls raise "
            "PortalStoppedError from now on",
            _how_it_died(cause),
            exc_info=cause,
        )
        self.notify()
        with _all_wakers_lock:  # (a thread's first call adds its waker meanwhile)
            wakers = list(_all_wakers)
        for waker in wakers:
            waker.wake()

    def stopped_error(self) -> PortalStoppedError:
        return PortalStoppedError(
            f"the portal's event loop stopped (the loop behind this blocking app, run by "
            f"its thread 'omniq-portal'): {_how_it_died(self.cause)}. No call can run on "
            f"it any more: make a new app"
        )

    def serve_calls(self) -> None:
        """Run the loop whenever nobody else does, until the portal is stopped."""
        loop = self.loop
        self.serving = _get_ident()  # what call() compares with
        seen = -1.0
        while True:
            with self.changed:
                while True:
                    now = time.monotonic()
                    with self.lock:
                        driver, idle_since = self.driver, self.idle_since
                        if driver is None and (self.closing or now >= idle_since + IDLE):
                            self.driver = driver = PORTAL
                        # Driven by a caller: look again after IDLE while calls come and
                        # go (a wake-up per release would cost each call a switch), be
                        # woken by the release once one call has lasted that long.
                        self.watching = driver not in (None, PORTAL) and seen == idle_since
                    if driver == PORTAL:
                        break
                    seen = idle_since
                    self.changed.wait(None if self.watching else idle_since + IDLE - now)
            if self.closing:
                break
            loop.run_forever()
            with self.lock:
                self.handing_back = False
                if not self.queued and not self.closing:
                    self.driver = None
                    self.idle_since = time.monotonic()
            self.notify()

    def finish(self) -> None:
        """Cancel the tasks left, let them end, and close the loop."""
        loop = self.loop
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except BaseException:  # pragma: no cover - nothing left to report it to
            log.debug("closing the portal's loop failed", exc_info=True)
        finally:
            loop.close()


def _ignore() -> None:
    pass


def _how_it_died(cause: BaseException | None) -> str:
    if cause is None:
        return "its thread ended"
    return f"{type(cause).__name__}({', '.join(map(repr, cause.args))}) was raised on it"


#: What :meth:`_Loop.turns_until_done` uses of a loop, besides public methods (and
#: ``Handle._run``).
_ASYNCIO_TURNS = (
    "_run_once",
    "_debug",
    "_coroutine_origin_tracking_enabled",
    "_set_coroutine_origin_tracking",
    "_stopping",
    "_thread_id",
    "_ready",
    "_asyncgen_firstiter_hook",
    "_asyncgen_finalizer_hook",
)


def _runs_asyncio_turns(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a caller may run ``loop``'s turns itself (:meth:`_Loop.turns_until_done`):
    asyncio's own ``run_forever`` and the private parts it uses are there (not uvloop,
    not a subclass with a ``run_forever`` of its own), and debug mode is off (its
    coroutine origin tracking is ``run_forever``'s)."""
    return (
        type(loop).run_forever is asyncio.BaseEventLoop.run_forever
        and all(hasattr(loop, name) for name in _ASYNCIO_TURNS)
        and hasattr(asyncio.Handle, "_run")
        and not loop.get_debug()
    )


class _Sigint:
    """Ctrl-C while the main thread drives a loop cancels its call, as ``asyncio.run``
    does: raised inside the loop, ``KeyboardInterrupt`` could land between two steps of
    the loop's own code and lose a callback.

    Installed when the main thread drives a loop and finds Python's default handler in
    place (looked at on every drive: ~30 ns with ``_signal.getsignal``, where
    ``signal.getsignal`` costs ~3.5 µs and swapping handlers around every call ~5 µs),
    and left in place; while no call is driven it raises ``KeyboardInterrupt`` as the
    default handler does. A program that puts the default handler back gets this one
    again at its next drive; a program's own handler is left alone and runs wherever
    the signal lands.
    """

    def install(self) -> None:
        with contextlib.suppress(ValueError):  # an interpreter without signals
            signal.signal(signal.SIGINT, self.handle)

    @staticmethod
    def handle(signum: int, frame: Any) -> None:
        call = _main_driven
        if call is None or call.interrupted:
            raise KeyboardInterrupt
        call.interrupted = True
        if not call.done:
            call.cancel()
            call.loop.call_soon_threadsafe(_ignore)  # out of a select() with no timeout


_sigint = _Sigint()
_getsignal = _signal.getsignal
_SIGINT = int(signal.SIGINT)
_main_thread = threading.main_thread()
_main_ident = _main_thread.ident
_default_int_handler = signal.default_int_handler
_current_thread = threading.current_thread
_get_running_loop = asyncio.events._get_running_loop
_set_running_loop = asyncio.events._set_running_loop
_get_asyncgen_hooks, _set_asyncgen_hooks = sys.get_asyncgen_hooks, sys.set_asyncgen_hooks
_main_driven: _Call | None = None


class _Waker:
    """A calling thread's socket pair: the loop writes a byte, the caller sleeps in
    ``recv`` until one comes.

    A socket, not a lock: the kernel treats a write to a socket as a hand-over (a
    synchronous wake-up) and lets the woken caller take the loop thread's CPU as that
    thread goes back to sleep; a lock's futex wake-up does not say so. An empty
    ``Portal.call`` measured ~21-26 µs CPU this way against ~30-38 µs with a lock.
    A byte can outlive its call (a caller interrupted while waiting, or one that saw its
    call done before reading): each waiter reads until its own call is done, so such a
    byte only costs one more ``recv``. Two descriptors per calling thread: where none
    are left (``EMFILE``), the thread waits on a semaphore instead.
    """

    def __init__(self, socketpair: Callable[[], tuple[Any, Any]] | None = None) -> None:
        self.reader: Any = None
        self.writer: Any = None
        self.fallback: threading.Semaphore | None = None
        try:
            self.reader, self.writer = (socketpair or _socketpair)()
        except OSError:
            self.fallback = threading.Semaphore(0)
        else:
            self.writer.setblocking(False)  # a full buffer already wakes the reader
        with _all_wakers_lock:  # woken if a loop dies (_Loop.die)
            _all_wakers.add(self)

    def wake(self) -> None:
        """On the loop thread."""
        if self.fallback is not None:
            self.fallback.release()
            return
        try:
            self.writer.send(b"\0")
        except OSError:
            pass  # full (the reader will wake anyway) or closed (nobody waits)

    def wait(self) -> None:
        if self.fallback is not None:
            self.fallback.acquire()
        else:
            self.reader.recv(64)

    def __del__(self) -> None:  # the thread that owned it has ended
        for sock in (self.reader, self.writer):
            if sock is not None:
                sock.close()


_wakers = threading.local()
_all_wakers: weakref.WeakSet[_Waker] = weakref.WeakSet()
#: Guards adding to ``_all_wakers`` and copying it: a set that grows while another
#: thread iterates over it stops that iteration (``RuntimeError``).
_all_wakers_lock = threading.RLock()
_get_ident = threading.get_ident
_CoroutineType = types.CoroutineType
_Task = asyncio.Task

#: The C module's pair where there is one: plain OS sockets even in a process gevent
#: patched, so the caller blocks as it did on a lock (not in a hub of its own).
_socketpair: Callable[[], tuple[Any, Any]] = getattr(_socket, "socketpair", socket.socketpair)


def _waker() -> _Waker:
    waker: _Waker | None = getattr(_wakers, "waker", None)
    if waker is None:
        pair = getattr(_wakers, "pair", None)
        if pair is not None:  # a thread of many callers: a waker per call (see below)
            return _Waker(pair)
        waker = _wakers.waker = _Waker()
    return waker


def wait_per_call(socketpair: Callable[[], tuple[Any, Any]]) -> None:
    """This thread runs many callers at once (gevent's greenlets, in the gevent pool's
    hub thread): each blocking call made in it waits on a socket pair of its own, made by
    ``socketpair`` (gevent's, whose ``recv`` yields to the other callers). One waker
    for the thread would block all of them while one waits: a task waiting for the
    result of a task the same hub must run would wait for ever."""
    _wakers.pair = socketpair


def _forget_wakers() -> None:
    """A forked child must not share its parent's pairs (it could read its bytes), nor
    its portals' loops (their threads are not in the child): it starts its own."""
    global _wakers, _all_wakers, _all_wakers_lock, _main_thread, _main_ident, _main_driven
    _wakers, _all_wakers, _all_wakers_lock = threading.local(), weakref.WeakSet(), threading.RLock()
    _main_thread = threading.main_thread()
    _main_ident, _main_driven = _main_thread.ident, None
    for portal in list(_portals):
        state = portal._state
        if state is not None:  # a call this thread drove at the fork ends on it alone
            state.lock, state.changed = threading.Lock(), threading.Condition(threading.RLock())
            state.closing = True
        portal._lock = threading.Lock()
        portal._state = None  # (its loop is the parent's: nothing to close here)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_wakers)


class _Call:
    """One blocking call, run as a task on the loop.

    Handed over, the caller sleeps on its thread's :class:`_Waker`, which the task wakes
    as its last step, so no callback or extra loop iteration stands between the result
    and the caller's wake-up; driven by the caller, the caller's turns end with the call
    (:meth:`_Loop.turns_until_done`), or its task's last step stops the loop
    (``finish``: after the loop's next turn, :meth:`_Loop.stop_soon`)."""

    __slots__ = (
        "args",
        "cancelled",
        "done",
        "error",
        "finish",
        "func",
        "interrupted",
        "loop",
        "started",
        "task",
        "value",
        "waker",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        finish: Callable[[], None] | None,
        waker: _Waker | None = None,
    ) -> None:
        self.loop, self.func, self.args = loop, func, args
        self.finish, self.waker = finish, waker
        self.done = self.started = self.cancelled = self.interrupted = False
        self.task: asyncio.Task[None] | None = None
        self.value: Any = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """On the loop thread (the callback the caller scheduled)."""
        self.task = self.loop.create_task(self.run(), name=_CALL_NAME)

    async def run(self) -> None:
        self.started = True
        try:
            if self.cancelled:
                raise asyncio.CancelledError
            result = self.func(*self.args)
            self.value = (
                await result
                if type(result) is _CoroutineType or inspect.isawaitable(result)
                else result
            )
        except asyncio.CancelledError as exc:
            self.error = exc
            raise  # the task ends cancelled, as a cancelled task should
        except BaseException as exc:  # handed to the caller, whatever it is
            self.error = exc
        finally:
            self.done = True
            if self.finish is not None:
                self.finish()
            if self.waker is not None:
                self.waker.wake()

    def wait(self, state: _Loop) -> Any:
        """In the calling thread: block until the task is done; return or raise as it did.

        A signal handler that raises while the caller waits (Ctrl-C's
        ``KeyboardInterrupt``) cancels the task and propagates at once. A loop that
        died (``state.dead``, :meth:`_Loop.die`) will not run the call: that is raised."""
        assert self.waker is not None
        try:
            while not self.done:
                if state.dead:
                    raise state.stopped_error() from state.cause
                self.waker.wait()
        except BaseException:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to cancel
                self.loop.call_soon_threadsafe(self.cancel)
            raise
        if state.dead and isinstance(self.error, asyncio.CancelledError):
            self.task = self.error = None  # cancelled as the dead loop was closed
            raise state.stopped_error() from state.cause
        return self.outcome()

    def outcome(self) -> Any:
        """Return or raise as the task did (a Ctrl-C that cancelled it: raise that)."""
        self.task = None
        error, self.error = self.error, None
        if self.interrupted:
            raise KeyboardInterrupt
        if error is None:
            return self.value
        if isinstance(error, asyncio.CancelledError):
            # what ``concurrent.futures`` raised for a task cancelled on the loop
            raise concurrent.futures.CancelledError() from None
        try:
            raise error
        finally:
            del error  # no cycle through the traceback's frames

    def cancel(self) -> None:
        """On the loop thread. A task cancelled before its first step would never run
        ``run``'s ``finally``: it is told to end as it starts instead."""
        if not self.started:
            self.cancelled = True
        elif self.task is not None:
            self.task.cancel()


def _as_coro(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any) -> Any:
        return func(*args)

    return run


class blocking(Generic[P, R]):
    """Declares a blocking twin of an async method: ``enqueue = blocking(AsyncOmniQ.enqueue)``.

    A facade's first access builds its blocking function and keeps it in the facade's
    ``__dict__``, where later accesses find it (a descriptor without ``__set__`` comes
    after the instance's dict): ``functools.wraps`` and a closure on every access cost
    ~9,000 instructions a call. The async method is still looked up at each call."""

    def __init__(self, method: Callable[Concatenate[Any, P], Awaitable[R]]) -> None:
        self.method = method
        self.name = self.attribute = method.__name__
        functools.update_wrapper(self, method)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, obj: None, owner: type) -> blocking[P, R]: ...
    @overload
    def __get__(self, obj: SyncWrapper[Any], owner: type) -> Callable[P, R]: ...
    def __get__(self, obj: SyncWrapper[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        name, target, run = self.name, obj._async, obj._portal.call

        @functools.wraps(self.method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            method = getattr(target, name)
            result: R = (
                run(functools.partial(method, *args, **kwargs)) if kwargs else run(method, *args)
            )
            return result

        obj.__dict__[self.attribute] = call  # no reference back to obj: no cycle
        return call


class SyncWrapper(Generic[T]):
    """Base of every blocking facade: holds the async object and the portal."""

    def __init__(self, async_obj: T) -> None:
        self._async = async_obj
        # A facade the program never closes is closed once nothing can call it any more
        # (the facade and every blocking method taken from it are gone: they all hold
        # the portal) or, at the latest, at interpreter exit, while the loop thread still
        # runs: otherwise its stores' background tasks die with the daemon thread,
        # mid-flight ("Task was destroyed but it is pending!"), and their connections
        # are dropped unclosed (see _closed_when_collected).
        self._portal = Portal(closes=async_obj)

    @property
    def aio(self) -> T:
        """The async object behind this facade (for use on the portal's loop only)."""
        return self._async

    def close(self) -> None:
        """Close the async object on the loop, then stop the loop. A loop that died
        (:attr:`Portal.died`) has nothing left to run the close: it is only stopped."""
        closer = getattr(self._async, "close", None)
        try:
            if closer is not None and self._portal.started and not self._portal.died:
                self._portal.call(closer)
        finally:
            self._portal.stop()

    def __enter__(self: W) -> W:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Set by the exit hook: from then on a close left open is waited for, bounded.
_exiting = False
_exit_hooked = False
#: The loops a collected facade's close was handed to (their threads end after it).
_handed: weakref.WeakSet[_Loop] = weakref.WeakSet()


def _at_exit() -> None:
    """Let the closes handed over by the collector end (bounded), then close the
    facades still open (each waited for, bounded)."""
    global _exiting
    _exiting = True
    deadline = time.monotonic() + EXIT_CLOSE_TIMEOUT + 1.0
    for state in list(_handed):
        state.thread.join(max(deadline - time.monotonic(), 0.0))
    for portal in list(_portals):
        left, closes = portal._state, portal._closes
        if left is not None and closes is not None:
            _close_left_open(closes, left)


def _hook_exit() -> None:
    """Register :func:`_at_exit` once, when a portal that closes something first starts
    its loop: a facade never called costs nothing."""
    global _exit_hooked
    if not _exit_hooked:
        _exit_hooked = True
        atexit.register(_at_exit)


def _close_left_open(async_obj: Any, state: _Loop) -> None:
    """Close ``async_obj`` on its loop and stop the loop, for a facade nobody closed.

    From the garbage collector it never waits: a collection runs in whichever thread
    allocates, which may be one that drives a loop (a wait there could be for itself),
    or the store's own worker thread that the close needs. It hands the close to the
    loop, whose thread runs it and then stops. At exit it hands it over too and waits,
    bounded, for the loop's thread to end, so the close is over before the process
    ends, and a loop that never runs it does not hold the exit up."""
    if state.closing:
        return  # stopped already (or inherited by a forked child)
    closer = getattr(async_obj, "close", None)
    try:
        state.loop.call_soon_threadsafe(_close_on_loop, closer, state)
    except RuntimeError:  # the loop is closed
        return
    if not _exiting:
        _handed.add(state)
    elif not state.is_current():  # (the loop cannot wait for itself)
        # Bounded even where the loop never runs the close: a task that blocks it, or a
        # portal's thread that ended (a call's wait here would be for ever).
        state.thread.join(EXIT_CLOSE_TIMEOUT + 1.0)


#: The closes handed to loops by the collector, kept until done (a loop holds its
#: tasks weakly).
_closing: set[asyncio.Task[None]] = set()


def _close_on_loop(closer: Callable[[], Awaitable[Any]] | None, state: _Loop) -> None:
    task = state.loop.create_task(_close_then_stop(closer, state))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close_then_stop(closer: Callable[[], Awaitable[Any]] | None, state: _Loop) -> None:
    try:
        if closer is not None:
            await _bounded(closer, EXIT_CLOSE_TIMEOUT)
    except Exception:
        log.debug("closing %r left open failed", closer, exc_info=True)
    finally:
        state.stop()


async def _bounded(closer: Callable[[], Awaitable[Any]], timeout: float) -> None:
    with anyio.move_on_after(timeout) as scope:
        await closer()
    if scope.cancelled_caught:  # a close that never ends is a bug: say so
        log.warning("closing %r left open did not end within %ss: cut short", closer, timeout)
