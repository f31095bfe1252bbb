"""Running an application's queued tasks inside a test, with a real worker and a clock
that jumps instead of waiting (docs/testing.md).

:func:`run_queued` runs a :class:`~omniq.worker.runtime.Worker` (async pool) in the test's
own process and event loop, so retries, dependencies, errors, events and results follow
exactly the rules of a deployed worker. Each round stops as soon as nothing is ready;
when what is left only waits for a time (a retry's backoff, a ``delay``/``eta``), the
:class:`JumpClock` moves ``time.time()`` forward to that moment instead of sleeping, and
the next round runs it. The jump is real for everything that reads ``time.time()`` (the
worker, the core, in-process stores such as ``memory://``); a store with a server clock
(Redis, PostgreSQL) cannot be jumped and its delayed tasks wait for real.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from ..interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from ..models import ACTIVE_STATES, READY_STATES, TaskState
from ..registry import registry
from ..sync import SyncWrapper
from ..worker.runtime import Worker

if TYPE_CHECKING:
    from ..app import AsyncOmniQ, OmniQ

__all__ = ["JumpClock", "memory_url", "run_queued", "use_stores"]

T = TypeVar("T")

#: Rounds :func:`run_queued` runs before it decides the tasks will never finish (a task
#: retrying forever, or one that keeps scheduling another).
MAX_ROUNDS = 1000


class JumpClock:
    """``time.time()`` and ``time.time_ns()`` plus an offset that only grows.

    Installed, it replaces the two functions of the :mod:`time` module (modules that
    call ``time.time()`` see it; a ``from time import time`` taken earlier does not);
    :meth:`advance` moves it forward. The event loop's clock (monotonic) is untouched,
    so timeouts inside the test keep real time.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self._saved: tuple[Callable[[], float], Callable[[], int]] | None = None

    def install(self) -> None:
        if self._saved is not None:
            return
        real, real_ns = self._saved = (time.time, time.time_ns)
        time.time = lambda: real() + self.offset
        time.time_ns = lambda: real_ns() + int(self.offset * 1e9)

    def uninstall(self) -> None:
        if self._saved is not None:
            time.time, time.time_ns = self._saved
            self._saved = None

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (never back: stores order events by it)."""
        self.offset += max(seconds, 0.0)

    def __enter__(self) -> JumpClock:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def memory_url() -> str:
    """A fresh ``memory://`` namespace (one per test: nothing leaks between tests)."""
    return f"memory://omniq-test-{uuid.uuid4().hex[:12]}"


@contextmanager
def use_stores(app: AsyncOmniQ | OmniQ, url: str | None = None) -> Iterator[AsyncOmniQ | OmniQ]:
    """Point an existing app (a project's own, with its tasks registered) at the stores
    of ``url`` (a fresh :func:`memory_url` by default) and restore its own on exit.

    The app must not be open on its own stores yet: a test app is (tasks registered at
    import do not open anything)."""
    inner: AsyncOmniQ = app.aio if isinstance(app, SyncWrapper) else app
    if inner._opened:
        raise RuntimeError(
            "use_stores() needs an app that has not opened its stores yet; point the "
            "test at the app before it enqueues (or close it first)"
        )
    url = url or memory_url()
    saved = (inner.task_queue, inner.result_storage, inner.event_storage)
    inner.task_queue = cast(BaseTaskQueue, registry.resolve("task_queue", url))
    inner.result_storage = cast(BaseResultStorage, registry.resolve("result_storage", url))
    inner.event_storage = cast(BaseEventStorage, registry.resolve("event_storage", url))
    try:
        yield app
    finally:
        inner._opened = False  # (in-memory stores hold no connection to close)
        inner.task_queue, inner.result_storage, inner.event_storage = saved


class _InlineWorker(Worker):
    """A burst worker that stops as soon as a reserve finds nothing and it holds nothing,
    where a real burst worker waits for tasks that are only delayed."""

    async def _queues_empty(self) -> bool:
        return True


async def _run_queued(
    app: AsyncOmniQ, clock: JumpClock | None, concurrency: int, max_rounds: int
) -> Counter[str]:
    await app.open()
    queue = app.task_queue
    counts: Counter[str] = Counter()
    for _ in range(max_rounds):
        stats = await queue.stats()
        active = {
            q: {TaskState(s) for s, n in by_state.items() if n and TaskState(s) in ACTIVE_STATES}
            for q, by_state in stats.items()
        }
        queues = sorted(q for q, states in active.items() if states)
        if not queues:
            return counts
        waiting = await queue.list(states=READY_STATES, limit=10_000)
        if not waiting:  # only tasks nobody can move (held by another worker, waiting)
            break
        at = await queue.now()
        if not any(t.is_ready(at) for t in waiting):
            etas = [t.eta for t in waiting if t.eta is not None]
            if clock is None or not etas:
                break
            clock.advance(min(etas) - at)
        worker = _InlineWorker(
            app, pool="async", concurrency=concurrency, queues=queues, burst=True
        )
        await worker.run(install_signals=False)
        counts.update(worker.stats.counts)
    left = {q: sorted(s.value for s in states) for q, states in active.items() if states}
    raise RuntimeError(
        f"run_queued: tasks are still active after {max_rounds} rounds ({left}); a task "
        f"that retries or reschedules itself forever, or one waiting for a time without "
        f"a JumpClock"
    )


@overload
def run_queued(
    app: AsyncOmniQ,
    *,
    clock: JumpClock | None = ...,
    concurrency: int = ...,
    max_rounds: int = ...,
) -> Awaitable[Counter[str]]: ...
@overload
def run_queued(
    app: OmniQ, *, clock: JumpClock | None = ..., concurrency: int = ..., max_rounds: int = ...
) -> Counter[str]: ...
def run_queued(
    app: Any,
    *,
    clock: JumpClock | None = None,
    concurrency: int = 1,
    max_rounds: int = MAX_ROUNDS,
) -> Any:
    """Run every queued task of ``app`` to its end in this process; return the worker's
    outcome counts (``succeeded``, ``retried``, ``failed``, ``dead``).

    With an :class:`~omniq.AsyncOmniQ` it returns an awaitable, with an
    :class:`~omniq.OmniQ` it blocks. ``clock`` (the ``omniq_clock`` fixture) is jumped
    over the time tasks wait for; without one a delayed task ends the run unfinished
    (:class:`RuntimeError`). ``concurrency`` 1 runs tasks one at a time, in the order a
    worker reserves them."""
    if isinstance(app, SyncWrapper):
        inner = app.aio
        return app._portal.call(lambda: _run_queued(inner, clock, concurrency, max_rounds))
    return _run_queued(app, clock, concurrency, max_rounds)
