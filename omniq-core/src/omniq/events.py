"""Building and writing task events: what the app (enqueue, cancel, schedules) and the
worker (every step of a task's life) record in the event storage.

Both use these functions with the stores they hold, so neither reaches into the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .models import EventType, Task, TaskEvent, TaskState, new_id, new_ids, now

if TYPE_CHECKING:
    from .interfaces import BaseEventStorage

__all__ = ["build_event", "enqueued_events", "event_of", "write_events"]


def build_event(
    task: Task,
    type: EventType,
    worker_id: str | None = None,
    at: float | None = None,
    **detail: Any,
) -> TaskEvent:
    """One event of ``task``; ``detail`` carries what the event type reports."""
    return event_of(task, type, worker_id, {"name": task.name, **detail}, at)


def event_of(
    task: Task,
    type: EventType,
    worker_id: str | None,
    detail: dict[str, Any],
    at: float | None = None,
) -> TaskEvent:
    """:func:`build_event` with its detail made by the caller (the task's ``name`` first,
    as there): the worker's two events of every task, where the keyword arguments' dicts
    (the caller's, build_event's and the merged one) cost ~350 ns an event."""
    return TaskEvent(
        id=new_id(),
        task_id=task.id,
        queue=task.queue,
        type=type,
        timestamp=at if at is not None else now(),
        worker_id=worker_id,
        detail=detail,
    )


async def write_events(event_storage: BaseEventStorage | None, events: Sequence[TaskEvent]) -> None:
    """Append ``events``; ``event_storage`` is None when events are switched off."""
    if events and event_storage is not None:
        await event_storage.append_many(events)


def enqueued_events(tasks: list[Task], at: float) -> list[TaskEvent]:
    """The ``enqueued`` event of each task."""
    enqueued = EventType.ENQUEUED
    if len(tasks) == 1:  # a delay()'s
        t = tasks[0]
        return [
            TaskEvent(
                id=new_id(),
                task_id=t.id,
                queue=t.queue,
                type=enqueued,
                timestamp=at,
                # (the member's attribute: ``.value`` is a Python-level property)
                detail={"name": t.name, "state": t.state._value_},
            )
        ]
    # One detail dict per name and state, shared by the events that say the same: a
    # bulk's events would otherwise make a tracked dict each and set off collections
    # (nothing changes an event's detail in place).
    details: dict[tuple[str, TaskState], dict[str, Any]] = {}
    events = []
    for t, event_id in zip(tasks, new_ids(len(tasks)), strict=True):
        detail = details.get((t.name, t.state))
        if detail is None:
            detail = details[t.name, t.state] = {"name": t.name, "state": t.state.value}
        events.append(
            TaskEvent(
                id=event_id, task_id=t.id, queue=t.queue, type=enqueued, timestamp=at, detail=detail
            )
        )
    return events
