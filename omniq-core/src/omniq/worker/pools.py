"""The in-core execution pools: async, thread and process.

A pool only runs calls and enforces timeouts; the runtime loop does everything else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio
import anyio.to_thread

from ..errors import OmniQError, TaskTimeoutError
from ..interfaces import BasePool

__all__ = ["AsyncPool", "PoolBrokenError", "ProcessPool", "ThreadPool", "with_timeout"]


class PoolBrokenError(OmniQError):
    """The process running a task died (killed, out of memory, crashed): an
    infrastructure failure, handled like a lapsed lease rather than a task error."""


async def with_timeout(awaitable: Any, timeout: float | None) -> Any:
    """Await with the task's timeout, raising :class:`TaskTimeoutError` (for pools)."""
    if timeout is None:
        return await awaitable
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            return await awaitable
    except TimeoutError:
        if cm.expired():  # ours, not a TimeoutError the task raised itself
            raise TaskTimeoutError(f"task exceeded its timeout of {timeout:g} s") from None
        raise


class AsyncPool(BasePool):
    """Coroutine functions run on the worker's event loop; plain functions in threads
    (at most ``concurrency`` at once). A timed-out thread cannot be killed: it is
    abandoned and its result ignored; use the process pool for hard timeouts."""

    name = "async"

    def __init__(self, concurrency: int, **options: Any) -> None:
        super().__init__(concurrency, **options)
        self._limiter: anyio.CapacityLimiter | None = None

    async def start(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.concurrency)

    async def run(self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                  timeout: float | None) -> Any:
        if inspect.iscoroutinefunction(func):
            return await with_timeout(func(*args, **kwargs), timeout)
        call = functools.partial(func, *args, **kwargs)
        value = await with_timeout(
            anyio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True), timeout
        )
        if inspect.isawaitable(value):  # a plain callable that returned a coroutine
            value = await with_timeout(value, timeout)
        return value


class ThreadPool(AsyncPool):
    """Every task in a thread of its own pool; coroutine functions still run on the
    loop (they would only block a thread)."""

    name = "thread"


def _call_in_child(blob: bytes) -> bytes:
    """Runs in the child process: the call arrives and leaves as dill bytes (a local
    pipe between our own processes, never a network peer)."""
    import dill

    func, args, kwargs = dill.loads(blob)
    value = func(*args, **kwargs)
    if inspect.isawaitable(value):
        async def wait() -> Any:
            return await value

        value = asyncio.run(wait())
    return dill.dumps(value)


class ProcessPool(BasePool):
    """Each task in a child process (spawned, so the parent's threads and event loop are
    not inherited). Timeouts are hard: the children are terminated, the timed-out task
    fails, and the other tasks that were running are reported as pool failures
    (:class:`PoolBrokenError`, handled like a lapsed lease). The pool is rebuilt."""

    name = "process"

    def __init__(self, concurrency: int, *, max_tasks_per_child: int | None = None, **options: Any) -> None:
        super().__init__(concurrency, **options)
        self.max_tasks_per_child = max_tasks_per_child
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.concurrency,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=self.max_tasks_per_child,
            )
        return self._executor

    def child_pids(self) -> list[int]:
        procs = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in procs.values() if p.pid is not None]

    def _kill(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to stop one running call.
        for proc in list((getattr(executor, "_processes", None) or {}).values()):
            proc.terminate()
        executor.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        self._pool()

    async def stop(self, wait: bool = True) -> None:
        if not wait:
            self._kill()
        elif self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True)

    async def run(self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                  timeout: float | None) -> Any:
        import dill

        try:
            blob = dill.dumps((func, list(args), dict(kwargs)), recurse=True)
        except Exception as exc:
            raise TypeError(f"cannot send the call to a child process: {exc}") from exc
        executor = self._pool()
        try:
            future = asyncio.wrap_future(executor.submit(_call_in_child, blob))
        except BrokenProcessPool as exc:
            self._executor = None
            raise PoolBrokenError("the process pool broke before the task started") from exc
        try:
            result = await with_timeout(future, timeout)
        except TaskTimeoutError:
            self._kill()
            raise
        except BrokenProcessPool as exc:
            if self._executor is executor:
                self._executor = None
            raise PoolBrokenError(f"the child process running this task died: {exc}") from exc
        except asyncio.CancelledError:
            future.cancel()
            raise
        return dill.loads(result)
