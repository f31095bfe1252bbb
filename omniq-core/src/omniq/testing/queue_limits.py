"""Task-queue tests for global rate and concurrency limits (``Capability.LIMITS``):
the store decides at reserve time, against state every reserver shares, and a task a
limit holds back is neither leased nor charged an attempt.

The multi-process tests run real workers (``spawn`` children, entry points at module
level) and judge the limits by the times the store itself wrote: ``started_at`` (set
by reserve) and ``finished_at``, on the store's clock, which is the clock the limits
are judged by.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest

from ..errors import ConfigError, IncompatiblePluginError, UnknownBackendError
from ..interfaces import BaseTaskQueue, Capability
from ..limits import Limits
from ..models import Task, TaskState
from .actions import LONG, TIME_PRECISION
from .base import open_stores
from .capabilities import requires
from .factories import make_task
from .polling import SHORT, eventually, wait_past

__all__ = ["LimitTests", "max_in_window", "max_overlap"]

RATED = "omniq_conformance.rated"
CAPPED = "omniq_conformance.capped"
OTHER = "omniq_conformance.other"
#: Seconds between starts in the single-process rate tests.
EVERY = 0.5
#: Seconds a spawned worker may take to start, import the backend and finish its share.
CHILD_DEADLINE = 120.0


def max_in_window(starts: Sequence[float], window: float) -> int:
    """The most starts in any half-open window ``[t, t + window)``. Times round-trip
    through a store to within ``TIME_PRECISION``, so the window is read that much
    shorter: two starts exactly ``window`` apart must not count as one window's."""
    ordered = sorted(starts)
    most, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] <= t - (window - TIME_PRECISION):
            j += 1
        most = max(most, i - j + 1)
    return most


def max_overlap(spans: Sequence[tuple[float, float]]) -> int:
    """The most ``[start, finish)`` spans holding one moment (a span ending within
    ``TIME_PRECISION`` of another's start does not overlap it)."""
    return max(
        (sum(1 for s, f in spans if s <= at < f - TIME_PRECISION) for at, _ in spans), default=0
    )


def _worker_child(
    ref: Any, rate: str | None, cap: int | None, lease: float, burst: bool, out: Any
) -> None:
    """``spawn`` child: a real worker on ``ref`` whose app declares the limits; reports
    ``None`` or a traceback when it stops."""
    from ..app import AsyncOmniQ
    from ..context import current_task

    async def main() -> None:
        app = AsyncOmniQ(
            task_queue=ref, result_storage=ref, event_storage=ref, events=False, lease=lease
        )

        @app.task(name=RATED, rate_limit=rate, concurrency_limit=cap)
        async def limited(seconds: float, hang_first: bool = False) -> None:
            context = current_task()
            if hang_first and context is not None and context.attempt == 1:
                await asyncio.sleep(3600)  # until this process is killed
            await asyncio.sleep(seconds)

        async with app:
            await app.run_worker(concurrency=4, burst=burst, poll_interval=0.2)

    try:
        asyncio.run(main())
        out.put(None)
    except BaseException:  # reported to the parent, which fails the test with it
        out.put(traceback.format_exc())


async def _next_start(queue: BaseTaskQueue, limits: Limits, what: str) -> list[Task]:
    """The tasks of the first limited reserve that leases any. A store may put the tasks
    a limit held back out of sight until the limit may allow them (NATS puts their
    messages back with a delay), so they can show a moment after that: poll."""

    async def started() -> list[Task]:
        return (await queue.reserve_limited(["default"], "worker-2", LONG, 10, limits)).tasks

    return await eventually(started, what)


class _Workers:
    """Spawned worker processes, killed on exit if still alive."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.out = self.ctx.Queue()
        self.children: list[Any] = []

    def start(
        self, ref: Any, *, rate: str | None = None, cap: int | None = None, **options: Any
    ) -> Any:
        lease, burst = options.get("lease", 30.0), options.get("burst", True)
        child = self.ctx.Process(
            target=_worker_child, args=(ref, rate, cap, lease, burst, self.out), daemon=True
        )
        child.start()
        self.children.append(child)
        return child

    async def reports(self, count: int) -> None:
        """Wait for ``count`` workers to stop; fail with a child's traceback."""
        for _ in range(count):
            try:
                error = await anyio.to_thread.run_sync(self.out.get, True, CHILD_DEADLINE)
            except queue.Empty:
                pytest.fail(f"a worker process did not finish within {CHILD_DEADLINE} s")
            assert error is None, f"a worker process failed:\n{error}"

    def close(self) -> None:
        for child in self.children:
            child.join(0.1)
            if child.is_alive():
                child.kill()
                child.join(10.0)


