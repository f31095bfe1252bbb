"""The task a worker is running, as the task's own code sees it.

The worker sets a context variable before it hands a task to the pool: coroutine tasks
and the async pool's threads inherit it from the worker's asyncio task, the thread and
gevent pools copy the context into the call, and the process pool sends it to the child
with the call. Outside a task :func:`current_task` returns None rather than raising, so
library code can ask "am I in a task?" without a try block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

import msgspec

__all__ = [
    "BodyStart",
    "Enter",
    "TaskContext",
    "TaskLogFilter",
    "at_body_start",
    "body_started",
    "body_starting",
    "current_task",
]


class TaskContext(msgspec.Struct, frozen=True, gc=False):
    """What a running task may know about itself (read-only).

    :ivar id: the task id.
    :ivar name: the registered task name.
    :ivar queue: the queue it was reserved from.
    :ivar attempt: this attempt's number, from 1.
    :ivar deadline: when this attempt's ``timeout`` runs out (epoch seconds), or None.
    :ivar enqueued_at: when the task was enqueued (epoch seconds).
    :ivar headers: the headers carried in the task record (see :mod:`omniq.middleware`).
    :ivar started_at: when this attempt's body started (epoch seconds): its duration
        and its ``timeout`` run from here. In the process pool that is once the child
        has loaded the call, so a new child's start-up is not counted.
    """

    id: str
    name: str
    queue: str
    attempt: int
    deadline: float | None
    enqueued_at: float
    headers: dict[str, str] | None = None
    started_at: float | None = None


_current: ContextVar[TaskContext | None] = ContextVar("omniq_current_task", default=None)


def current_task() -> TaskContext | None:
    """The task running in this context (any pool), or None outside a task."""
    return _current.get()


def set_current(context: TaskContext | None) -> None:
    """Set the running task for this context (the worker and the pools' children)."""
    _current.set(context)


def body_started() -> None:
    """Move the running attempt's start (and its deadline with it) to now.

    A pool calls it when the body starts later than the call was handed to the pool:
    the process pool once its child has loaded the call (a new child first starts up
    and imports the task's module). The worker reads the start back for the attempt's
    duration (its log line, events, result) and so do middleware (metrics)."""
    task = _current.get()
    if task is None or task.started_at is None:
        return
    at = time.time()
    shift = at - task.started_at
    if shift > 0:
        deadline = None if task.deadline is None else task.deadline + shift
        _current.set(msgspec.structs.replace(task, started_at=at, deadline=deadline))


#: What a process-pool child enters around the body: a picklable callable (a module-level
#: function, or a ``functools.partial`` of one, of a module the child can import)
#: returning a context manager.
Enter = Callable[[], AbstractContextManager[Any]]
#: A callback of :func:`at_body_start`: called with whether the body runs in a
#: process-pool child, it returns what the child enters around the body, or None.
BodyStart = Callable[[bool], "Enter | None"]

_at_start: ContextVar[tuple[BodyStart, ...]] = ContextVar("omniq_at_body_start", default=())


def at_body_start(callback: BodyStart) -> None:
    """Have ``callback`` called, in the worker and in the attempt's context, when the
    attempt's body starts (for middleware, from ``before_run``).

    The process pool calls it with True once its child has loaded the call (after a new
    child's start-up and the import of the task's module), or just before it sends the
    call to a child that has run the task's function before, and the child enters what
    it returns around the body: so a middleware carries context the body's process
    needs (a trace's span) without the core knowing what it is. Every other pool calls
    it right after ``before_run``, with False (the body runs in the worker's process,
    in the context the middleware set). With no callback nothing more is sent."""
    _at_start.set((*_at_start.get(), callback))


def carries_into_child() -> bool:
    """Whether a callback waits for the running attempt's body start (the process pool
    then sends the child what they return)."""
    return bool(_at_start.get())


def body_starting(in_child: bool) -> list[Enter]:
    """Call the running attempt's :func:`at_body_start` callbacks (once): what the
    child is to enter, in their order."""
    callbacks = _at_start.get()
    if not callbacks:
        return []
    _at_start.set(())
    enters = []
    for callback in callbacks:
        enter = callback(in_child)
        if enter is not None:
            enters.append(enter)
    return enters


def attempt_started(default: float) -> float:
    """When the running attempt's body started (see :func:`body_started`), else
    ``default``."""
    task = _current.get()
    started = None if task is None else task.started_at
    return default if started is None else started


class TaskLogFilter(logging.Filter):
    """Adds ``task_id`` and ``task_name`` to every record (None outside a task).

    Attach it to a handler (``handler.addFilter(TaskLogFilter())``): a filter on a
    handler sees the records of every logger that reaches it, a task's own included. The
    ``omniq worker`` command attaches it to the handler it installs. A record that
    already has a ``task_id`` (one forwarded from a process-pool child) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_id", None) is None:
            task = _current.get()
            record.task_id = task.id if task is not None else None
            record.task_name = task.name if task is not None else None
        return True
