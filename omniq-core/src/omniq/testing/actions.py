"""Steps many task-queue tests share: reserve exactly one, let a lease lapse, compare."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..interfaces import BaseTaskQueue
from ..models import Task
from .factories import make_task
from .polling import eventually, wait_past

__all__ = ["LONG", "TOLERANCE", "assert_fields", "lapse", "reserve_ids", "reserve_one", "reserved"]

#: A lease that never lapses during a test.
LONG = 60.0
#: Slack, in seconds, when comparing a deadline with the store clock read around a call.
TOLERANCE = 1.0
#: Times must round-trip to within this many seconds (engines store micro- or milliseconds).
TIME_PRECISION = 1e-3


async def reserve_one(
    queue: BaseTaskQueue,
    queues: Sequence[str] = ("default",),
    worker: str = "worker-1",
    lease: float = LONG,
) -> Task:
    """Reserve and return exactly one task (failing if reserve returns another count)."""
    got = await queue.reserve(list(queues), worker, lease)
    assert len(got) == 1, (
        f"reserve({list(queues)}, limit=1) should return 1 ready task, got {len(got)}"
    )
    return got[0]


async def reserved(queue: BaseTaskQueue, *, lease: float = LONG, **overrides: Any) -> Task:
    """Enqueue a fresh task (``overrides`` for :func:`make_task`) and reserve it."""
    task = await queue.enqueue(make_task(**overrides))
    got = await reserve_one(queue, [task.queue], lease=lease)
    assert got.id == task.id, "reserve returned a task other than the only one enqueued"
    return got


async def reserve_ids(queue: BaseTaskQueue, queues: Sequence[str], limit: int = 1000) -> list[str]:
    """Ids reserved by one call, in the order reserve returned them."""
    return [t.id for t in await queue.reserve(list(queues), "worker-1", LONG, limit)]


async def lapse(queue: BaseTaskQueue, task: Task) -> Task:
    """Let ``task``'s lease lapse and return it as ``release_expired_leases`` reports it."""
    assert task.lease_deadline is not None
    await wait_past(queue, task.lease_deadline)

    async def released() -> Task | None:
        return next((t for t in await queue.release_expired_leases() if t.id == task.id), None)

    return await eventually(
        released, f"release_expired_leases never returned lapsed task {task.id}"
    )


def assert_fields(actual: Task, expected: Task, skip: Iterable[str] = ()) -> None:
    """Every field equal (times to :data:`TIME_PRECISION`) except those in ``skip``."""
    skipped = set(skip)
    wrong = []
    for name in actual.__struct_fields__:
        if name in skipped:
            continue
        got, want = getattr(actual, name), getattr(expected, name)
        if isinstance(got, float) and isinstance(want, float):
            if abs(got - want) > TIME_PRECISION:
                wrong.append(f"{name}: stored {got!r}, expected {want!r}")
        elif got != want:
            wrong.append(f"{name}: stored {got!r}, expected {want!r}")
    assert not wrong, f"task {expected.id} did not round-trip: " + "; ".join(wrong)
