"""Per-task middleware: code that runs around every task, in one ordered chain.

A middleware subclasses :class:`Middleware` and overrides the methods it needs; the
others stay no-ops and cost nothing, because the chain keeps, for each point, only the
methods a middleware overrides. Nothing per task goes through pluggy: a plugin hands its
middleware over once (the ``omniq_middleware`` hook, called when an app is created) and
an application adds its own (``AsyncOmniQ(middleware=[...])``, ``app.add_middleware``).

Order: the ``before_*`` methods run in the order the middleware were added (plugins
first, then the app's), ``after_success``, ``after_completion``, ``on_failure`` and
``after_failure_completion`` in the reverse order, so the first middleware wraps all
the others.

Two points per end of an attempt: ``after_success`` / ``on_failure`` when the attempt
ends (in its context, before anything is written), then ``after_completion`` /
``after_failure_completion`` when the store has answered the write of its outcome
(the completion, the retry or the dead letter): a worker that lost its lease while the
attempt ran (paused past it, the task delivered again) has that write refused, and the
attempt decides nothing. Outcomes are counted at the second point.

Where they run: ``before_enqueue`` in the enqueuing process; the others in the worker
process on its event loop, in the running task's context (:func:`omniq.current_task`
works there), whatever the pool (a process-pool task's body runs in a child; its
middleware runs in the worker).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import PluginError
from .models import Task
from .registry import registry

if TYPE_CHECKING:
    from .app import AsyncOmniQ

__all__ = ["Middleware", "MiddlewareChain", "plugin_middleware"]

log = logging.getLogger("omniq.middleware")


class Middleware:
    """The base of a middleware; every method is a no-op (override what you need)."""

    async def before_enqueue(self, task: Task) -> None:
        """Before ``task`` is stored. May add to ``task.headers`` (``str`` to ``str``),
        which the task record carries to the worker. Raising refuses the enqueue: the
        caller gets the exception and nothing of that call is stored."""

    async def before_run(self, task: Task) -> None:
        """Before an attempt's body runs. Raising fails the attempt as if the body had
        raised (retried while retries remain)."""

    async def after_success(self, task: Task, value: Any) -> None:
        """The attempt returned ``value`` (encoded for the result store already: a value
        that does not encode fails the attempt, ``on_failure``); its result is written
        after this returns, and ``after_completion`` tells whether the store accepted
        it. An exception here is logged and does not change the outcome."""

    def after_completion(self, task: Task, *, accepted: bool) -> None:
        """The store answered the completion of an attempt that succeeded (one that went
        through ``after_success``). ``accepted`` False: it was refused, the attempt's
        lease lost while it ran (it was paused or cut off past its lease and the task
        delivered again, or cancelled): its result is discarded and the worker logs it
        as ``lease_lost``. False too when a stopping worker gave up writing it (the
        store away past its retries): the lease lapses and the task runs again. Count
        outcomes here rather than in ``after_success``, which runs before the store has
        answered.

        A plain method, not a coroutine (an ``async def`` one is refused when added):
        the worker's writer calls it for each success of a batch as the batch's answer
        comes back, so it must be quick (no I/O). It runs in the writer, not in the
        task's context. An exception here is logged."""

    async def on_failure(self, task: Task, exc: BaseException, *, will_retry: bool) -> None:
        """The attempt did not succeed: it raised ``exc`` (a timeout is a
        :class:`omniq.TaskTimeoutError`; a return value that does not encode, a
        ``SerializationError``), its process-pool child died
        (``PoolBrokenError``), or it was stopped (``asyncio.CancelledError``: its lease
        was lost or the worker stops; the task runs again). ``will_retry`` says whether
        the task runs again. Every ``before_run`` is followed by exactly one
        ``after_success`` or ``on_failure``, so a span started there always ends. An
        exception here is logged and does not change the outcome.

        Called before the store is asked to write the retry or the dead letter, so it
        does not know whether this attempt's failure stands: count failures in
        ``after_failure_completion`` instead."""

    def after_failure_completion(
        self, task: Task, exc: BaseException, *, will_retry: bool, accepted: bool
    ) -> None:
        """The store answered the retry or the dead letter of an attempt that failed (one
        that went through ``on_failure``, with the same ``exc`` and ``will_retry``).
        ``accepted`` False: refused, the attempt's lease was lost while it ran (paused or
        cut off past it and the task delivered again, or cancelled): its failure decides
        nothing (the task is another attempt's) and the worker logs it as
        ``lease_lost``. False too when a stopping worker gave up writing it (the store
        away past its retries): the lease lapses and the task runs again. A stopped
        attempt (``asyncio.CancelledError``) writes nothing and is not told here.

        A plain method, not a coroutine (an ``async def`` one is refused when added), for
        the reasons of ``after_completion``: quick, no I/O, in the writer, not in the
        task's context. An exception here is logged."""


#: The middleware methods the worker's writer calls without awaiting.
_PLAIN = ("after_completion", "after_failure_completion")

_Call = Callable[..., Awaitable[None]]


