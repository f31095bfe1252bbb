"""Stored records that cannot be read: what every backend returns instead of failing.

A record edited by hand, cut short by a disk fault or written by a bug must never make a
read fail for the whole store: one bad task would stop ``reserve`` for every worker (its
batch stays leased and lapses) or stop maintenance. So a backend decodes what it stored
through :func:`decode_each` (a batch) or :func:`stand_in` (one record), and a task record
that does not decode becomes a stand-in: its id, and the queue, name, state and lease
where the store keeps them outside the record, an empty payload and an ``error`` of type
:data:`CORRUPT_TASK` naming the record and what is wrong. The worker dead-letters it
with that error (see ``BaseTaskQueue.reserve``); every other read shows it as it is.
A schedule that does not decode is skipped (:func:`schedule_or_none`); a result reads
as failed, for its task alone (:func:`unreadable_result`); an event record is left out
of a query (:func:`decode_or_skip`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .models import (
    ErrorInfo,
    Schedule,
    Task,
    TaskResult,
    TaskState,
    result_decoder,
    schedule_decoder,
)

__all__ = [
    "CORRUPT_RESULT",
    "CORRUPT_TASK",
    "decode_each",
    "decode_or_skip",
    "is_stand_in",
    "result_or_stand_in",
    "schedule_or_none",
    "stand_in",
    "unreadable_result",
]

log = logging.getLogger("omniq.records")
R = TypeVar("R")
T = TypeVar("T")

#: ``ErrorInfo.type`` of a stand-in's error.
CORRUPT_TASK = "CorruptTaskRecord"
#: ``ErrorInfo.type`` of the error of a result that cannot be read.
CORRUPT_RESULT = "CorruptResultRecord"


def stand_in(
    task_id: str,
    problem: BaseException | str,
    where: str,
    *,
    name: Any = "",
    queue: Any = "default",
    state: Any = None,
    attempts: Any = 0,
    lease_owner: Any = None,
    lease_token: Any = None,
    lease_deadline: Any = None,
) -> Task:
    """The task that stands for the undecodable record of ``task_id`` in ``where`` (e.g.
    ``"omniq_tasks"``, ``"the tasks bucket"``). The other fields are what the store has
    outside the record, as stored: each is checked here, and dropped if it is bad too."""
    message = (
        f"the record of task {task_id!r} in {where} cannot be decoded "
        f"({type(problem).__name__ + ': ' if isinstance(problem, BaseException) else ''}"
        f"{problem}); dead-lettered unread"
    )
    log.warning("%s", message)
    token = _text(lease_token)
    try:
        task_state = TaskState(_text(state))
    except ValueError:
        task_state = TaskState.RUNNING if token is not None else TaskState.PENDING
    return Task(
        id=task_id,
        name=_text(name) or "",
        queue=_text(queue) or "default",
        state=task_state,
        attempts=_number(int, attempts),
        lease_owner=_text(lease_owner),
        lease_token=token,
        lease_deadline=_number(float, lease_deadline) or None,
        error=ErrorInfo(type=CORRUPT_TASK, message=message),
    )


def is_stand_in(task: Task) -> bool:
    """Whether ``task`` is a stand-in (what the worker dead-letters unread)."""
    return not task.payload and task.error is not None and task.error.type == CORRUPT_TASK


def decode_each(
    rows: Sequence[R], decode: Callable[[R], Task], rescue: Callable[[R, Exception], Task]
) -> list[Task]:
    """``decode`` each row; a row that raises becomes ``rescue(row, error)`` (a
    :func:`stand_in`). One ``try`` around the whole batch: a healthy batch costs nothing
    more; only a batch with a bad row is decoded again, row by row."""
    try:
        return [decode(row) for row in rows]
    except Exception:
        out = []
        for row in rows:
            try:
                out.append(decode(row))
            except Exception as exc:
                out.append(rescue(row, exc))
        return out


def schedule_or_none(schedule_id: Any, data: bytes, where: str) -> Schedule | None:
    """The stored schedule, or None (logged) when its record does not decode: reads skip
    it, so one bad schedule never stops the others from firing, and declaring it again
    (``app.schedule``) writes a good record over it."""
    try:
        return schedule_decoder.decode(data)
    except Exception as exc:
        name = _text(schedule_id)
        log.warning(
            "the record of schedule %r in %s cannot be decoded (%s: %s); skipped",
            name,
            where,
            type(exc).__name__,
            exc,
        )
        return None


def unreadable_result(task_id: str, problem: BaseException | str, where: str) -> TaskResult:
    """What a result store returns for a result record that does not decode: a failed
    result whose error says so (``get_result`` raises it for that task alone)."""
    message = (
        f"the result of task {task_id!r} in {where} cannot be decoded "
        f"({type(problem).__name__ + ': ' if isinstance(problem, BaseException) else ''}"
        f"{problem})"
    )
    log.warning("%s", message)
    return TaskResult(
        task_id=task_id,
        state=TaskState.FAILED,
        error=ErrorInfo(type=CORRUPT_RESULT, message=message),
    )


def result_or_stand_in(task_id: str, data: Any, where: str) -> TaskResult:
    """The stored result (msgpack), or :func:`unreadable_result` when it does not decode."""
    try:
        return result_decoder.decode(data)
    except Exception as exc:
        return unreadable_result(task_id, exc, where)


def decode_or_skip(decode: Callable[[R], T], data: R, where: str, label: Any) -> T | None:
    """``decode(data)``, or None (logged) when the record ``label`` in ``where`` does not
    decode: a read of many records (an event query) leaves it out and goes on."""
    try:
        return decode(data)
    except Exception as exc:
        log.warning(
            "record %r in %s cannot be decoded (%s: %s); left out",
            _text(label),
            where,
            type(exc).__name__,
            exc,
        )
        return None


def _number(kind: type[int] | type[float], value: Any) -> Any:
    try:
        return kind(value or 0)
    except (TypeError, ValueError):
        return kind(0)


def _text(value: Any) -> str | None:
    if value is None or value is False or value == b"" or value == "":
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode(errors="replace")
    return str(value)
