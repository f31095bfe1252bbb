"""Task-queue tests for the calls that write more than one store: ``finish_many``, the
worker's hot path (completions with their results and events), and ``enqueue_recorded``
and ``enqueue_batches`` (tasks with their ``enqueued`` events), each to sibling stores of
the same backend (which a backend may merge into one step) and to stores of another kind
(which it must leave to them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import pytest

from ..errors import IncompatiblePluginError, UnknownBackendError
from ..interfaces import BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability
from ..models import EventType, Task, TaskEvent, TaskResult, TaskState
from ..models import now as wall_clock
from .actions import lapse, reserve_one, reserved
from .base import open_store
from .factories import make_event, make_result, make_task
from .polling import SHORT, eventually

__all__ = ["FinishTests"]

#: A token no reserve ever hands out.
STALE = "stale-token"


class KeptResults(BaseResultStorage):
    """Results in a dict: a store no backend can mistake for its own."""

    def __init__(self) -> None:
        self.kept: dict[str, TaskResult] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KeptResults:
        return cls()

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        self.kept.update((r.task_id, r) for r in results)

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        return {tid: self.kept[tid] for tid in task_ids if tid in self.kept}

    async def _delete(self, task_id: str) -> bool:
        return self.kept.pop(task_id, None) is not None

    async def _cleanup(self) -> int:
        return 0


class KeptEvents(BaseEventStorage):
    """Events in a list, for the same reason."""

    def __init__(self) -> None:
        self.kept: list[TaskEvent] = []

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KeptEvents:
        return cls()

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        self.kept.extend(events)

    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: Iterable[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> list[TaskEvent]:
        wanted = None if types is None else set(types)
        return [
            e
            for e in self.kept
            if (task_id is None or e.task_id == task_id) and (wanted is None or e.type in wanted)
        ]

    async def _cleanup(self, older_than: float) -> int:
        return 0


async def check_finish_many(
    queue: BaseTaskQueue, results: BaseResultStorage, events: BaseEventStorage
) -> None:
    a, b, c = [await reserved(queue) for _ in range(3)]
    result_a = make_result(task_id=a.id)
    event_a = make_event(task_id=a.id, queue=a.queue, type=EventType.SUCCEEDED)
    event_b = make_event(task_id=b.id, queue=b.queue, type=EventType.SUCCEEDED)
    started_c = make_event(task_id=c.id, queue=c.queue, type=EventType.STARTED)
    answers = await queue.finish_many(
        [
            (a.id, a.lease_token or "", TaskState.SUCCEEDED, None),
            (b.id, STALE, TaskState.SUCCEEDED, None),
        ],
        [result_a, make_result(task_id=b.id)],
        [event_a, event_b, started_c],
        results,
        events,
    )
    assert answers == [True, False], "finish_many answers like complete_many: fenced by the token"
    states = [(await queue.get(t.id)).state for t in (a, b, c)]  # type: ignore[union-attr]
    assert states == [TaskState.SUCCEEDED, TaskState.RUNNING, TaskState.RUNNING]
    assert await results.get(a.id) == result_a
    assert [e.id for e in await events.query(task_id=a.id)] == [event_a.id]
    assert await results.get(b.id) is None, "a refused completion's result must not be written"
    assert await events.query(task_id=b.id) == [], (
        "a refused completion's events must not be written"
    )
    assert [e.id for e in await events.query(task_id=c.id)] == [started_c.id], (
        "events of tasks not finished in the call are stored too"
    )

    result_c = make_result(task_id=c.id)
    assert await queue.finish_many(
        [(c.id, c.lease_token or "", TaskState.SUCCEEDED, None)], [result_c], [], results, None
    ) == [True], "events off: no event store"
    assert await results.get(c.id) == result_c
    assert [e.id for e in await events.query(task_id=c.id)] == [started_c.id]

    late = make_event(task_id=b.id, queue=b.queue, type=EventType.LEASE_LOST)
    assert await queue.finish_many([], [], [late], results, events) == [], (
        "events alone are written"
    )
    assert [e.id for e in await events.query(task_id=b.id)] == [late.id]


async def check_finish_many_over_stored_results(
    queue: BaseTaskQueue, results: BaseResultStorage, events: BaseEventStorage
) -> None:
    """A task whose result is stored already (an operator's re-run of a dead task, a
    result written by hand) has it replaced by its accepted completion's, in a batch
    with a task that has none; a refused completion still replaces nothing. A store may
    write results as new first and fall back when one exists; none may fail or skip."""
    a, b, c = [await reserved(queue) for _ in range(3)]
    old_a = make_result(task_id=a.id, value=b"old a")
    old_c = make_result(task_id=c.id, value=b"old c")
    await results.set(old_a)
    await results.set(old_c)
    new_a, new_b = make_result(task_id=a.id, value=b"new a"), make_result(task_id=b.id)
    event_a = make_event(task_id=a.id, queue=a.queue, type=EventType.SUCCEEDED)
    event_b = make_event(task_id=b.id, queue=b.queue, type=EventType.SUCCEEDED)
    answers = await queue.finish_many(
        [
            (a.id, a.lease_token or "", TaskState.SUCCEEDED, None),
            (b.id, b.lease_token or "", TaskState.SUCCEEDED, None),
            (c.id, STALE, TaskState.SUCCEEDED, None),
        ],
        [new_a, new_b, make_result(task_id=c.id, value=b"refused")],
        [event_a, event_b],
        results,
        events,
    )
    assert answers == [True, True, False]
    assert await results.get(a.id) == new_a, (
        "the accepted completion's result replaces the stored one"
    )
    assert await results.get(b.id) == new_b
    assert await results.get(c.id) == old_c, "a refused completion replaces no result"
    assert [e.id for e in await events.query(task_id=a.id)] == [event_a.id]
    assert [e.id for e in await events.query(task_id=b.id)] == [event_b.id]
    states = [(await queue.get(t.id)).state for t in (a, b, c)]  # type: ignore[union-attr]
    assert states == [TaskState.SUCCEEDED, TaskState.SUCCEEDED, TaskState.RUNNING]


async def check_zombie_finish(
    queue: BaseTaskQueue, results: BaseResultStorage, events: BaseEventStorage
) -> None:
    """Worker A's lease lapses, B takes the task over and finishes it, then A finishes
    late with its spent token: A's result and events are refused with its completion, and
    B's stay (a fenced-out attempt leaves nothing visible)."""
    first = await reserved(queue, lease=SHORT)
    await lapse(queue, first)
    second = await reserve_one(queue, [first.queue], worker="worker-b")

    def finish(held: Task, worker: str) -> tuple[TaskResult, TaskEvent]:
        return (
            make_result(task_id=held.id, attempts=held.attempts, worker_id=worker),
            make_event(
                task_id=held.id, queue=held.queue, type=EventType.SUCCEEDED, worker_id=worker
            ),
        )

    result_b, event_b = finish(second, "worker-b")
    won = [(second.id, second.lease_token or "", TaskState.SUCCEEDED, None)]
    assert await queue.finish_many(won, [result_b], [event_b], results, events) == [True]
    result_a, event_a = finish(first, "worker-a")
    late = [(first.id, first.lease_token or "", TaskState.SUCCEEDED, None)]
    assert await queue.finish_many(late, [result_a], [event_a], results, events) == [False], (
        "the late completion of a fenced-out attempt is refused"
    )
    assert await results.get(first.id) == result_b, (
        "the zombie's result must not overwrite the winner's"
    )
    stored = await events.query(task_id=first.id, types=[EventType.SUCCEEDED.value])
    assert [e.id for e in stored] == [event_b.id], "exactly one succeeded event: the winner's"
    fetched = await queue.get(first.id)
    assert fetched is not None and fetched.state is TaskState.SUCCEEDED