class LimitTests:
    """Global limits (mixed into :class:`TaskQueueContract`)."""

    async def _limited_tasks(self, queue: BaseTaskQueue, ids: Sequence[str]) -> list[Task]:
        found = [await queue.get(i) for i in ids]
        return [t for t in found if t is not None]

    async def test_a_store_without_limits_refuses_a_limited_reserve(
        self, task_queue: BaseTaskQueue
    ) -> None:
        if Capability.LIMITS in type(task_queue).capabilities:
            pytest.skip("the store declares Capability.LIMITS")
        with pytest.raises(ConfigError, match=r"Capability\.LIMITS"):
            await task_queue.reserve_limited(
                ["default"], "worker-1", LONG, 1, Limits.build(task_rates={RATED: "1/s"})
            )

    async def test_a_rate_lets_one_task_start_per_interval_and_defers_the_rest(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.LIMITS)
        rated = await task_queue.enqueue_many([make_task(name=RATED) for _ in range(3)])
        other = await task_queue.enqueue(make_task(name=OTHER))
        limits = Limits.build(task_rates={RATED: EVERY})
        first = await task_queue.reserve_limited(["default"], "worker-1", LONG, 10, limits)
        assert [t.id for t in first.tasks] == [rated[0].id, other.id], (
            "one rated task starts, and the unlimited task behind the deferred ones too"
        )
        assert first.deferred and first.retry_in is not None
        assert 0 < first.retry_in <= EVERY + TIME_PRECISION, first.retry_in
        for held in await self._limited_tasks(task_queue, [rated[1].id, rated[2].id]):
            assert held.state is TaskState.PENDING and held.attempts == 0, (
                f"a deferred task is not leased nor charged an attempt: {held}"
            )
            assert held.lease_token is None and held.lease_owner is None
        again = await task_queue.reserve_limited(["default"], "worker-1", LONG, 10, limits)
        assert again.tasks == [] and again.deferred and again.retry_in is not None
        started = first.tasks[0].started_at
        assert started is not None
        await wait_past(task_queue, started + EVERY)
        later = await _next_start(task_queue, limits, "the rate never allowed the next start")
        assert [t.id for t in later] == [rated[1].id], "the next one, in order"
        gap = (later[0].started_at or 0) - started
        assert gap >= EVERY - TIME_PRECISION, f"two starts {gap} s apart under a {EVERY} s rate"

    async def test_a_queue_rate_holds_every_task_of_the_queue(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.LIMITS)
        mixed = await task_queue.enqueue_many(
            [make_task(name=n, queue="limited") for n in (RATED, OTHER, OTHER)]
        )
        free = await task_queue.enqueue(make_task(name=OTHER))
        limits = Limits.build(queue_rates={"limited": "1/m"})
        got = await task_queue.reserve_limited(["limited", "default"], "worker-1", LONG, 10, limits)
        assert {t.id for t in got.tasks} == {mixed[0].id, free.id}, (
            "one task of the rated queue starts, whatever its name; other queues are free"
        )
        assert got.deferred and got.retry_in is not None and 0 < got.retry_in <= 60.0

    async def test_the_rate_is_shared_by_every_reserver(self, task_queue_ref: Any) -> None:
        async with open_stores("task_queue", task_queue_ref, 2) as (one, two):
            requires(one, Capability.LIMITS)
            limits = Limits.build(task_rates={RATED: "1/m"})
            await one.enqueue(make_task(name=RATED))
            assert len((await one.reserve_limited(["default"], "w-1", LONG, 5, limits)).tasks) == 1
            await one.enqueue(make_task(name=RATED))
            other = await two.reserve_limited(["default"], "w-2", LONG, 5, limits)
            assert other.tasks == [] and other.deferred, (
                "the rate's state lives in the store: another instance sees it spent"
            )

    async def test_a_concurrency_limit_counts_running_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.LIMITS)
        capped = await task_queue.enqueue_many([make_task(name=CAPPED) for _ in range(4)])
        limits = Limits.build(task_concurrency={CAPPED: 2})
        got = await task_queue.reserve_limited(["default"], "worker-1", LONG, 10, limits)
        assert [t.id for t in got.tasks] == [t.id for t in capped[:2]]
        assert got.deferred and got.retry_in is None, "a concurrency limit has no retry time"
        held = await task_queue.reserve_limited(["default"], "worker-2", LONG, 10, limits)
        assert held.tasks == [] and held.deferred
        one = got.tasks[0]
        assert await task_queue.complete(one.id, one.lease_token or "", TaskState.SUCCEEDED)
        after = await _next_start(task_queue, limits, "a finished task never freed its slot")
        assert [t.id for t in after] == [capped[2].id], "the next one, in order"
        two = got.tasks[1]
        assert await task_queue.retry(two.id, two.lease_token or "", await task_queue.now())
        last = await _next_start(task_queue, limits, "a task sent to retry never freed its slot")
        assert len(last) == 1, "one slot was freed"

    async def test_a_lapsed_lease_frees_its_slot_at_its_deadline(
        self, task_queue: BaseTaskQueue
    ) -> None:
        requires(task_queue, Capability.LIMITS)
        capped = await task_queue.enqueue_many([make_task(name=CAPPED) for _ in range(2)])
        limits = Limits.build(task_concurrency={CAPPED: 1})
        got = await task_queue.reserve_limited(["default"], "worker-1", SHORT, 10, limits)
        assert [t.id for t in got.tasks] == [capped[0].id]
        assert got.tasks[0].lease_deadline is not None
        await wait_past(task_queue, got.tasks[0].lease_deadline)

        async def freed() -> list[Task]:
            # (the same lease as above: a store may tie its redelivery timing to it)
            return (await task_queue.reserve_limited(["default"], "w-2", SHORT, 1, limits)).tasks

        taken = await eventually(freed, "a lapsed lease never gave its slot back")
        assert [t.id for t in taken] == [capped[1].id], (
            "the slot comes back at the lease deadline, before lease recovery runs"
        )

    # -- real worker processes ---------------------------------------------------------

    @asynccontextmanager
    async def _limited_app(self, ref: Any) -> AsyncIterator[Any]:
        from ..app import AsyncOmniQ

        try:
            app = AsyncOmniQ(task_queue=ref, result_storage=ref, event_storage=ref, events=False)
        except (UnknownBackendError, IncompatiblePluginError) as exc:
            pytest.skip(f"the backend has no sibling stores: {exc}")
        requires(app.task_queue, Capability.LIMITS, Capability.CROSS_PROCESS)

        @app.task(name=RATED)
        async def limited(seconds: float, hang_first: bool = False) -> None:
            raise AssertionError("run by the worker processes only")

        async with app:
            yield app

    async def _limited_finished(self, app: Any, ids: Sequence[str]) -> list[Task]:
        tasks = await self._limited_tasks(app.task_queue, ids)
        states = [t.state for t in tasks]
        assert states == [TaskState.SUCCEEDED] * len(ids), f"every task succeeds: {states}"
        return tasks

    async def test_a_rate_holds_across_worker_processes(self, task_queue_ref: Any) -> None:
        """10/s over two worker processes: never more than 10 starts in any second, so
        50 tasks take at least 4.9 s from first start to last."""
        async with self._limited_app(task_queue_ref) as app:
            refs = await app.enqueue_many(app.tasks[RATED], [(0.0,)] * 50)
            workers = _Workers()
            try:
                for _ in range(2):
                    workers.start(task_queue_ref, rate="10/s")
                await workers.reports(2)
            finally:
                workers.close()
            tasks = await self._limited_finished(app, [r.id for r in refs])
            starts = [t.started_at or 0.0 for t in tasks]
            most = max_in_window(starts, 1.0)
            assert most <= 10, f"{most} tasks started within one second under '10/s'"
            span = max(starts) - min(starts)
            assert span >= 4.9 - TIME_PRECISION, f"50 starts at 10/s took only {span:.2f} s"

    async def test_a_concurrency_limit_holds_across_worker_processes(
        self, task_queue_ref: Any
    ) -> None:
        async with self._limited_app(task_queue_ref) as app:
            refs = await app.enqueue_many(app.tasks[RATED], [(0.3,)] * 8)
            workers = _Workers()
            try:
                for _ in range(2):
                    workers.start(task_queue_ref, cap=2)
                await workers.reports(2)
            finally:
                workers.close()
            tasks = await self._limited_finished(app, [r.id for r in refs])
            spans = [(t.started_at or 0.0, t.finished_at or 0.0) for t in tasks]
            most = max_overlap(spans)
            assert most <= 2, f"{most} tasks ran at once under concurrency_limit=2: {spans}"

    async def test_a_killed_workers_slots_come_back_when_its_leases_lapse(
        self, task_queue_ref: Any
    ) -> None:
        lease = 2.0
        async with self._limited_app(task_queue_ref) as app:
            queue = app.task_queue
            hung = await app.enqueue_many(app.tasks[RATED], [(0.0, True)] * 2)
            last = await app.enqueue_many(app.tasks[RATED], [(0.0,)])
            workers = _Workers()
            try:
                doomed = workers.start(task_queue_ref, cap=2, lease=lease, burst=False)

                async def both_running() -> bool:
                    found = await self._limited_tasks(queue, [r.id for r in hung])
                    return all(t.state is TaskState.RUNNING for t in found)

                await eventually(both_running, "the first worker never ran both tasks", deadline=60)
                doomed.kill()  # SIGKILL: no drain, no release, leases left to lapse
                await anyio.to_thread.run_sync(doomed.join, 10.0)
                held = await self._limited_tasks(queue, [r.id for r in hung])
                lapse_at = min(t.lease_deadline or 0.0 for t in held)
                workers.start(task_queue_ref, cap=2, lease=lease)
                await workers.reports(1)
            finally:
                workers.close()
            tasks = await self._limited_finished(app, [r.id for r in [*hung, *last]])
            started = tasks[-1].started_at or 0.0
            assert started >= lapse_at - TIME_PRECISION, (
                f"the third task started at {started}, before the killed worker's leases "
                f"lapsed at {lapse_at}: the limit did not count them"
            )