def _overridden(middleware: Sequence[Middleware], name: str) -> list[_Call]:
    base = getattr(Middleware, name)
    return [getattr(m, name) for m in middleware if getattr(type(m), name, base) is not base]


class MiddlewareChain:
    """The middleware of one app, resolved per point (see the module doc)."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware: list[Middleware] = []
        self._enqueue: list[_Call] = []
        self._run: list[_Call] = []
        self._success: list[_Call] = []
        self._failure: list[_Call] = []
        self._completion: list[Callable[..., Any]] = []
        self._failure_completion: list[Callable[..., Any]] = []
        #: Whether any middleware acts before enqueue (else the app skips the chain): a
        #: plain attribute, kept by :meth:`add`, read on every ``delay()``.
        self.enqueues = False
        #: Whether any middleware overrides ``after_completion`` (read by the writer).
        self.completes = False
        #: Whether any middleware overrides ``after_failure_completion`` (the writer's).
        self.fails = False
        for m in middleware:
            self.add(m)

    def add(self, middleware: Middleware) -> None:
        if not isinstance(middleware, Middleware):
            raise TypeError(
                f"middleware must be an omniq.middleware.Middleware instance, got {middleware!r}"
            )
        for name in _PLAIN:
            if inspect.iscoroutinefunction(getattr(middleware, name, None)):
                # (the writer calls it without awaiting: a coroutine would never run)
                raise TypeError(
                    f"{type(middleware).__name__}.{name} must be a plain method, not "
                    f"async: the worker's writer calls it as each batch's answer comes back"
                )
        self.middleware.append(middleware)
        self._enqueue = _overridden(self.middleware, "before_enqueue")
        self.enqueues = bool(self._enqueue)
        self._run = _overridden(self.middleware, "before_run")
        self._success = _overridden(self.middleware, "after_success")[::-1]
        self._failure = _overridden(self.middleware, "on_failure")[::-1]
        self._completion = _overridden(self.middleware, "after_completion")[::-1]
        self.completes = bool(self._completion)
        self._failure_completion = _overridden(self.middleware, "after_failure_completion")[::-1]
        self.fails = bool(self._failure_completion)

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def __len__(self) -> int:
        return len(self.middleware)

    async def before_enqueue(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            # Tasks of one enqueue_many share their template's headers: give each its own.
            task.headers = dict(task.headers)
            for call in self._enqueue:
                await call(task)

    def before_enqueue_one(self, task: Task) -> Awaitable[None]:
        """:meth:`before_enqueue` of one task (a ``delay()``'s): with one middleware acting
        there, its own coroutine, without the chain's around it (~2,500 instructions)."""
        task.headers = dict(task.headers)  # (the template's, shared: see before_enqueue)
        calls = self._enqueue
        return calls[0](task) if len(calls) == 1 else self._each_before_enqueue(task)

    async def _each_before_enqueue(self, task: Task) -> None:
        for call in self._enqueue:
            await call(task)

    async def before_run(self, task: Task) -> None:
        for call in self._run:
            await call(task)

    async def after_success(self, task: Task, value: Any) -> None:
        for call in self._success:
            try:
                await call(task, value)
            except Exception:
                log.exception("middleware %r failed in after_success of task %s", call, task.id)

    def after_completion(self, task: Task, accepted: bool) -> None:
        for call in self._completion:
            try:
                call(task, accepted=accepted)
            except Exception:
                log.exception("middleware %r failed in after_completion of task %s", call, task.id)

    async def on_failure(self, task: Task, exc: BaseException, will_retry: bool) -> None:
        for call in self._failure:
            try:
                await call(task, exc, will_retry=will_retry)
            except Exception:
                log.exception("middleware %r failed in on_failure of task %s", call, task.id)

    def after_failure_completion(
        self, task: Task, exc: BaseException, will_retry: bool, accepted: bool
    ) -> None:
        for call in self._failure_completion:
            try:
                call(task, exc, will_retry=will_retry, accepted=accepted)
            except Exception:
                log.exception(
                    "middleware %r failed in after_failure_completion of task %s", call, task.id
                )


def plugin_middleware(app: AsyncOmniQ) -> list[Middleware]:
    """The middleware plugins contribute to ``app`` (the ``omniq_middleware`` hook), in
    plugin order. A plugin that fails or returns something else is a :class:`PluginError`:
    an app silently missing its tracing or metrics would be worse than one that does
    not start."""
    found: list[Middleware] = []
    for plugin, result in registry.call_hook_each("omniq_middleware", app=app):
        if isinstance(result, BaseException):
            raise PluginError(f"plugin {plugin!r} failed in omniq_middleware: {result}") from result
        items = [] if result is None else [result] if isinstance(result, Middleware) else result
        for m in items:
            if not isinstance(m, Middleware):
                raise PluginError(
                    f"plugin {plugin!r} returned {m!r} from omniq_middleware; "
                    f"expected omniq.middleware.Middleware instances"
                )
            found.append(m)
    return found