async def check_zombie_finish_never_reaches_a_wait(
    queue: BaseTaskQueue, results: BaseResultStorage
) -> None:
    """A producer waiting for a task its result storage was told of (``expect``, before
    any result of it exists) gets the winner's result, never a fenced-out attempt's: a
    refused completion writes nothing and announces nothing, however a store's wait
    learns of results without reading first."""
    assert await results.wait("warm-up", 0.0) is None  # (a first wait may set up)
    first = await reserved(queue, lease=SHORT)
    results.expect(first.id)
    waiting = asyncio.create_task(results.wait(first.id, 30.0))
    try:
        await lapse(queue, first)
        second = await reserve_one(queue, [first.queue], worker="worker-b")
        late = make_result(task_id=first.id, worker_id="worker-a", value=b"late")
        spent = [(first.id, first.lease_token or "", TaskState.SUCCEEDED, None)]
        assert await queue.finish_many(spent, [late], [], results, None) == [False]
        # What the refused finish announced, if anything, comes before this one's notice.
        marker = make_result()
        results.expect(marker.task_id)
        await results.set(marker)
        assert await results.wait(marker.task_id, 30.0) == marker
        assert not waiting.done(), "a refused completion's result reached a waiting producer"
        won = make_result(task_id=first.id, worker_id="worker-b", value=b"won")
        held = [(second.id, second.lease_token or "", TaskState.SUCCEEDED, None)]
        assert await queue.finish_many(held, [won], [], results, None) == [True]
        assert await asyncio.wait_for(waiting, 30.0) == won, (
            "the waiting producer must get the accepted attempt's result"
        )
    finally:
        waiting.cancel()


