"""Purging delayed tasks (part of :class:`~omniq.testing.TaskQueueContract`): ``purge()``
deletes a task that waits for its eta like any other waiting task, whichever way it
was written (``enqueue``, the fresh-id path a ``delay()`` takes, a retry's eta), and
nothing of it is delivered once the eta passes: a backend that keeps a delivery message
or an index entry apart from the record must not hand the task out afterwards.

Purging a parent (``DEPENDENCIES``): a waiting dependent of a parent purged before it
succeeded is cancelled as a dependent of a cancelled parent is, with
:func:`~omniq.lifecycle.purge_failure` naming the purge; it never runs as if the parent
had succeeded, nor waits for ever. Purging a parent that succeeded leaves its released
dependents alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..interfaces import BaseTaskQueue, Capability
from ..lifecycle import dependency_failure, purge_failure
from ..models import Task, TaskState
from .actions import reserve_ids, reserve_one
from .base import open_app
from .capabilities import requires
from .factories import make_error, make_task
from .polling import wait_past

__all__ = ["PurgeTests", "check_worker_skips_purged_delayed_task"]

#: How far ahead the delayed tasks are due: past it within a test, not before the purge
#: (checked: a purge after the eta would prove nothing).
AHEAD = 2.0


async def assert_cancelled_with(queue: BaseTaskQueue, task: Task, message: str) -> None:
    """``task`` is stored CANCELLED, finished, with a dependency failure saying ``message``."""
    fetched = await queue.get(task.id)
    assert fetched is not None, f"dependent {task.id} vanished"
    assert fetched.state is TaskState.CANCELLED, (
        f"dependent {task.id} should be cancelled ({message}), is {fetched.state.value}"
    )
    assert fetched.finished_at is not None, "a cancelled dependent needs finished_at"
    expected = purge_failure("")  # only its type and module
    got = fetched.error and (fetched.error.type, fetched.error.module, fetched.error.message)
    assert got == (expected.type, expected.module, message), got


class PurgeTests:
    """Mixed into the task-queue contract: a purged delayed task never runs; a purged
    parent that had not succeeded cancels its waiting dependents."""

    @pytest.mark.parametrize("state", ["pending", "scheduled", "running"])
    async def test_purging_an_unfinished_parent_cancels_its_dependents(
        self, task_queue: BaseTaskQueue, state: str
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        if state == "scheduled":
            requires(task_queue, Capability.DELAYED)
            parent = await task_queue.enqueue(
                make_task(queue="pp", eta=await task_queue.now() + 3600)
            )
        elif state == "running":
            await task_queue.enqueue(make_task(queue="pp"))
            parent = await reserve_one(task_queue, ["pp"])
        else:
            parent = await task_queue.enqueue(make_task(queue="pp"))
        child = await task_queue.enqueue(make_task(queue="pp-kids", depends_on=(parent.id,)))
        grandchild = await task_queue.enqueue(make_task(queue="pp-kids", depends_on=(child.id,)))
        assert child.state is TaskState.WAITING
        assert await task_queue.purge(queue="pp", states=[TaskState(state)]) == 1
        assert await task_queue.get(parent.id) is None, "purge() kept the parent"
        await assert_cancelled_with(task_queue, child, purge_failure(parent.id).message)
        await assert_cancelled_with(
            task_queue, grandchild, dependency_failure(child.id, TaskState.CANCELLED).message
        )
        await task_queue.cleanup()  # the sweep that settles waiting tasks changes nothing
        assert await reserve_ids(task_queue, ["pp-kids"]) == [], (
            "a dependent of a purged parent ran as if the parent had succeeded"
        )
        await assert_cancelled_with(task_queue, child, purge_failure(parent.id).message)
        if state == "running":  # its worker's completion, arriving late, is refused
            token = parent.lease_token or ""
            assert not await task_queue.complete(parent.id, token, TaskState.SUCCEEDED)
            assert await task_queue.get(parent.id) is None
            await assert_cancelled_with(task_queue, child, purge_failure(parent.id).message)

    async def test_purging_a_parent_releases_a_dependent_that_runs_on_failure(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task(queue="pr"))
        child = await task_queue.enqueue(
            make_task(queue="pr-kids", depends_on=(parent.id,), on_parent_failure="run")
        )
        assert child.state is TaskState.WAITING
        assert await task_queue.purge(queue="pr") == 1
        stored = await task_queue.get(child.id)
        assert stored is not None and stored.state is TaskState.PENDING, (
            "a dependent that runs on failure is released by a purged parent, as by a "
            f"cancelled one; it is {stored and stored.state.value}"
        )
        assert await reserve_ids(task_queue, ["pr-kids"]) == [child.id]

    async def test_purge_deletes_each_task_its_filter_matched_though_a_purged_parent_cancels_it(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """The filter is read once, as purge() begins: a dependent that was waiting then
        is deleted with its parent when WAITING is purged too, not left behind cancelled."""
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task(queue="pw"))
        child = await task_queue.enqueue(make_task(queue="pw", depends_on=(parent.id,)))
        other = await task_queue.enqueue(make_task(queue="pw-kids", depends_on=(parent.id,)))
        outsider = await task_queue.enqueue(make_task(queue="pw-kids"))
        kept = await task_queue.enqueue(make_task(queue="pw-kids", depends_on=(outsider.id,)))
        purged = await task_queue.purge(queue="pw", states=[TaskState.PENDING, TaskState.WAITING])
        left = await task_queue.get(child.id)
        assert left is None, f"a dependent matched by the purge was left {left and left.state}"
        assert purged == 2
        await assert_cancelled_with(task_queue, other, purge_failure(parent.id).message)
        still = await task_queue.get(kept.id)
        assert still is not None and still.state is TaskState.WAITING, (
            "a parent the filter did not match had its dependent changed"
        )

    async def test_purging_a_succeeded_parent_keeps_its_released_dependent(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        await task_queue.enqueue(make_task(queue="ps"))
        parent = await reserve_one(task_queue, ["ps"])
        child = await task_queue.enqueue(make_task(queue="ps-kids", depends_on=(parent.id,)))
        token = parent.lease_token or ""
        assert await task_queue.complete(parent.id, token, TaskState.SUCCEEDED)
        assert await task_queue.purge(queue="ps", states=[TaskState.SUCCEEDED]) == 1
        await task_queue.cleanup()
        stored = await task_queue.get(child.id)
        assert stored is not None and stored.state is TaskState.PENDING, stored
        assert await reserve_ids(task_queue, ["ps-kids"]) == [child.id]

    async def test_purge_deletes_delayed_tasks_and_none_is_delivered_at_its_eta(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DELAYED)
        await task_queue.enqueue(make_task(queue="pd"))
        retrying = await reserve_one(task_queue, ["pd"])
        eta = await task_queue.now() + AHEAD
        token = retrying.lease_token or ""
        assert await task_queue.retry(retrying.id, token, eta, make_error()) is True
        scheduled = await task_queue.enqueue(make_task(queue="pd", eta=eta))
        [fresh] = await task_queue.enqueue_recorded(
            [make_task(queue="pd", eta=eta)], [], None, fresh=True
        )
        states = {t.id: t.state for t in await task_queue.list(queue="pd")}
        assert states == {
            retrying.id: TaskState.RETRYING,
            scheduled.id: TaskState.SCHEDULED,
            fresh.id: TaskState.SCHEDULED,
        }, states
        assert await task_queue.purge(queue="pd") == 3
        assert await task_queue.now() < eta, "the purge ended after the eta: raise AHEAD"
        for task in (retrying, scheduled, fresh):
            assert await task_queue.get(task.id) is None, f"purged task {task.id} still stored"
        await wait_past(task_queue, eta)
        after = await task_queue.enqueue(make_task(queue="pd"))
        got = await reserve_ids(task_queue, ["pd"])
        assert got == [after.id], (
            f"after the eta of purged delayed tasks, reserve returned {got}; expected only "
            f"the task enqueued since, {after.id}"
        )

    async def test_a_waiting_worker_never_runs_a_purged_delayed_task(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        requires(task_queue, Capability.DELAYED)
        await check_worker_skips_purged_delayed_task(task_queue_ref)


async def check_worker_skips_purged_delayed_task(ref: Any) -> None:
    """A task ``delay``-ed with an eta while a worker waits (the worker knows of it by its
    wake-up), purged before the eta, does not run: a task due later, enqueued after the
    purge, runs, and by then the purged one has not."""
    async with open_app(ref) as app:
        ran: list[str] = []

        @app.task
        async def mark(label: str) -> None:
            ran.append(label)

        worker = app.worker(pool="async", concurrency=1)
        running = asyncio.create_task(worker.run(install_signals=False))
        try:
            await app.get_result(await mark.delay("first"), timeout=10)  # the worker idles
            eta = await app.task_queue.now() + AHEAD
            purged = await mark.apply(args=("purged",), eta=eta)
            await app.purge()
            assert await app.task_queue.now() < eta, "the purge ended after the eta"
            assert await app.task_queue.get(purged.id) is None, "purge() kept a delayed task"
            later = await mark.apply(args=("later",), eta=eta + 0.2)
            await app.get_result(later, timeout=10)
            assert ran == ["first", "later"], ran
        finally:
            worker.request_stop("test")
            await asyncio.wait_for(running, 10)
