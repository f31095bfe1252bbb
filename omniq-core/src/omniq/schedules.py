"""Firing due schedules: every worker calls it in its maintenance loop, and
``AsyncOmniQ.run_due_schedules`` exposes it to applications that fire schedules
themselves."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from .errors import SerializationError
from .events import build_event, write_events
from .interfaces import Capability
from .models import EventType, Task, TaskState
from .serialization import binding

if TYPE_CHECKING:
    from .interfaces import BaseEventStorage, BaseTaskQueue
    from .middleware import MiddlewareChain
    from .serialization import Serializer

log = logging.getLogger("omniq.schedules")

__all__ = ["fire_due_schedules"]


async def fire_due_schedules(
    task_queue: BaseTaskQueue,
    event_storage: BaseEventStorage | None,
    serializer: Serializer,
    middleware: MiddlewareChain | None = None,
) -> list[Task]:
    """Claim due firings and enqueue their tasks (the claim's compare-and-set and the
    deterministic task ids make a firing enqueue once however many workers call this).
    ``event_storage`` is None when events are switched off. A signed template is signed
    for its own id; each firing is re-signed for the firing's id (the signature binds a
    call to its task). Each firing is an enqueue, so it passes the app's ``middleware``
    (``before_enqueue``)."""
    if Capability.SCHEDULES not in task_queue.capabilities:
        return []
    at = await task_queue.now()
    claimed = await task_queue.claim_due_schedules(at)
    tasks = []
    for sched, times in claimed:
        for t in times:
            tmpl = sched.template
            ttl = (tmpl.expires_at - tmpl.created_at) if tmpl.expires_at else None
            task_id = sched.firing_task_id(t)
            try:
                payload = serializer.rebind(
                    tmpl.payload,
                    binding(tmpl.name, tmpl.queue, tmpl.id),
                    binding(tmpl.name, tmpl.queue, task_id),
                    origin=f"schedule {sched.id}",
                )
            except SerializationError as exc:  # fires as is: the worker dead-letters it
                log.warning(
                    "schedule %s: its template cannot be signed for %s: %s", sched.id, task_id, exc
                )
                payload = tmpl.payload
            tasks.append(
                msgspec.structs.replace(
                    tmpl,
                    id=task_id,
                    payload=payload,
                    created_at=at,
                    eta=None,
                    schedule_id=sched.id,
                    expires_at=(at + ttl) if ttl else None,
                    state=TaskState.PENDING,
                )
            )
    if not tasks:
        return []
    if middleware is not None and middleware.enqueues:
        await middleware.before_enqueue(tasks)
    stored = await task_queue.enqueue_many(tasks)
    await write_events(
        event_storage,
        [build_event(t, EventType.SCHEDULED, at=at, schedule=t.schedule_id) for t in stored],
    )
    return stored