def enqueued_event(task: Task) -> TaskEvent:
    """The event the app records for ``task`` before knowing how it is stored."""
    return make_event(
        task_id=task.id,
        queue=task.queue,
        type=EventType.ENQUEUED,
        detail={"name": task.name, "state": "pending"},
    )


async def check_enqueue_recorded(queue: BaseTaskQueue, events: BaseEventStorage) -> None:
    running = await reserved(queue)
    at = wall_clock()  # as the app sets it
    tasks = [
        make_task(created_at=at),
        make_task(id=running.id, queue="elsewhere", name="another:task", created_at=at),
    ]
    expected = [TaskState.PENDING, TaskState.RUNNING]
    if Capability.DELAYED in type(queue).capabilities:
        tasks.append(make_task(created_at=at, eta=at + 3600))
        expected.append(TaskState.SCHEDULED)
    recorded = [enqueued_event(t) for t in tasks]
    stored = await queue.enqueue_recorded(tasks, recorded, events)
    assert [t.state for t in stored] == expected
    assert stored[1].queue == running.queue, "a task that existed is returned as it was stored"
    for task, event in zip(stored, recorded, strict=True):
        [got] = await events.query(task_id=task.id, types=[EventType.ENQUEUED])
        assert got.id == event.id
        assert (got.queue, got.detail) == (
            task.queue,
            {"name": task.name, "state": task.state.value},
        ), "the event carries the task as stored: its state, and its queue and name if it existed"

    # An event that names a worker (an enqueue made by a worker: a retry's fan-out, a
    # schedule's) keeps it, one task alone as in a batch, under a fresh id or not.
    for fresh_id in (False, True):
        alone = make_task(created_at=at)
        named = make_event(
            task_id=alone.id,
            queue=alone.queue,
            type=EventType.ENQUEUED,
            detail={"name": alone.name, "state": "pending"},
            worker_id="w-enqueuer",
        )
        await queue.enqueue_recorded([alone], [named], events, fresh=fresh_id)
        [got] = await events.query(task_id=alone.id, types=[EventType.ENQUEUED])
        assert got.worker_id == "w-enqueuer", "an enqueued event keeps the worker it names"

    quiet = make_task()
    assert [t.id for t in await queue.enqueue_recorded([quiet], [], None)] == [quiet.id], (
        "events off"
    )
    assert await events.query(task_id=quiet.id) == []

    # Under an id the app just made (what delay() says with fresh=True), the same: the
    # task stored ready with its event (or none, events off), and handed out once.
    fresh = [make_task(created_at=at, queue="fresh"), make_task(created_at=at, queue="fresh")]
    for task, its_events in zip(fresh, ([enqueued_event(fresh[0])], []), strict=True):
        [kept] = await queue.enqueue_recorded([task], its_events, events, fresh=True)
        assert (kept.id, kept.state) == (task.id, TaskState.PENDING)
        found = await events.query(task_id=task.id, types=[EventType.ENQUEUED])
        assert len(found) == len(its_events)
    leased: list[Task] = []

    async def all_leased() -> bool:
        leased.extend(await queue.reserve(["fresh"], "w", 60, limit=10))
        return len(leased) >= len(fresh)

    await eventually(all_leased, "tasks enqueued under fresh ids were not all reserved")
    assert sorted(t.id for t in leased) == sorted(t.id for t in fresh), "each once"
    assert await queue.reserve(["fresh"], "w", 60, limit=10) == []


