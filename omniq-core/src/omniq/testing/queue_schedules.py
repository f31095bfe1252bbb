"""Task-queue tests for schedules: storage, pause/resume, claiming each firing once
however many schedulers claim at the same moment, and schedules declared by name through
an app (updated in place, deleted for good, ids independent of ``secret_key``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from ..interfaces import BaseTaskQueue, Capability
from ..models import Schedule
from .base import open_app, open_stores
from .capabilities import requires
from .factories import make_schedule, make_task

__all__ = ["ScheduleTests"]

#: A fixed firing grid, so expected times are exact.
T0 = 1_700_000_000.0


class ScheduleTests:
    """Schedules (mixed into :class:`TaskQueueContract`; needs ``SCHEDULES``)."""

    async def test_add_and_get_schedule_round_trip(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        template = make_task(queue="cron-q", payload=bytes(range(256)), priority=2, max_retries=2)
        cron = make_schedule(
            cron="*/5 * * * *", interval=None, template=template, catch_up=True, last_run=T0 - 300
        )
        every = make_schedule(paused=True)
        zoned = make_schedule(cron="30 2 * * *", interval=None, tz="Europe/Berlin")
        for schedule in (cron, every, zoned):
            assert await task_queue.add_schedule(schedule) == schedule
            assert await task_queue.get_schedule(schedule.id) == schedule
        assert await task_queue.get_schedule("no-such-schedule") is None

    async def test_add_schedule_replaces_by_id(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        first = await task_queue.add_schedule(make_schedule(interval=60.0))
        second = make_schedule(id=first.id, interval=30.0, next_run=T0 + 30)
        await task_queue.add_schedule(second)
        assert await task_queue.get_schedule(first.id) == second
        assert await task_queue.list_schedules() == [second]

    async def test_list_schedules_by_id(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        ids = ["s-b", "s-a", "s-c:1", "s-c.0"]
        for sid in ids:
            await task_queue.add_schedule(make_schedule(id=sid))
        assert [s.id for s in await task_queue.list_schedules()] == sorted(ids)

    async def test_delete_schedule(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        schedule = await task_queue.add_schedule(make_schedule())
        assert await task_queue.delete_schedule(schedule.id) is True
        assert await task_queue.get_schedule(schedule.id) is None
        assert await task_queue.delete_schedule(schedule.id) is False
        assert await task_queue.list_schedules() == []

    async def test_pause_and_resume(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        schedule = await task_queue.add_schedule(make_schedule(next_run=T0))
        assert await task_queue.set_schedule_paused(schedule.id, True) is True
        paused = await task_queue.get_schedule(schedule.id)
        assert paused is not None and paused.paused and paused.next_run == T0
        assert await task_queue.claim_due_schedules(T0 + 1000) == [], (
            "a paused schedule does not fire"
        )
        assert await task_queue.set_schedule_paused(schedule.id, False, next_run=T0 + 2000) is True
        resumed = await task_queue.get_schedule(schedule.id)
        assert resumed is not None and not resumed.paused and resumed.next_run == T0 + 2000
        assert await task_queue.claim_due_schedules(T0 + 1000) == [], (
            "resume does not replay missed firings"
        )
        assert await task_queue.set_schedule_paused("no-such-schedule", True) is False

    async def test_claim_due_schedule_fires_once(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        due = await task_queue.add_schedule(make_schedule(next_run=T0, interval=60.0))
        later = await task_queue.add_schedule(make_schedule(next_run=T0 + 600, interval=60.0))
        claimed = await task_queue.claim_due_schedules(T0 + 90)
        assert claimed == [(due, [T0 + 60])], "without catch_up only the latest missed firing runs"
        stored = await task_queue.get_schedule(due.id)
        assert stored is not None and stored.next_run == T0 + 120 and stored.last_run == T0 + 60
        assert await task_queue.claim_due_schedules(T0 + 90) == [], "a firing is claimed once"
        assert await task_queue.get_schedule(later.id) == later

    async def test_claim_with_catch_up_returns_every_missed_firing(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.SCHEDULES)
        schedule = await task_queue.add_schedule(
            make_schedule(next_run=T0, interval=60.0, catch_up=True)
        )
        assert await task_queue.claim_due_schedules(T0 + 150) == [
            (schedule, [T0, T0 + 60, T0 + 120])
        ]

    async def test_claim_respects_limit(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.SCHEDULES)
        for _ in range(5):
            await task_queue.add_schedule(make_schedule(next_run=T0))
        first = await task_queue.claim_due_schedules(T0, limit=2)
        rest = await task_queue.claim_due_schedules(T0, limit=10)
        assert len(first) == 2 and len(rest) == 3
        assert {s.id for s, _ in first}.isdisjoint(s.id for s, _ in rest)

    async def test_concurrent_claims_fire_each_firing_once(
        self, task_queue: BaseTaskQueue, task_queue_ref: object
    ) -> None:
        requires(task_queue, Capability.SCHEDULES)
        schedules = [make_schedule(next_run=T0 + i, interval=60.0) for i in range(10)]
        async with open_stores("task_queue", task_queue_ref, 5) as schedulers:
            for s in schedules:
                await schedulers[0].add_schedule(s)
            results: list[list[tuple[Schedule, list[float]]]] = [[] for _ in schedulers]

            async def claim(i: int) -> None:
                results[i] = await schedulers[i].claim_due_schedules(T0 + 30)

            async with anyio.create_task_group() as tg:
                for i in range(len(schedulers)):
                    tg.start_soon(claim, i)
        won = sorted((s.id, times) for claimed in results for s, times in claimed)
        assert won == sorted((s.id, [s.next_run]) for s in schedules), (
            "of several schedulers claiming at once exactly one must win each firing"
        )

    async def test_firing_enqueue_is_idempotent(self, task_queue: BaseTaskQueue) -> None:
        """A crash between claim and enqueue is safe: the firing's task id is deterministic."""
        requires(task_queue, Capability.SCHEDULES)
        schedule = await task_queue.add_schedule(make_schedule(next_run=T0))
        [(claimed, times)] = await task_queue.claim_due_schedules(T0)
        task_id = claimed.firing_task_id(times[0])
        for _ in range(2):
            await task_queue.enqueue(make_task(id=task_id, schedule_id=schedule.id))
        assert [t.id for t in await task_queue.list()] == [task_id]

    # -- declared through an app ----------------------------------------------------------

    async def test_declaring_a_name_again_updates_the_schedule_in_place(
        self, task_queue_ref: Any
    ) -> None:
        async with open_app(task_queue_ref) as app:
            requires(app.task_queue, Capability.SCHEDULES)
            first = await app.schedule(
                "omniq_conformance.report", name="nightly-report", cron="0 2 * * *", args=(1,)
            )
            paused_before = await app.task_queue.set_schedule_paused(first, True)
            again = await app.schedule(
                "omniq_conformance.report",
                name="nightly-report",
                cron="30 3 * * *",
                tz="Europe/Berlin",
                args=(2,),
            )
            assert first == again == "nightly-report" and paused_before
            [stored] = await app.list_schedules()
            assert (stored.id, stored.cron, stored.tz) == (
                "nightly-report",
                "30 3 * * *",
                "Europe/Berlin",
            )
            args, _, _ = app.serializer.loads_call(stored.template.payload, local_only=True)
            assert args == [2], "the new arguments replace the old"
            assert stored.paused, "an update keeps the paused state"
            local = datetime.fromtimestamp(stored.next_run, ZoneInfo("Europe/Berlin"))
            assert (local.hour, local.minute) == (3, 30), "the next firing follows the new cron"

    async def test_a_deleted_schedule_does_not_fire(self, task_queue_ref: Any) -> None:
        async with open_app(task_queue_ref) as app:
            requires(app.task_queue, Capability.SCHEDULES)
            sid = await app.schedule(
                "omniq_conformance.report", name="gone", interval=60, start_at=T0
            )
            assert await app.delete_schedule(sid) is True
            assert await app.list_schedules() == []
            assert await app.run_due_schedules() == []
            assert await app.list_tasks() == []

    async def test_schedule_ids_do_not_depend_on_secret_key(self, task_queue_ref: Any) -> None:
        ids = []
        for key in ("first-secret", "rotated-secret"):
            async with open_app(task_queue_ref, secret_key=key) as app:
                requires(app.task_queue, Capability.SCHEDULES)
                ids.append(
                    await app.schedule("omniq_conformance.report", args=(7,), cron="*/5 * * * *")
                )
                named = await app.schedule("omniq_conformance.report", name="keyed", interval=30.0)
                assert named == "keyed"
                listed = [s.id for s in await app.list_schedules()]
        assert ids[0] == ids[1] and sorted(listed) == sorted({ids[0], "keyed"}), listed
