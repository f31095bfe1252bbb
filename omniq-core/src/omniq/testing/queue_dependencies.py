"""Task-queue tests for ``depends_on``: the state decided at enqueue, and how a parent's
end (success, failure, dead letter, cancel, expiry) moves its waiting dependents."""

from __future__ import annotations

import pytest

from ..errors import TaskNotFoundError
from ..interfaces import BaseTaskQueue, Capability
from ..lifecycle import dependency_failure
from ..models import READY_STATES, Task, TaskState
from .actions import LONG, lapse, reserve_ids, reserved
from .capabilities import requires
from .factories import make_error, make_task
from .polling import SHORT

__all__ = ["DependencyTests"]


async def state_of(queue: BaseTaskQueue, task: Task) -> TaskState:
    fetched = await queue.get(task.id)
    assert fetched is not None, f"task {task.id} vanished"
    return fetched.state


async def assert_cancelled_by(queue: BaseTaskQueue, parent: Task, *dependents: Task) -> None:
    """Each dependent is CANCELLED, finished, with the one dependency failure of every
    backend: :class:`~omniq.errors.DependencyFailedError` (module ``omniq.errors``) and
    the message of :func:`~omniq.lifecycle.dependency_message` naming its direct
    ``parent`` and the state that parent ended in."""
    ended = await state_of(queue, parent)
    expected = dependency_failure(parent.id, ended)
    for dep in dependents:
        fetched = await queue.get(dep.id)
        assert fetched is not None and fetched.state is TaskState.CANCELLED, (
            f"dependent {dep.id} of {parent.id} should be cancelled, is {fetched and fetched.state}"
        )
        assert fetched.finished_at is not None, "a cancelled dependent needs finished_at"
        assert fetched.error is not None, (
            f"the dependent {dep.id} needs an error naming {parent.id}"
        )
        got = (fetched.error.type, fetched.error.module, fetched.error.message)
        assert got == (expected.type, expected.module, expected.message), (
            f"a dependent cancelled because its parent ended {ended.value} must store "
            f"{expected.type} of {expected.module} with {expected.message!r}, got {got}"
        )