async def check_enqueue_batches(queue: BaseTaskQueue, events: BaseEventStorage) -> None:
    running = await reserved(queue)
    at = wall_clock()
    first = [make_task(created_at=at) for _ in range(2)]
    second = [make_task(id=running.id, created_at=at), make_task(created_at=at)]
    last = [make_task(created_at=at)]
    taken: list[int] = []

    def batches() -> Iterable[tuple[Sequence[Task], Sequence[TaskEvent]]]:
        for number, batch in enumerate([first, second, [], last], 1):
            taken.append(number)
            yield batch, [enqueued_event(t) for t in batch]

    stored = await queue.enqueue_batches(batches(), events)
    assert taken == [1, 2, 3, 4]
    assert [t.id for t in stored] == [t.id for t in [*first, *second, *last]], "in order"
    assert [t.state for t in stored] == [TaskState.PENDING] * 2 + [TaskState.RUNNING] + [
        TaskState.PENDING
    ] * 2
    for task in stored:
        [got] = await events.query(task_id=task.id, types=[EventType.ENQUEUED])
        assert got.detail == {"name": task.name, "state": task.state.value}

    kept = [make_task(created_at=at)]
    never = [make_task(created_at=at)]

    def failing() -> Iterable[tuple[Sequence[Task], Sequence[TaskEvent]]]:
        yield kept, [enqueued_event(t) for t in kept]
        raise ValueError("cannot build the second batch")

    with pytest.raises(ValueError, match="second batch"):
        await queue.enqueue_batches(failing(), events)
    assert await queue.get(never[0].id) is None
    stored_first = await queue.get(kept[0].id)
    if stored_first is not None:  # a backend that sends each batch as built stored the first
        assert [e.task_id for e in await events.query(task_id=kept[0].id)] == [kept[0].id], (
            "a stored task has its event"
        )


