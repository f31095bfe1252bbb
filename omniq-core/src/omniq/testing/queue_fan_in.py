"""Task-queue tests for ``on_parent_failure="run"``, the release rule of fan-in
callbacks that see their parents' failures: such a dependent is never cancelled by a
parent; it waits until every parent ended, however, then is ready."""

from __future__ import annotations

import pytest

from ..interfaces import BaseTaskQueue, Capability
from ..models import Task, TaskState
from .actions import LONG, reserve_ids, reserved
from .capabilities import requires
from .factories import make_error, make_task
from .queue_dependencies import assert_cancelled_by, state_of

__all__ = ["RunOnFailureTests"]


async def end_parent(queue: BaseTaskQueue, parent: Task, end: str) -> None:
    """End ``parent`` without success: ``cancel`` it, ``dead_letter`` it (reserved
    first), or let it expire (it must have been enqueued already past its expiry)."""
    if end == "cancel":
        assert await queue.cancel(parent.id)
    elif end == "dead_letter":
        assert await queue.dead_letter(parent.id, parent.lease_token, make_error())
    else:
        assert parent.id in [t.id for t in await queue.cleanup()]


class RunOnFailureTests:
    """``on_parent_failure="run"`` (mixed into :class:`TaskQueueContract`; needs
    ``DEPENDENCIES``)."""

    async def test_run_on_failure_fields_are_stored(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task())
        child = await task_queue.enqueue(
            make_task(depends_on=(parent.id,), on_parent_failure="run", pass_results=True)
        )
        fetched = await task_queue.get(child.id)
        assert fetched is not None
        assert (fetched.on_parent_failure, fetched.pass_results) == ("run", True), (
            "on_parent_failure and pass_results must be stored with the task"
        )
        plain = await task_queue.get(parent.id)
        assert plain is not None and (plain.on_parent_failure, plain.pass_results) == (
            "cancel",
            False,
        )

    @pytest.mark.parametrize("end", ["cancel", "dead_letter", "expired"])
    async def test_run_on_failure_waits_for_every_parent_then_is_ready(
        self, task_queue: BaseTaskQueue, end: str
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        failing = make_task(expires_at=await task_queue.now() - 1 if end == "expired" else None)
        failing, other = await task_queue.enqueue_many([failing, make_task(queue="others")])
        if end == "dead_letter":
            failing = await reserved_task(task_queue, failing)
        child = await task_queue.enqueue(
            make_task(queue="children", depends_on=(failing.id, other.id), on_parent_failure="run")
        )
        assert child.state is TaskState.WAITING
        await end_parent(task_queue, failing, end)
        assert await state_of(task_queue, child) is TaskState.WAITING, (
            "a dependent that runs on failure waits while another parent has not ended"
        )
        [held] = await task_queue.reserve(["others"], "w", LONG)
        assert await task_queue.complete(held.id, held.lease_token or "", TaskState.SUCCEEDED)
        fetched = await task_queue.get(child.id)
        assert fetched is not None and fetched.state is TaskState.PENDING, (
            f"every parent ended: the dependent must be ready, is {fetched and fetched.state}"
        )
        assert fetched.error is None and fetched.finished_at is None
        assert await reserve_ids(task_queue, ["children"]) == [child.id]

    async def test_run_on_failure_after_a_failed_last_parent(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        first, last = await task_queue.enqueue_many([make_task(), make_task()])
        child = await task_queue.enqueue(
            make_task(queue="children", depends_on=(first.id, last.id), on_parent_failure="run")
        )
        ra, rb = await task_queue.reserve(["default"], "w", LONG, limit=2)
        assert await task_queue.complete(ra.id, ra.lease_token or "", TaskState.SUCCEEDED)
        assert await task_queue.complete(rb.id, rb.lease_token or "", TaskState.CANCELLED)
        assert await state_of(task_queue, child) is TaskState.PENDING

    async def test_run_on_failure_enqueued_after_parents_ended_is_ready(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        failed = await task_queue.enqueue(make_task())
        await task_queue.cancel(failed.id)
        done = await reserved(task_queue)
        await task_queue.complete(done.id, done.lease_token or "", TaskState.SUCCEEDED)
        child = await task_queue.enqueue(
            make_task(depends_on=(failed.id, done.id), on_parent_failure="run")
        )
        assert child.state is TaskState.PENDING and child.error is None
        waiting = await task_queue.enqueue(make_task())
        later = await task_queue.enqueue(
            make_task(depends_on=(failed.id, waiting.id), on_parent_failure="run")
        )
        assert later.state is TaskState.WAITING

    async def test_run_on_failure_below_a_cancelled_dependent_is_ready(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """The cascade of a failure cancels the dependents that cancel, and stops at one
        that runs on failure: that one becomes ready, and its own dependents wait."""
        requires(task_queue, Capability.DEPENDENCIES)
        root = await task_queue.enqueue(make_task())
        middle = await task_queue.enqueue(make_task(depends_on=(root.id,)))
        runner = await task_queue.enqueue(
            make_task(queue="children", depends_on=(middle.id,), on_parent_failure="run")
        )
        below = await task_queue.enqueue(make_task(depends_on=(runner.id,)))
        assert await task_queue.cancel(root.id)
        await assert_cancelled_by(task_queue, root, middle)
        assert await state_of(task_queue, runner) is TaskState.PENDING
        assert await state_of(task_queue, below) is TaskState.WAITING
        assert await reserve_ids(task_queue, ["children"]) == [runner.id]


async def reserved_task(queue: BaseTaskQueue, task: Task) -> Task:
    """``task`` (already enqueued, alone in its queue) as a reserve hands it out."""
    [held] = await queue.reserve([task.queue], "w", LONG)
    assert held.id == task.id
    return held