class DependencyTests:
    """``depends_on`` (mixed into :class:`TaskQueueContract`; needs ``DEPENDENCIES``)."""

    async def test_depends_on_unfinished_parent_waits(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task())
        child = await task_queue.enqueue(make_task(queue="children", depends_on=(parent.id,)))
        assert child.state is TaskState.WAITING
        assert await state_of(task_queue, child) is TaskState.WAITING
        assert await reserve_ids(task_queue, ["children"]) == [], "a waiting task is never reserved"

    async def test_depends_on_succeeded_parent_is_ready(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await reserved(task_queue)
        await task_queue.complete(parent.id, parent.lease_token or "", TaskState.SUCCEEDED)
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        assert child.state is TaskState.PENDING
        if Capability.DELAYED in type(task_queue).capabilities:
            later = await task_queue.enqueue(
                make_task(depends_on=(parent.id,), eta=await task_queue.now() + 3600)
            )
            assert later.state is TaskState.SCHEDULED

    @pytest.mark.parametrize("end", ["cancelled", "dead", "expired"])
    async def test_depends_on_failed_parent_is_cancelled(
        self, task_queue: BaseTaskQueue, end: str
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task(expires_at=await task_queue.now() - 1))
        if end == "cancelled":
            await task_queue.cancel(parent.id)
        elif end == "dead":
            await task_queue.dead_letter(parent.id, None, make_error())
        else:
            assert [t.id for t in await task_queue.cleanup()] == [parent.id]
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        assert child.state is TaskState.CANCELLED
        await assert_cancelled_by(task_queue, parent, child)

    async def test_depends_on_unknown_task_raises(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task())
        child = make_task(depends_on=(parent.id, "no-such-parent"))
        with pytest.raises(TaskNotFoundError) as info:
            await task_queue.enqueue(child)
        assert "no-such-parent" in str(info.value)
        assert await task_queue.get(child.id) is None, "a refused enqueue must store nothing"

    async def test_enqueue_many_may_depend_on_earlier_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = make_task()
        child = make_task(depends_on=(parent.id,))
        grandchild = make_task(depends_on=(child.id, parent.id))
        stored = await task_queue.enqueue_many([parent, child, grandchild])
        assert [t.state for t in stored] == [
            TaskState.PENDING,
            TaskState.WAITING,
            TaskState.WAITING,
        ]
        assert await reserve_ids(task_queue, ["default"]) == [parent.id]

    async def test_success_readies_dependents_once_all_parents_succeed(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        a, b = await task_queue.enqueue_many([make_task(), make_task()])
        child = await task_queue.enqueue(make_task(queue="children", depends_on=(a.id, b.id)))
        ra, rb = await task_queue.reserve(["default"], "w", LONG, limit=2)
        assert await task_queue.complete(ra.id, ra.lease_token or "", TaskState.SUCCEEDED)
        assert await state_of(task_queue, child) is TaskState.WAITING, (
            "one parent of two is not enough"
        )
        assert await task_queue.complete(rb.id, rb.lease_token or "", TaskState.SUCCEEDED)
        assert await state_of(task_queue, child) is TaskState.PENDING
        assert await reserve_ids(task_queue, ["children"]) == [child.id]

    async def test_success_readies_a_future_eta_dependent_as_scheduled(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES, Capability.DELAYED)
        parent = await reserved(task_queue)
        child = await task_queue.enqueue(
            make_task(depends_on=(parent.id,), eta=await task_queue.now() + 3600)
        )
        await task_queue.complete(parent.id, parent.lease_token or "", TaskState.SUCCEEDED)
        assert await state_of(task_queue, child) is TaskState.SCHEDULED

    async def test_retry_of_parent_keeps_dependents_waiting(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await reserved(task_queue)
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        await task_queue.retry(
            parent.id, parent.lease_token or "", await task_queue.now(), make_error()
        )
        assert await state_of(task_queue, child) is TaskState.WAITING

    @pytest.mark.parametrize(
        "end", ["complete-cancelled", "dead_letter", "cancel", "cancel-running"]
    )
    async def test_parent_failure_cancels_dependents_recursively(
        self, task_queue: BaseTaskQueue, end: str
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = (
            await reserved(task_queue) if end != "cancel" else await task_queue.enqueue(make_task())
        )
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        grandchild = await task_queue.enqueue(make_task(depends_on=(child.id,)))
        unrelated = await task_queue.enqueue(make_task())
        token = parent.lease_token or ""
        if end == "complete-cancelled":
            assert await task_queue.complete(parent.id, token, TaskState.CANCELLED, make_error())
        elif end == "dead_letter":
            assert await task_queue.dead_letter(parent.id, token, make_error())
        else:
            assert await task_queue.cancel(parent.id)
        await assert_cancelled_by(task_queue, parent, child)
        await assert_cancelled_by(task_queue, child, grandchild)
        assert await state_of(task_queue, unrelated) is TaskState.PENDING

    async def test_cancel_waiting_task_cancels_its_dependents(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task())
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        grandchild = await task_queue.enqueue(make_task(depends_on=(child.id,)))
        assert await task_queue.cancel(child.id) is True
        assert await state_of(task_queue, child) is TaskState.CANCELLED
        await assert_cancelled_by(task_queue, child, grandchild)
        assert await state_of(task_queue, parent) is TaskState.PENDING

    async def test_lapsed_dead_parent_cancels_dependents(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await reserved(task_queue, lease=SHORT, max_deliveries=1)
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        assert (await lapse(task_queue, parent)).state is TaskState.DEAD
        await assert_cancelled_by(task_queue, parent, child)

    async def test_expired_parent_cancels_dependents(self, task_queue: BaseTaskQueue) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task(expires_at=await task_queue.now() - 1))
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        assert child.state is TaskState.WAITING
        expired = await task_queue.cleanup()
        assert [t.id for t in expired] == [parent.id]
        await assert_cancelled_by(task_queue, parent, child)

    async def test_expired_waiting_task_expires_and_cancels_dependents(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task())
        child = await task_queue.enqueue(
            make_task(depends_on=(parent.id,), expires_at=await task_queue.now() - 1)
        )
        grandchild = await task_queue.enqueue(make_task(depends_on=(child.id,)))
        assert [t.id for t in await task_queue.cleanup()] == [child.id]
        assert await state_of(task_queue, child) is TaskState.EXPIRED
        await assert_cancelled_by(task_queue, child, grandchild)
        assert await state_of(task_queue, parent) in READY_STATES

    async def test_dependents_lists_the_tasks_that_depend_on_a_task(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)

        async def dependents(task: Task | str) -> list[str]:
            found = await task_queue.dependents(task if isinstance(task, str) else task.id)
            assert [t.id for t in found] == sorted(t.id for t in found), "ordered by id"
            return [t.id for t in found]

        parent = await reserved(task_queue)
        other = await task_queue.enqueue(make_task(queue="q-dependents-other"))
        one = await task_queue.enqueue(make_task(queue="q-dependents", depends_on=(parent.id,)))
        both = await task_queue.enqueue(
            make_task(queue="q-dependents", depends_on=(parent.id, other.id))
        )
        assert await dependents(parent) == sorted([one.id, both.id])
        assert await dependents(other) == [both.id]
        assert await dependents(one) == [], "a task nothing depends on has no dependents"
        assert await dependents("no-such-task") == []
        await task_queue.complete(parent.id, parent.lease_token or "", TaskState.SUCCEEDED)
        assert await dependents(parent) == sorted([one.id, both.id]), (
            "a parent that ended still lists its dependents (the task page shows them)"
        )
        late = await task_queue.enqueue(make_task(queue="q-dependents", depends_on=(parent.id,)))
        assert late.state is TaskState.PENDING
        assert await dependents(parent) == sorted([one.id, both.id, late.id]), (
            "a dependent enqueued after its parent ended is listed too"
        )
        [listed] = [t for t in await task_queue.dependents(parent.id) if t.id == one.id]
        assert listed == await task_queue.get(one.id), "dependents are the tasks as stored"

    async def test_dependents_of_a_failed_parent_list_the_cancelled_ones(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.DEPENDENCIES)
        parent = await task_queue.enqueue(make_task(queue="q-dependents-failed"))
        child = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        grandchild = await task_queue.enqueue(make_task(depends_on=(child.id,)))
        assert await task_queue.cancel(parent.id)
        late = await task_queue.enqueue(make_task(depends_on=(parent.id,)))
        assert late.state is TaskState.CANCELLED
        found = await task_queue.dependents(parent.id)
        assert [(t.id, t.state) for t in found] == sorted(
            [(child.id, TaskState.CANCELLED), (late.id, TaskState.CANCELLED)]
        )
        assert [t.id for t in await task_queue.dependents(child.id)] == [grandchild.id]
