"""The in-core execution pools: async, thread and process.

A pool only runs calls and enforces timeouts; the runtime loop does everything else.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import pickle
from collections.abc import Callable, Mapping, Sequence
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

import msgspec

from ..context import body_started, body_starting, carries_into_child, current_task
from ..errors import OmniQError, TaskTimeoutError
from ..interfaces import BasePool
from .children import Child, TaskName
from .threads import ThreadRunner

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


def is_coroutine_function(func: Callable[..., Any]) -> bool:
    """:func:`inspect.iscoroutinefunction`, with an ``async def`` function told by its
    code's flag first: the general test (partials, methods) is ~4,000 instructions a
    call, half of what the pool spent on a no-op task."""
    if type(func) is FunctionType and func.__code__.co_flags & CO_COROUTINE:
        return True
    return inspect.iscoroutinefunction(func)


class AsyncPool(BasePool):
    """Coroutine functions run on the worker's event loop; plain functions in the pool's
    own daemon threads (the runtime runs at most ``concurrency`` calls at once). A
    timed-out or cancelled thread cannot be killed: it is abandoned and its result
    ignored, and :meth:`bodies_running` counts it until it returns; use the process pool
    for hard timeouts."""

    name = "async"

    def __init__(self, concurrency: int, **options: Any) -> None:
        super().__init__(concurrency, **options)
        self._threads = ThreadRunner(f"omniq-{self.name}")

    async def start(self) -> None:
        if self._threads.closed:  # the pool is started again
            self._threads = ThreadRunner(f"omniq-{self.name}")

    async def stop(self, wait: bool = True) -> None:
        self._threads.close()

    def bodies_running(self) -> int:
        return self._threads.running

    async def run(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> Any:
        if is_coroutine_function(func):
            call = func(*args, **kwargs)  # without a timeout, no wrapping coroutine
            return await (call if timeout is None else with_timeout(call, timeout))
        value = await with_timeout(self._threads.run(func, *args, **kwargs), timeout)
        if inspect.isawaitable(value):  # a plain callable that returned a coroutine
            value = await with_timeout(value, timeout)
        return value


class ThreadPool(AsyncPool):
    """Every plain function in a thread of the pool's own; coroutine functions still run
    on the loop (they would only block a thread)."""

    name = "thread"


def _carried() -> bytes:
    """What the attempt's :func:`omniq.context.at_body_start` callbacks return, pickled
    for the child (a failure names them: the call itself would cross)."""
    enters = body_starting(True)
    try:
        return pickle.dumps(enters)
    except Exception as exc:
        raise TypeError(
            f"cannot send what an omniq.context.at_body_start callback returned to a child "
            f"process (a module-level function, or a functools.partial of one, pickles): {exc}"
        ) from exc


class ProcessPool(BasePool):
    """Each task in a child process of the pool's own (spawned, so the parent's threads
    and event loop are not inherited), one call per child at a time. Timeouts are hard:
    the child running the timed-out task is killed and replaced, and the tasks running
    in the other children carry on. A child that dies (killed, out of memory) fails only
    its own task, with :class:`PoolBrokenError` (handled like a lapsed lease)."""

    name = "process"
    calls_body_start = True

    def __init__(
        self, concurrency: int, *, max_tasks_per_child: int | None = None, **options: Any
    ) -> None:
        super().__init__(concurrency, **options)
        self.max_tasks_per_child = max_tasks_per_child
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[Child] = []
        self._busy: set[Child] = set()
        self._retired: list[Child] = []  # asked to exit or killed: joined at stop
        #: The name each registered task's function is sent as (see TaskName.of).
        self._sent_as: dict[Callable[..., Any], TaskName] = {}

    def bodies_running(self) -> int:
        killed = sum(1 for c in self._retired if c.killed and c.alive())
        return len(self._busy) + killed

    def child_pids(self) -> list[int]:
        return [c.pid for c in (*self._idle, *self._busy) if c.pid is not None]

    def _take(self) -> Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive():
                return child
            child.kill()
        return Child(self._context)

    def _put_back(self, child: Child) -> None:
        self._busy.discard(child)
        if self.max_tasks_per_child and child.calls >= self.max_tasks_per_child:
            child.retire()
            self._retire(child)
        else:
            self._idle.append(child)

    def _drop(self, child: Child) -> None:
        self._busy.discard(child)
        child.kill()
        self._retire(child)

    def _retire(self, child: Child) -> None:
        self._retired = [c for c in self._retired if c.alive()]  # reaps those that exited
        self._retired.append(child)

    async def stop(self, wait: bool = True) -> None:
        idle, self._idle = self._idle, []
        busy, self._busy = list(self._busy), set()
        for child in idle:
            if wait:
                child.retire()
            else:
                child.kill()
        for child in busy:
            child.kill()
        children = [*idle, *busy, *self._retired]
        self._retired = []

        def join_all() -> None:
            for child in children:
                child.join(5.0)

        await asyncio.to_thread(join_all)
        for child in children:
            child.kill()  # one that did not exit in time

    async def run(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> Any:
        import dill

        try:
            task = current_task()  # as plain values: dill would take the class apart
            context = None if task is None else msgspec.structs.astuple(task)
            sent: Any = self._sent_as.get(func)
            if sent is None:  # (only names are kept: a function carried in a payload is
                name = TaskName.of(func)  # a new object per task)
                if name is not None:
                    self._sent_as[func] = name
                sent = name or func
            blob = dill.dumps((sent, list(args), dict(kwargs), context), recurse=True)
        except Exception as exc:
            raise TypeError(f"cannot send the call to a child process: {exc}") from exc
        try:
            child = self._take()
        except OSError as exc:
            raise PoolBrokenError(f"could not start a child process: {exc}") from exc
        self._busy.add(child)
        try:
            named = type(sent) is TaskName
            if not carries_into_child():  # (nothing more crosses)
                loaded = await child.send(blob)
            elif named and sent in child.loaded:  # (the body starts as the call is unpickled)
                loaded = await child.send(blob, _carried())
            else:  # a start-up or an import first: the body starts once they are done
                loaded = await child.send(blob, later=True)
                enters = _carried()  # (a span starts now, not before them)
                if loaded:
                    child.carry(enters)
            body_started()  # the duration runs from here too, as the timeout below does
            if loaded and named:
                child.loaded.add(sent)
            reply = await with_timeout(child.reply(), timeout)
        except TaskTimeoutError:  # an OSError too: before the next clause
            self._drop(child)
            raise
        except (EOFError, OSError) as exc:
            self._drop(child)
            raise PoolBrokenError(
                f"the child process running this task (pid {child.pid}) died "
                f"(exit code {child.process.exitcode})"
            ) from exc
        except BaseException:
            # A timeout or a cancellation (lease lost, stop): the child may still run the
            # call, so it alone is killed; the other children carry on.
            self._drop(child)
            raise
        self._put_back(child)
        return Child.decode(reply)
