"""Firing due schedules: every worker calls it in its maintenance loop, and
``AsyncOmniQ.run_due_schedules`` exposes it to applications that fire schedules
themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .events import build_event, write_events
from .interfaces import Capability
from .models import EventType, Task, TaskState

if TYPE_CHECKING:
    from .interfaces import BaseEventStorage, BaseTaskQueue

__all__ = ["fire_due_schedules"]


async def fire_due_schedules(task_queue: BaseTaskQueue,
                             event_storage: BaseEventStorage | None) -> list[Task]:
    """Claim due firings and enqueue their tasks (the claim's compare-and-set and the
    deterministic task ids make a firing enqueue once however many workers call this).
    ``event_storage`` is None when events are switched off."""
    if Capability.SCHEDULES not in task_queue.capabilities:
        return []
    at = await task_queue.now()
    claimed = await task_queue.claim_due_schedules(at)
    tasks = []
    for sched, times in claimed:
        for t in times:
            tmpl = sched.template
            ttl = (tmpl.expires_at - tmpl.created_at) if tmpl.expires_at else None
            tasks.append(msgspec.structs.replace(
                tmpl, id=sched.firing_task_id(t), created_at=at, eta=None, schedule_id=sched.id,
                expires_at=(at + ttl) if ttl else None, state=TaskState.PENDING,
            ))
    if not tasks:
        return []
    stored = await task_queue.enqueue_many(tasks)
    await write_events(event_storage, [
        build_event(t, EventType.SCHEDULED, at=at, schedule=t.schedule_id) for t in stored])
    return stored
