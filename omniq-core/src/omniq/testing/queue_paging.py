"""Task-queue tests for what operators read and do: ``list_page`` (filters, paging by a
cursor) and ``requeue``."""

from __future__ import annotations

import pytest

from ..errors import ConfigError, QueueError, TaskNotFoundError
from ..interfaces import BaseTaskQueue, TaskPage
from ..models import Task, TaskState
from .actions import reserve_one
from .factories import make_error, make_task

__all__ = ["PagingTests"]


async def every_page(store: BaseTaskQueue, limit: int, **filters: object) -> list[list[str]]:
    """The ids of each page, following cursors until the last page."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await store.list_page(cursor=cursor, limit=limit, **filters)  # type: ignore[arg-type]
        assert isinstance(page, TaskPage)
        assert len(page.tasks) <= limit, f"a page of limit {limit} held {len(page.tasks)} tasks"
        pages.append([t.id for t in page.tasks])
        if page.cursor is None:
            return pages
        assert len(pages) < 100, "list_page keeps returning a cursor"
        cursor = page.cursor


async def enqueue_spread(store: BaseTaskQueue, count: int, **overrides: object) -> list[Task]:
    """``count`` tasks, one after the other, created one second apart in the past."""
    at = await store.now() - 1000
    return [await store.enqueue(make_task(created_at=at + i, **overrides)) for i in range(count)]


class PagingTests:
    """Listing by pages and requeueing (mixed into :class:`TaskQueueContract`)."""

    async def test_list_page_pages_newest_first_by_cursor(self, task_queue: BaseTaskQueue) -> None:
        tasks = await enqueue_spread(task_queue, 23, queue="q-paging")
        pages = await every_page(task_queue, 5, queue="q-paging")
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert [i for p in pages for i in p] == [t.id for t in reversed(tasks)], (
            "list_page must return every task once, newest first, across pages"
        )
        exact = await every_page(task_queue, 23, queue="q-paging")
        assert len(exact) == 1, "a page that holds the last task has no cursor"

    async def test_list_page_filters_by_queue_state_name_and_time(
        self, task_queue: BaseTaskQueue
    ) -> None:
        at = await task_queue.now() - 1000
        made: list[Task] = [
            await task_queue.enqueue(
                make_task(
                    queue="q-filter-a" if i % 2 else "q-filter-b",
                    name=f"pkg:task{i % 3}",
                    created_at=at + i,
                )
            )
            for i in range(12)
        ]
        dead = await reserve_one(task_queue, ["q-filter-a"])
        assert await task_queue.dead_letter(dead.id, dead.lease_token, make_error())

        def expect(pick: object) -> list[str]:
            return [t.id for t in reversed(made) if pick(t)]  # type: ignore[operator]

        def flat(pages: list[list[str]]) -> list[str]:
            return [i for p in pages for i in p]

        assert flat(await every_page(task_queue, 4, queue="q-filter-a")) == expect(
            lambda t: t.queue == "q-filter-a"
        )
        assert flat(await every_page(task_queue, 4, name="pkg:task1")) == expect(
            lambda t: t.name == "pkg:task1"
        )
        assert flat(await every_page(task_queue, 4, states=[TaskState.DEAD])) == [dead.id]
        assert flat(
            await every_page(task_queue, 4, queue="q-filter-a", states=[TaskState.PENDING])
        ) == [i for i in expect(lambda t: t.queue == "q-filter-a") if i != dead.id]
        assert flat(await every_page(task_queue, 2, since=at + 3, until=at + 7)) == expect(
            lambda t: at + 3 <= t.created_at < at + 7
        ), "since is inclusive, until exclusive"
        assert flat(
            await every_page(task_queue, 3, queue="q-filter-b", name="pkg:task0", since=at + 1)
        ) == expect(
            lambda t: t.queue == "q-filter-b" and t.name == "pkg:task0" and t.created_at >= at + 1
        )
        assert flat(await every_page(task_queue, 5, queue="q-no-such-queue")) == []

    async def test_list_page_is_not_shifted_by_tasks_enqueued_meanwhile(
        self, task_queue: BaseTaskQueue
    ) -> None:
        tasks = await enqueue_spread(task_queue, 9, queue="q-shift")
        first = await task_queue.list_page(queue="q-shift", limit=3)
        await task_queue.enqueue(make_task(queue="q-shift"))
        await task_queue.enqueue(make_task(queue="q-shift"))
        second = await task_queue.list_page(queue="q-shift", limit=3, cursor=first.cursor)
        assert [t.id for t in second.tasks] == [t.id for t in tasks[5:2:-1]], (
            "the page after a cursor holds the next older tasks, whatever was enqueued since"
        )

    async def test_list_page_refuses_a_malformed_cursor_and_a_bad_limit(
        self, task_queue: BaseTaskQueue
    ) -> None:
        await enqueue_spread(task_queue, 2)
        with pytest.raises(ConfigError, match="cursor"):
            await task_queue.list_page(cursor="<script>not a cursor")
        for limit in (0, -1, 100_000):
            with pytest.raises(ConfigError, match="limit"):
                await task_queue.list_page(limit=limit)

    async def test_requeue_enqueues_a_dead_task_again_with_attempts_reset(
        self, task_queue: BaseTaskQueue
    ) -> None:
        original = await task_queue.enqueue(make_task(queue="q-requeue", priority=0, max_retries=2))
        got = await reserve_one(task_queue, ["q-requeue"])
        assert await task_queue.dead_letter(got.id, got.lease_token, make_error("it broke"))
        again = await task_queue.requeue(original.id)
        assert again.id != original.id
        assert again.state is TaskState.PENDING and again.attempts == 0 and again.error is None
        assert (again.name, again.queue, again.payload, again.max_retries) == (
            original.name,
            original.queue,
            original.payload,
            original.max_retries,
        )
        kept = await task_queue.get(original.id)
        assert kept is not None and kept.state is TaskState.DEAD, "the original keeps its history"
        assert kept.error is not None and kept.error.message == "it broke"
        rerun = await reserve_one(task_queue, ["q-requeue"])
        assert rerun.id == again.id and rerun.attempts == 1

    async def test_requeue_refuses_unknown_and_unfinished_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        with pytest.raises(TaskNotFoundError):
            await task_queue.requeue("no-such-task")
        pending = await task_queue.enqueue(make_task(queue="q-requeue-pending"))
        with pytest.raises(QueueError, match="pending"):
            await task_queue.requeue(pending.id)
        assert [t.id for t in await task_queue.list(queue="q-requeue-pending")] == [pending.id]

    async def test_requeue_many_requeues_each_once_in_order(
        self, task_queue: BaseTaskQueue
    ) -> None:
        made = [await task_queue.enqueue(make_task(queue="q-requeue-many")) for _ in range(3)]
        for _ in made:
            got = await reserve_one(task_queue, ["q-requeue-many"])
            assert await task_queue.dead_letter(got.id, got.lease_token, make_error())
        ids = [t.id for t in made]
        again = await task_queue.requeue_many([ids[2], ids[0], ids[2], ids[1]])
        assert len(again) == 3, "an id given twice is requeued once"
        assert [a.attempts for a in again] == [0, 0, 0]
        assert not {a.id for a in again} & set(ids), "each requeue is a new task"
        for a in again:
            assert (await task_queue.get(a.id)) == a and a.state is TaskState.PENDING
        assert await task_queue.requeue_many([]) == []

    async def test_requeue_takes_failed_cancelled_and_expired_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        cancelled = await task_queue.enqueue(make_task(queue="q-requeue-states"))
        assert await task_queue.cancel(cancelled.id)
        again = await task_queue.requeue(cancelled.id)
        assert again.state is TaskState.PENDING and again.attempts == 0

    async def test_requeue_many_refuses_running_pending_and_succeeded_and_requeues_none(
        self, task_queue: BaseTaskQueue
    ) -> None:
        queue = "q-requeue-refuse"
        dead = await task_queue.enqueue(make_task(queue=queue))
        got = await reserve_one(task_queue, [queue])
        assert await task_queue.dead_letter(got.id, got.lease_token, make_error())
        done = await task_queue.enqueue(make_task(queue=queue))
        got = await reserve_one(task_queue, [queue])
        assert await task_queue.complete(got.id, got.lease_token or "", TaskState.SUCCEEDED)
        running = await task_queue.enqueue(make_task(queue=queue))
        await reserve_one(task_queue, [queue])
        pending = await task_queue.enqueue(make_task(queue=queue))
        before = sorted(t.id for t in await task_queue.list(queue=queue))
        for other, state in (
            (running, "running"),
            (pending, "pending"),
            (done, "succeeded"),
        ):
            with pytest.raises(QueueError, match=f"{other.id}.*{state}") as info:
                await task_queue.requeue_many([dead.id, other.id])
            assert "dead" in str(info.value), "the error names the states that can be requeued"
        with pytest.raises(TaskNotFoundError):
            await task_queue.requeue_many([dead.id, "no-such-task"])
        after = sorted(t.id for t in await task_queue.list(queue=queue))
        assert after == before, "a refused batch requeues nothing, not even its dead task"
