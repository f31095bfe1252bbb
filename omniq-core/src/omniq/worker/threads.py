"""The thread pool's own threads, for plain (blocking) task functions.

Two things the shared executors do not give: the threads are daemon threads, so a
forced stop is not held up at interpreter exit by bodies that cannot be interrupted
(``concurrent.futures`` and anyio join their threads); and the pool can tell how many
bodies still run, so the worker never hands a task back while its body runs on here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadRunner"]

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # cancelled: the caller stopped waiting (timeout, lease lost, stop)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class ThreadRunner:
    """Runs calls in daemon threads, one call per thread at a time. A thread is started
    when none is idle, so a call abandoned on timeout or cancellation keeps its thread
    until its body returns without taking a slot from the next call."""

    def __init__(self, name: str = "omniq-thread") -> None:
        self.name = name
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False
        self._count = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> int:
        """Bodies running now, counting abandoned ones."""
        return self._running

    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is stopped")
            inbox = self._idle.pop() if self._idle else None
            self._running += 1
            if inbox is None:
                self._count += 1
                inbox = queue.SimpleQueue()
                threading.Thread(
                    target=self._main, args=(inbox,), daemon=True, name=f"{self.name}-{self._count}"
                ).start()
        inbox.put((call, future, loop))
        return await future

    def close(self) -> None:
        """Idle threads exit now, busy ones when their body returns (never waited for)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _main(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        while (job := inbox.get()) is not None:
            call, future, loop = job
            try:
                ok, value = True, call()
            except BaseException as exc:  # handed to the awaiting coroutine
                ok, value = False, exc
            with self._lock:
                self._running -= 1
                closed = self._closed
                if not closed:
                    self._idle.append(inbox)
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            del job, call, value
            if closed:
                return
