"""A gevent hub in a real OS thread that runs blocking calls as greenlets.

The worker's asyncio loop stays in its own thread. Calls cross over through a deque and
a libev/libuv *async* watcher (the one thread-safe way to wake a gevent loop); results
come back through :class:`concurrent.futures.Future`, which asyncio awaits with
:func:`asyncio.wrap_future`. The hub thread touches nothing of asyncio's and asyncio
touches nothing of the hub's except :meth:`GreenletHub.post`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool
import gevent.queue
import gevent.socket

from omniq.errors import TaskTimeoutError
from omniq.sync import wait_per_call

__all__ = ["GreenletHub"]


class _Call:
    """One call on its way to (and running in) the hub thread."""

    __slots__ = ("fn", "future", "greenlet", "timeout")

    def __init__(self, fn: Callable[[], Any], timeout: float | None) -> None:
        self.fn = fn
        self.timeout = timeout
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.greenlet: gevent.Greenlet | None = None


class GreenletHub:
    """Runs calls as greenlets of a ``gevent.pool.Pool(size)`` in a dedicated thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._inbox: deque[Callable[[], None]] = deque()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: Any = None
        self._queue: gevent.queue.Queue[_Call | None] | None = None
        self._pool: gevent.pool.Pool | None = None
        self._closing = False
        self._failed: BaseException | None = None

    # -- asyncio side --------------------------------------------------------------------

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="omniq-gevent-hub", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._failed is not None:
            raise RuntimeError(
                f"the gevent hub thread could not start: {self._failed}"
            ) from self._failed

    def post(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the hub (thread-safe; it must not block)."""
        if self._watcher is None or self._closing:
            raise RuntimeError("the gevent hub is not running (pool not started, or stopped)")
        self._inbox.append(action)
        self._watcher.send()

    async def run(self, fn: Callable[[], Any], timeout: float | None, backstop: float) -> Any:
        """Run ``fn`` in a greenlet and return its value.

        ``timeout`` is enforced in the hub by :class:`gevent.Timeout`, which interrupts the
        greenlet where it waits. A function that never yields cannot be interrupted; after
        ``timeout + backstop`` it is abandoned (killed when it next yields) and the call
        fails anyway, as in the thread pool.
        """
        call = _Call(fn, timeout)
        queue = self._queue
        assert queue is not None
        self.post(lambda: queue.put_nowait(call))
        try:
            async with asyncio.timeout(None if timeout is None else timeout + backstop) as cm:
                return await asyncio.wrap_future(call.future)
        except TimeoutError:
            if not cm.expired():
                raise  # the function's own TimeoutError
            self._kill(call)
            raise TaskTimeoutError(
                f"task exceeded its timeout of {timeout:g} s and did not yield to gevent "
                f"within {backstop:g} s more (a CPU-bound or non-patched blocking call); it was "
                f"abandoned"
            ) from None
        except asyncio.CancelledError:
            self._kill(call)
            raise

    def running(self) -> int:
        """Greenlets running calls now, killed ones until they have unwound (read from
        the asyncio thread: a plain length, never a hub call)."""
        pool = self._pool
        return len(pool) if pool is not None and not self._closing else 0

    def _kill(self, call: _Call) -> None:
        if call.future.cancel() or self._closing:
            return  # not started yet: the dispatcher skips it

        def kill() -> None:
            if call.greenlet is not None:
                call.greenlet.kill(block=False)

        self.post(kill)

    async def stop(self, wait: bool = True) -> None:
        """Stop taking calls; with ``wait``, let running greenlets finish first, else kill them."""
        if self._thread is None or self._closing:
            return
        queue, pool = self._queue, self._pool
        assert queue is not None and pool is not None

        def shutdown() -> None:
            if not wait:
                pool.kill(block=False)
            queue.put_nowait(None)

        self.post(shutdown)
        self._closing = True
        if wait:
            await asyncio.to_thread(self._thread.join)

    # -- hub thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            hub = gevent.get_hub()
            # A greenlet's blocking app call (delay(), get_result()) waits on a socket of
            # its own, yielding to the others: one may wait for a task another runs.
            wait_per_call(gevent.socket.socketpair)
            self._queue = gevent.queue.Queue()
            self._pool = gevent.pool.Pool(self.size)
            self._watcher = hub.loop.async_()
            self._watcher.start(self._drain_inbox)
        except BaseException as exc:
            self._failed = exc
            raise
        finally:
            self._ready.set()
        try:
            while (call := self._queue.get()) is not None:
                if call.future.set_running_or_notify_cancel():
                    call.greenlet = self._pool.spawn(self._run, call)
            self._pool.join()
        finally:
            self._watcher.stop()
            self._watcher.close()
            hub.destroy(destroy_loop=True)

    def _drain_inbox(self) -> None:
        while self._inbox:
            self._inbox.popleft()()

    @staticmethod
    def _run(call: _Call) -> None:
        timer = gevent.Timeout(call.timeout)
        try:
            with timer:
                value = call.fn()
        except gevent.Timeout as exc:
            if exc is not timer:
                call.future.set_exception(exc)
            else:
                call.future.set_exception(
                    TaskTimeoutError(f"task exceeded its timeout of {call.timeout:g} s")
                )
        except BaseException as exc:  # GreenletExit too: whoever waits must hear of it
            call.future.set_exception(exc)
        else:
            call.future.set_result(value)