async def check_bulk_events_read_back(queue: BaseTaskQueue, events: BaseEventStorage) -> None:
    """A bulk's ``enqueued`` events, one time and one detail for all (as the app makes
    them), read back one by one however the backend stores them: each by its task, by
    time in order with any limit, counted and cleaned up one by one."""
    at = wall_clock()
    ts = 1_600_000_000.0  # (before every other event of these checks)
    batches = [[make_task(created_at=at, queue="bulk-events") for _ in range(n)] for n in (7, 5)]
    detail = {"name": batches[0][0].name, "state": "pending"}
    recorded = [
        [
            make_event(task_id=t.id, queue=t.queue, type=EventType.ENQUEUED, timestamp=ts,
                       detail=detail)
            for t in batch
        ]
        for batch in batches
    ]  # fmt: skip
    await queue.enqueue_batches(iter(list(zip(batches, recorded, strict=True))), events)
    tasks = [t for batch in batches for t in batch]
    ids = [e.id for r in recorded for e in r]
    for task, event_id in zip(tasks, ids, strict=True):
        [got] = await events.query(task_id=task.id)
        assert (got.id, got.task_id, got.timestamp, got.detail) == (event_id, task.id, ts, detail)
    window: dict[str, Any] = {"since": ts, "until": ts + 1}
    assert [e.id for e in await events.query(**window, limit=None)] == ids, "append order"
    for limit in (1, 6, 7, 8, 12, 13):
        oldest = await events.query(**window, limit=limit)
        assert [e.id for e in oldest] == ids[:limit], f"limit {limit}"
        newest = await events.query(**window, limit=limit, order="desc")
        assert len(newest) == min(limit, len(ids)) and {e.id for e in newest} <= set(ids)
    counts = await events.counts(since=ts, until=ts + 1, step=1.0)
    assert [(c.queue, c.type, c.count) for c in counts] == [("bulk-events", "enqueued", len(ids))]
    assert await events.cleanup(ts + 1) == len(ids), "cleanup counts events, not rows"
    assert await events.query(task_id=tasks[3].id) == []


class FinishTests:
    """``finish_many``, ``enqueue_recorded`` and ``enqueue_batches`` (mixed into
    :class:`TaskQueueContract`)."""

    @pytest.fixture
    async def siblings(
        self, task_queue_ref: Any
    ) -> AsyncIterator[tuple[BaseResultStorage, BaseEventStorage]]:
        """Result and event stores from the queue's own ref; skips a backend that has none."""
        async with AsyncExitStack() as stack:
            try:
                results = await stack.enter_async_context(
                    open_store("result_storage", task_queue_ref)
                )
                events = await stack.enter_async_context(
                    open_store("event_storage", task_queue_ref)
                )
            except (UnknownBackendError, IncompatiblePluginError) as exc:
                pytest.skip(f"the backend has no sibling stores: {exc}")
            yield results, events

    async def test_finish_many_with_sibling_stores(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_finish_many(task_queue, *siblings)

    async def test_finish_many_replaces_stored_results_with_sibling_stores(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_finish_many_over_stored_results(task_queue, *siblings)

    async def test_finish_many_with_stores_of_another_backend(
        self, task_queue: BaseTaskQueue
    ) -> None:
        results, events = KeptResults(), KeptEvents()
        await check_finish_many(task_queue, results, events)

    async def test_zombie_finish_leaves_nothing_with_sibling_stores(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_zombie_finish(task_queue, *siblings)

    async def test_zombie_finish_never_reaches_an_expecting_wait(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_zombie_finish_never_reaches_a_wait(task_queue, siblings[0])

    async def test_zombie_finish_leaves_nothing_with_stores_of_another_backend(
        self, task_queue: BaseTaskQueue
    ) -> None:
        await check_zombie_finish(task_queue, KeptResults(), KeptEvents())

    async def test_enqueue_recorded_with_sibling_event_storage(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_enqueue_recorded(task_queue, siblings[1])

    async def test_enqueue_recorded_with_event_storage_of_another_backend(
        self, task_queue: BaseTaskQueue
    ) -> None:
        events = KeptEvents()
        await check_enqueue_recorded(task_queue, events)

    async def test_enqueue_batches_with_sibling_event_storage(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_enqueue_batches(task_queue, siblings[1])

    async def test_enqueue_batches_with_event_storage_of_another_backend(
        self, task_queue: BaseTaskQueue
    ) -> None:
        await check_enqueue_batches(task_queue, KeptEvents())

    async def test_bulk_events_read_back_with_sibling_event_storage(
        self, task_queue: BaseTaskQueue, siblings: tuple[BaseResultStorage, BaseEventStorage]
    ) -> None:
        await check_bulk_events_read_back(task_queue, siblings[1])
