"""Task-queue tests for the live-worker registry behind ``omniq workers`` and
``omniq health``: register, list, expiry of a worker that stopped heartbeating, and
unregister."""

from __future__ import annotations

from typing import Any

from ..interfaces import BaseTaskQueue, Capability
from ..models import WorkerInfo, new_id
from .base import open_stores
from .capabilities import requires
from .polling import SHORT, eventually, wait_past

__all__ = ["WorkerRegistryTests", "make_worker"]

#: Long enough never to lapse during a test.
LONG = 600.0


def make_worker(**overrides: Any) -> WorkerInfo:
    """A worker with every field set, so a round trip checks them all."""
    fields: dict[str, Any] = {
        "id": f"host-1:{new_id()}",
        "host": "host-1",
        "pid": 4242,
        "pool": "thread",
        "concurrency": 8,
        "queues": ("default", "mail.high"),
        "started_at": 1_700_000_000.5,
        "heartbeat_at": 1_700_000_030.25,
        "in_flight": 3,
        "version": "1.2.3",
    }
    fields.update(overrides)
    return WorkerInfo(**fields)


def _without_expiry(info: WorkerInfo) -> WorkerInfo:
    return WorkerInfo(**{f: getattr(info, f) for f in info.__struct_fields__ if f != "expires_at"})


class WorkerRegistryTests:
    """The worker registry (mixed into :class:`TaskQueueContract`)."""

    async def test_register_and_list_workers(self, task_queue: BaseTaskQueue) -> None:
        before = await task_queue.now()
        a, b = make_worker(id="w-b"), make_worker(id="w-a", queues=("other",), in_flight=0)
        stored = await task_queue.register_worker(a, LONG)
        after = await task_queue.now()
        assert _without_expiry(stored) == a, "register_worker returns the info as given"
        assert before + LONG <= stored.expires_at <= after + LONG, (
            f"expires_at should be now() + ttl by the store's clock, got {stored.expires_at}"
        )
        await task_queue.register_worker(b, LONG)
        listed = await task_queue.list_workers()
        assert [w.id for w in listed] == ["w-a", "w-b"], "workers are listed by id"
        assert [_without_expiry(w) for w in listed] == [b, a], "every field round-trips"
        assert all(w.expires_at > after for w in listed)

    async def test_register_again_replaces_the_entry(self, task_queue: BaseTaskQueue) -> None:
        first = await task_queue.register_worker(make_worker(in_flight=1), LONG)
        beat = make_worker(id=first.id, heartbeat_at=first.heartbeat_at + 5, in_flight=7)
        await task_queue.register_worker(beat, LONG)
        listed = await task_queue.list_workers()
        assert [_without_expiry(w) for w in listed] == [beat], "a heartbeat replaces, never adds"

    async def test_worker_that_stops_heartbeating_expires(self, task_queue: BaseTaskQueue) -> None:
        alive = await task_queue.register_worker(make_worker(id="w-alive"), LONG)
        gone = await task_queue.register_worker(make_worker(id="w-gone"), SHORT)
        assert {w.id for w in await task_queue.list_workers()} == {alive.id, gone.id}
        await wait_past(task_queue, gone.expires_at)

        async def dropped() -> bool:
            return [w.id for w in await task_queue.list_workers()] == [alive.id]

        await eventually(dropped, "a worker whose ttl passed is no longer listed")

    async def test_unregister_worker(self, task_queue: BaseTaskQueue) -> None:
        info = await task_queue.register_worker(make_worker(), LONG)
        assert await task_queue.unregister_worker(info.id) is True
        assert await task_queue.list_workers() == []
        assert await task_queue.unregister_worker(info.id) is False
        assert await task_queue.unregister_worker("no-such-worker") is False

    async def test_workers_are_seen_by_every_instance(self, task_queue_ref: Any) -> None:
        """Workers on other hosts register through their own connections."""
        async with open_stores("task_queue", task_queue_ref, 2) as (one, two):
            requires(one, Capability.CROSS_PROCESS)
            info = await one.register_worker(make_worker(), LONG)
            assert [w.id for w in await two.list_workers()] == [info.id]
            assert await two.unregister_worker(info.id) is True
            assert await one.list_workers() == []
