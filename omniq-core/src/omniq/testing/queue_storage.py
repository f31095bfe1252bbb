"""Task-queue tests for storing and administering tasks: enqueue, get, list, stats,
purge, cancel and the TTL sweep (``cleanup``)."""

from __future__ import annotations

import msgspec
import pytest

from ..errors import TaskNotFoundError
from ..interfaces import BaseTaskQueue, Capability
from ..models import TERMINAL_STATES, Task, TaskState
from .actions import LONG, TOLERANCE, assert_fields, reserve_ids, reserve_one, reserved
from .capabilities import requires
from .factories import BINARY_PAYLOAD, make_error, make_schedule, make_task
from .polling import SHORT, eventually, wait_past

__all__ = ["StorageTests"]


def replace(task: Task, **changes: object) -> Task:
    return msgspec.structs.replace(task, **changes)


class StorageTests:
    """Enqueue, lookup and administration (mixed into :class:`TaskQueueContract`)."""

    # -- enqueue ---------------------------------------------------------------------

    async def test_enqueue_round_trips_every_field(self, task_queue: BaseTaskQueue) -> None:
        now = await task_queue.now()
        task = make_task(
            name="pkg.module:function",
            queue="q-roundtrip",
            payload=BINARY_PAYLOAD,
            priority=3,
            created_at=now - 10.5,
            expires_at=now + 3600.25,
            timeout=12.5,
            max_retries=3,
            retry_backoff=2.0,
            retry_backoff_max=30.0,
            max_deliveries=4,
            schedule_id="sched-1",
            result_ttl=100.0,
            dead_ttl=200.0,
        )
        stored = await task_queue.enqueue(task)
        assert stored.state is TaskState.PENDING
        assert_fields(stored, task)
        fetched = await task_queue.get(task.id)
        assert fetched is not None, "get() did not find the task just enqueued"
        assert_fields(fetched, task)

    async def test_headers_round_trip(self, task_queue: BaseTaskQueue) -> None:
        """A task's headers (middleware's trace context) reach the worker unchanged, and
        survive a retry; a task without headers reads back with none."""
        headers = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "x-tenant": "été/ß",
        }
        task = make_task(queue="q-headers", headers=headers)
        plain = make_task(queue="q-headers")
        bulk = make_task(queue="q-headers", headers={"k": "v"})
        await task_queue.enqueue(task)
        await task_queue.enqueue(plain)
        await task_queue.enqueue_many([bulk])
        for t, want in ((task, headers), (plain, {}), (bulk, {"k": "v"})):
            fetched = await task_queue.get(t.id)
            assert fetched is not None and fetched.headers == want, (
                f"get() returned headers {fetched and fetched.headers!r}, expected {want!r}"
            )
        got = {t.id: t for t in await task_queue.reserve(["q-headers"], "worker-1", LONG, limit=3)}
        assert {i: t.headers for i, t in got.items()} == {
            task.id: headers,
            plain.id: {},
            bulk.id: {"k": "v"},
        }, "reserve() lost headers"
        first = got[task.id]
        assert await task_queue.retry(first.id, first.lease_token or "", 0.0, make_error())
        again = await reserve_one(task_queue, ["q-headers"])
        assert again.id == task.id and again.headers == headers, "a retry lost the headers"

    async def test_enqueue_sets_created_at_when_zero(self, task_queue: BaseTaskQueue) -> None:
        before = await task_queue.now()
        stored = await task_queue.enqueue(make_task(created_at=0.0))
        after = await task_queue.now()
        fetched = await task_queue.get(stored.id)
        for t in (stored, fetched):
            assert t is not None
            assert before - TOLERANCE <= t.created_at <= after + TOLERANCE, (
                f"created_at should be set by the backend when 0; got {t.created_at}, "
                f"clock {before}..{after}"
            )

    async def test_enqueue_decides_the_state_itself(self, task_queue: BaseTaskQueue) -> None:
        """The state is decided at enqueue from eta and dependencies, not taken as given."""
        stored = await task_queue.enqueue(make_task(state=TaskState.SUCCEEDED))
        assert stored.state is TaskState.PENDING
        assert await reserve_ids(task_queue, ["default"]) == [stored.id]

    async def test_enqueue_is_idempotent_by_id(self, task_queue: BaseTaskQueue) -> None:
        first = await task_queue.enqueue(make_task(payload=b"first"))
        again = await task_queue.enqueue(
            replace(
                first,
                payload=b"second",
                queue="other",
                priority=7,
                created_at=0.0,
                state=TaskState.PENDING,
            )
        )
        assert_fields(again, first)
        assert len(await task_queue.list()) == 1, "a second enqueue of the same id added a task"
        running = await reserve_one(task_queue)
        third = await task_queue.enqueue(first)
        assert third.state is TaskState.RUNNING and third.lease_token == running.lease_token, (
            "enqueue of an existing id must return the stored task unchanged (here: running)"
        )
        assert await task_queue.reserve(["default", "other"], "w", LONG) == []

    async def test_enqueue_many_keeps_order(self, task_queue: BaseTaskQueue) -> None:
        existing = await task_queue.enqueue(make_task(payload=b"existing"))
        batch = [make_task(payload=bytes([i])) for i in range(5)]
        batch.insert(2, replace(existing, payload=b"changed"))
        stored = await task_queue.enqueue_many(batch)
        assert [t.id for t in stored] == [t.id for t in batch], "enqueue_many must answer in order"
        assert stored[2].payload == b"existing", "enqueue_many must be idempotent by id too"
        assert all(t.state is TaskState.PENDING for t in stored)
        assert len(await task_queue.list()) == 6

    async def test_enqueue_with_past_eta_is_pending(self, task_queue: BaseTaskQueue) -> None:
        now = await task_queue.now()
        stored = await task_queue.enqueue(make_task(eta=now - 5))
        assert stored.state is TaskState.PENDING
        assert await reserve_ids(task_queue, ["default"]) == [stored.id]

    async def test_enqueue_with_future_eta_is_scheduled(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DELAYED)
        now = await task_queue.now()
        stored = await task_queue.enqueue(make_task(eta=now + 3600))
        assert stored.state is TaskState.SCHEDULED
        fetched = await task_queue.get(stored.id)
        assert fetched is not None and fetched.state is TaskState.SCHEDULED

    async def test_get_unknown_id_is_none(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.get("no-such-task") is None

    async def test_names_with_separator_characters_stay_apart(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """Queue names and ids may hold ``: . - _`` (and firing ids ``@``): a backend
        building keys, subjects or paths from them must not let two names collide."""
        queues = ["a", "a:b", "a.b", "a-b", "a_b", "b"]
        ids = {q: f"id:{q}.x@1700000000000" for q in queues}
        await task_queue.enqueue_many([make_task(id=ids[q], queue=q) for q in queues])
        for q in queues:
            fetched = await task_queue.get(ids[q])
            assert fetched is not None and fetched.queue == q, (
                f"task in queue {q!r} not found by id"
            )
            assert [t.id for t in await task_queue.list(queue=q)] == [ids[q]], f"list(queue={q!r})"
        stats = await task_queue.stats()
        for q in queues:
            assert stats.get(q, {}).get(TaskState.PENDING) == 1, f"stats for queue {q!r}: {stats}"
        for q in queues:
            assert await reserve_ids(task_queue, [q]) == [ids[q]], f"reserve([{q!r}])"

    # -- list / stats / purge --------------------------------------------------------------

    async def test_list_filters_by_queue_and_state_oldest_first(
        self, task_queue: BaseTaskQueue
    ) -> None:
        tasks = [make_task(queue="q1" if i % 2 else "q2") for i in range(8)]
        for t in tasks:
            await task_queue.enqueue(t)
        running = await reserve_one(task_queue, ["q1"])
        q1 = [t.id for t in tasks if t.queue == "q1"]
        assert running.id == q1[0]
        assert [t.id for t in await task_queue.list()] == [t.id for t in tasks]
        assert [t.id for t in await task_queue.list(queue="q1")] == q1
        assert [t.id for t in await task_queue.list(queue="q1", states=[TaskState.PENDING])] == q1[
            1:
        ]
        assert [t.id for t in await task_queue.list(states={TaskState.RUNNING})] == [running.id]
        assert [t.id for t in await task_queue.list(limit=3)] == [t.id for t in tasks[:3]]
        assert await task_queue.list(queue="nowhere") == []

    async def test_stats_counts_per_queue_and_state(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many(
            [make_task(queue="s1") for _ in range(3)] + [make_task(queue="s2")]
        )
        await reserve_one(task_queue, ["s1"])
        stats = await task_queue.stats()
        nonzero = {q: {s: n for s, n in by.items() if n} for q, by in stats.items()}
        nonzero = {q: by for q, by in nonzero.items() if by}
        assert nonzero == {
            "s1": {TaskState.PENDING: 2, TaskState.RUNNING: 1},
            "s2": {TaskState.PENDING: 1},
        }

    async def test_purge_by_queue_and_state(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many(
            [make_task(queue="p1") for _ in range(3)] + [make_task(queue="p2") for _ in range(2)]
        )
        running = await reserve_one(task_queue, ["p1"])
        assert await task_queue.purge(queue="p1", states=[TaskState.PENDING]) == 2
        assert [t.id for t in await task_queue.list(queue="p1")] == [running.id]
        assert await task_queue.purge(queue="p2") == 2
        assert await task_queue.purge(queue="p2") == 0
        assert await task_queue.purge(states=[TaskState.RUNNING]) == 1
        assert await task_queue.list() == []

    async def test_purge_without_states_keeps_running_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """A running task's worker still holds it: purge deletes it only when asked by
        name (``omniq purge`` with no ``--state`` must not pull work from under workers)."""
        tasks = [await task_queue.enqueue(make_task()) for _ in range(3)]
        running = await reserve_one(task_queue, ["default"])
        await task_queue.cancel(tasks[2].id)
        assert await task_queue.purge() == 2, "purge() deletes every state but running"
        assert [t.id for t in await task_queue.list()] == [running.id]
        assert await task_queue.purge(queue="default") == 0
        assert await task_queue.purge(states=[TaskState.RUNNING]) == 1
        assert await task_queue.list() == []

    async def test_purge_leaves_schedules_alone(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        schedule = await task_queue.add_schedule(make_schedule())
        await task_queue.enqueue(make_task())
        assert await task_queue.purge() == 1
        assert await task_queue.get_schedule(schedule.id) is not None

    # -- cancel -------------------------------------------------------------------------

    async def test_cancel_pending_task(self, task_queue: BaseTaskQueue) -> None:
        task = await task_queue.enqueue(make_task())
        assert await task_queue.cancel(task.id) is True
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.CANCELLED
        assert fetched.finished_at is not None, (
            "a cancelled task needs finished_at (cleanup uses it)"
        )
        assert await task_queue.reserve(["default"], "w", LONG) == []

    async def test_cancel_running_task_drops_its_lease(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        assert await task_queue.cancel(task.id) is True
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.state is TaskState.CANCELLED
        assert await task_queue.heartbeat([(task.id, task.lease_token or "")], LONG) == [], (
            "the heartbeat after a cancel must report the lease lost"
        )
        assert (
            await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED) is False
        )
        assert (await task_queue.get(task.id)).state is TaskState.CANCELLED  # type: ignore[union-attr]

    async def test_cancel_terminal_task_returns_false(self, task_queue: BaseTaskQueue) -> None:
        task = await reserved(task_queue)
        assert await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED)
        before = await task_queue.get(task.id)
        assert await task_queue.cancel(task.id) is False
        assert await task_queue.get(task.id) == before

    async def test_cancel_unknown_task_raises(self, task_queue: BaseTaskQueue) -> None:
        with pytest.raises(TaskNotFoundError):
            await task_queue.cancel("no-such-task")

    # -- cleanup (TTL) -----------------------------------------------------------------------

    async def test_cleanup_expires_tasks_not_started_in_time(
        self, task_queue: BaseTaskQueue
    ) -> None:
        now = await task_queue.now()
        late = await task_queue.enqueue(make_task(expires_at=now - 1))
        fresh = await task_queue.enqueue(make_task(expires_at=now + 3600))
        assert await reserve_ids(task_queue, ["default"]) == [fresh.id], (
            "an expired task is never reserved"
        )
        expired = await task_queue.cleanup()
        assert [t.id for t in expired] == [late.id], "cleanup returns the tasks it expired"
        assert expired[0].state is TaskState.EXPIRED
        fetched = await task_queue.get(late.id)
        assert fetched is not None and fetched.state is TaskState.EXPIRED
        assert fetched.finished_at is not None, (
            "an expired task needs finished_at (cleanup uses it)"
        )
        assert (await task_queue.get(fresh.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        assert await task_queue.cleanup() == [], "a task expires once"

    async def test_cleanup_expires_scheduled_and_retrying_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DELAYED)
        now = await task_queue.now()
        running = await reserved(task_queue, expires_at=now + SHORT)
        scheduled = await task_queue.enqueue(make_task(eta=now + 3600, expires_at=now + SHORT))
        assert await task_queue.retry(
            running.id, running.lease_token or "", now + 3600, make_error()
        )
        await wait_past(task_queue, now + SHORT)
        expired = await task_queue.cleanup()
        assert sorted(t.id for t in expired) == sorted([scheduled.id, running.id])
        assert all(t.state is TaskState.EXPIRED for t in expired)

    async def test_cleanup_leaves_running_tasks_alone(self, task_queue: BaseTaskQueue) -> None:
        """Expiry is about tasks *not started* in time: a running task is left to finish."""
        now = await task_queue.now()
        task = await reserved(task_queue, expires_at=now + SHORT)
        await wait_past(task_queue, now + SHORT)
        assert await task_queue.cleanup() == []
        assert (await task_queue.get(task.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        assert await task_queue.complete(task.id, task.lease_token or "", TaskState.SUCCEEDED)

    async def test_cleanup_deletes_finished_tasks_after_retention(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """``result_ttl`` keeps finished tasks, ``dead_ttl`` dead ones (``Task.retention``)."""
        short_done = await reserved(task_queue, result_ttl=SHORT, dead_ttl=3600.0)
        long_dead = await reserved(task_queue, result_ttl=SHORT, dead_ttl=3600.0)
        short_dead = await reserved(task_queue, result_ttl=3600.0, dead_ttl=SHORT)
        long_done = await reserved(task_queue, result_ttl=3600.0, dead_ttl=SHORT)
        for t in (short_done, long_done):
            assert await task_queue.complete(t.id, t.lease_token or "", TaskState.SUCCEEDED)
        for t in (short_dead, long_dead):
            assert await task_queue.dead_letter(t.id, t.lease_token, make_error())
        finished_at = [
            (await task_queue.get(t.id) or t).finished_at for t in (short_done, short_dead)
        ]
        assert None not in finished_at, "complete and dead_letter set finished_at"
        await wait_past(task_queue, max(f or 0.0 for f in finished_at) + SHORT)

        async def deleted() -> bool:
            await task_queue.cleanup()
            return (
                await task_queue.get(short_done.id) is None
                and await task_queue.get(short_dead.id) is None
            )

        await eventually(deleted, "cleanup did not delete finished tasks past their retention")
        assert await task_queue.get(long_done.id) is not None, (
            "deleted a succeeded task within result_ttl"
        )
        assert await task_queue.get(long_dead.id) is not None, "deleted a dead task within dead_ttl"
        states = {t.state for t in await task_queue.list()}
        assert states <= TERMINAL_STATES
