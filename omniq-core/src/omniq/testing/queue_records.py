"""Task-queue tests for records that cannot be read: one bad record never stops a queue.

A stored task that does not decode (a disk fault, a hand edit, a buggy writer) must not
make any read fail: reserve hands it out as a stand-in (``BaseTaskQueue.reserve``; see
:mod:`omniq.records`), the other reads show it, and a worker dead-letters it while the
healthy tasks around it run. The suite corrupts a record through a hook the backend's
test class provides, :meth:`RecordTests.corrupt_task`, since only the backend knows
where its bytes are.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from ..interfaces import BaseTaskQueue, Capability
from ..models import Task, TaskState, new_id
from ..records import CORRUPT_TASK
from ..serialization import Serializer, binding
from .actions import LONG
from .base import open_app
from .capabilities import requires
from .factories import make_schedule, make_task

__all__ = ["RecordTests"]

#: How many tasks surround the corrupt one, and which of them is corrupted.
COUNT, BAD = 20, 7
#: A worker run that takes longer than this has stopped on the bad record.
RUN_DEADLINE = 60.0

NO_HOOK = (
    "override corrupt_task in your test class, so the suite can check that one bad record "
    "never stops a queue: make the stored record of task_id undecodable, as a disk fault "
    "would (e.g. overwrite the encoded task with b'\\xc1 not msgpack'), e.g.\n\n"
    "    async def corrupt_task(self, store, task_id):\n"
    "        await store.db.execute('UPDATE tasks SET data = ? WHERE id = ?', b'\\xc1', task_id)\n"
)


class RecordTests:
    """Corrupt records (mixed into :class:`TaskQueueContract`)."""

    async def corrupt_task(self, store: BaseTaskQueue, task_id: str) -> None:
        """Override: make the stored record of ``task_id`` (in ``store``, opened) undecodable."""
        pytest.fail(NO_HOOK)

    async def corrupt_schedule(self, store: BaseTaskQueue, schedule_id: str) -> None:
        """Override: make the stored record of schedule ``schedule_id`` undecodable (a
        store that keeps objects rather than bytes may ``pytest.skip``)."""
        pytest.fail(
            NO_HOOK.replace("corrupt_task", "corrupt_schedule")
            .replace("task_id", "schedule_id")
            .replace("tasks SET", "schedules SET")
        )

    async def _corrupt_among(self, store: BaseTaskQueue) -> tuple[list[str], str]:
        tasks = [make_task() for _ in range(COUNT)]
        await store.enqueue_many(tasks)
        bad = tasks[BAD].id
        await self.corrupt_task(store, bad)
        return [t.id for t in tasks], bad

    async def test_reserve_hands_out_a_stand_in_for_a_corrupt_record(
        self, task_queue: BaseTaskQueue
    ) -> None:
        ids, bad = await self._corrupt_among(task_queue)
        got: dict[str, Task] = {}
        for _ in range(COUNT):
            batch = await task_queue.reserve(["default"], "worker-1", LONG, limit=6)
            if not batch:
                break
            got.update((t.id, t) for t in batch)
        assert set(got) == set(ids), (
            f"reserve in batches should hand out all {COUNT} tasks, the corrupt one as a stand-in; "
            f"missing: {sorted(set(ids) - set(got))}"
        )
        healthy = [got[i] for i in ids if i != bad]
        assert all(t.payload == make_task().payload and t.error is None for t in healthy)
        stand_in = got[bad]
        leased = stand_in.state is TaskState.RUNNING and stand_in.lease_token
        assert stand_in.payload == b"" and leased, (
            f"the stand-in is leased, with an empty payload: {stand_in!r}"
        )
        assert stand_in.error is not None and stand_in.error.type == CORRUPT_TASK, stand_in.error
        assert bad in stand_in.error.message and "cannot be decoded" in stand_in.error.message
        assert await task_queue.dead_letter(bad, stand_in.lease_token, stand_in.error)
        dead = await task_queue.get(bad)
        assert dead is not None and dead.state is TaskState.DEAD
        assert await task_queue.reserve(["default"], "worker-1", LONG, limit=10) == []

    async def test_reads_survive_a_corrupt_record(self, task_queue: BaseTaskQueue) -> None:
        ids, bad = await self._corrupt_among(task_queue)
        got = await task_queue.get(bad)
        assert got is not None and got.id == bad, "get() of a corrupt record returns its stand-in"
        assert got.error is not None and got.error.type == CORRUPT_TASK
        listed = {t.id for t in await task_queue.list(limit=100)}
        assert listed == set(ids), "list() shows the corrupt task (its stand-in) among the others"
        stats = await task_queue.stats()
        counted = sum(stats.get("default", {}).values())
        assert counted == COUNT, f"stats() counts every task: {stats}"
        await task_queue.cleanup()
        await task_queue.release_expired_leases()

    async def test_a_corrupt_schedule_never_stops_the_others(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.SCHEDULES)
        good, bad = make_schedule(), make_schedule()
        await task_queue.add_schedule(good)
        await task_queue.add_schedule(bad)
        await self.corrupt_schedule(task_queue, bad.id)
        assert [s.id for s in await task_queue.list_schedules()] == [good.id], (
            "list_schedules() skips a schedule whose record does not decode"
        )
        assert await task_queue.get_schedule(bad.id) is None
        claimed = await task_queue.claim_due_schedules(await task_queue.now())
        assert [s.id for s, _ in claimed] == [good.id], "the good schedule still fires"
        await task_queue.add_schedule(bad)  # declared again: a good record over the bad one
        repaired = await task_queue.get_schedule(bad.id)
        assert repaired is not None and repaired.id == bad.id

    # -- with a worker -------------------------------------------------------------------

    async def test_a_worker_dead_letters_a_corrupt_task_and_runs_the_rest(
        self, task_queue_ref: Any
    ) -> None:
        async with open_app(task_queue_ref) as app:

            @app.task(name="omniq_conformance.double")
            async def double(x: int) -> int:
                return 2 * x

            refs = await app.enqueue_many(double, [(i,) for i in range(COUNT)])
            bad = refs[BAD].id
            await self.corrupt_task(app.task_queue, bad)
            with anyio.fail_after(RUN_DEADLINE):
                reason = await app.run_worker(concurrency=4, burst=True, poll_interval=0.1)
            assert reason == "burst"
            states = {r.id: (await app.get_task(r.id)).state for r in refs}
            assert [r.id for r in refs if states[r.id] is not TaskState.SUCCEEDED] == [bad], states
            dead = await app.get_task(bad)
            assert dead.state is TaskState.DEAD and dead.error is not None
            assert dead.error.type == CORRUPT_TASK and "cannot be decoded" in dead.error.message

    async def test_a_worker_refuses_a_call_written_past_the_app(self, task_queue_ref: Any) -> None:
        """A signed call copied into a record naming another task, and a payload over the
        limit written straight into the store, are dead-lettered, never run."""
        ran: list[str] = []
        keys = {"secret_key": "omniq-conformance-key", "payload_limit": 4096}
        async with open_app(task_queue_ref, **keys) as app:

            @app.task(name="omniq_conformance.pay")
            async def pay(x: int) -> None:
                ran.append(f"pay {x}")

            @app.task(name="omniq_conformance.wipe")
            async def wipe(x: int) -> None:
                ran.append(f"wipe {x}")

            good = await pay.delay(1)
            signed = (await app.get_task(good.id)).payload
            copied = await app.task_queue.enqueue(
                make_task(name="omniq_conformance.wipe", payload=signed)
            )
            big_id = new_id()
            writer = Serializer(app.serializer.keys, payload_limit=1 << 20)
            pay_name = "omniq_conformance.pay"
            big = writer.dumps_call(["x" * 8000], {}, bind=binding(pay_name, "default", big_id))
            await app.task_queue.enqueue(make_task(id=big_id, name=pay_name, payload=big))
            with anyio.fail_after(RUN_DEADLINE):
                await app.run_worker(concurrency=2, burst=True, poll_interval=0.1)
            assert ran == ["pay 1"], f"only the genuine call may run: {ran}"
            refused = await app.get_task(copied.id)
            assert refused.state is TaskState.DEAD and refused.error is not None
            assert refused.error.type == "SignatureError", refused.error
            assert "signed for another task name, queue or id" in refused.error.message
            too_big = await app.get_task(big_id)
            assert too_big.state is TaskState.DEAD and too_big.error is not None
            assert f"is {len(big)} bytes, over the limit of 4096 bytes" in too_big.error.message
