"""An idle worker's waits (part of :class:`~omniq.testing.TaskQueueContract`): where the
wait for work wakes on new work (``reserve_drains``) the reserves after a drain are only
a safety net, so they may come late, but a delayed task must still start on time and a
lost wake-up must still be caught within ``poll_interval``. Run with a real worker in
this process on an app whose three stores are the queue's ref (skipped for a backend
without sibling result and event stores)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ..interfaces import BaseTaskQueue, Capability
from .base import open_app
from .capabilities import requires
from .polling import eventually

__all__ = ["IdleWaitTests", "check_delayed_task_starts_on_time", "check_lost_wake_up_is_caught"]


class IdleWaitTests:
    """Mixed into the task-queue contract: what an idle worker's waits must keep."""

    async def test_an_idle_worker_starts_a_delayed_task_on_time(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        requires(task_queue, Capability.BLOCKING_RESERVE)
        await check_delayed_task_starts_on_time(task_queue_ref)

    async def test_an_idle_worker_catches_a_lost_wake_up_within_poll_interval(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        requires(task_queue, Capability.BLOCKING_RESERVE)
        await check_lost_wake_up_is_caught(task_queue_ref)


async def _run_one(app: Any, task: Any) -> None:
    """One task through the worker: afterwards its reserve has drained the queue."""
    await app.get_result(await task.delay(), timeout=10)


async def check_delayed_task_starts_on_time(ref: Any, *, late: float = 1.0) -> None:
    """A task delayed by 0.3 s, enqueued while the worker waits after a drain, starts at
    its eta and less than ``late`` seconds after it, with ``poll_interval`` far longer
    (a wait that ignored the eta would start it seconds late)."""
    async with open_app(ref) as app:
        started: list[float] = []

        @app.task
        async def mark() -> None:
            started.append(time.time())

        worker = app.worker(pool="async", poll_interval=30.0)
        running = asyncio.create_task(worker.run(install_signals=False))
        try:
            await _run_one(app, mark)
            for pause in (0.0, 0.05):  # in the worker's first wait, then in a later one
                await asyncio.sleep(pause)
                eta = time.time() + 0.3
                ref = await mark.apply(eta=eta)
                await app.get_result(ref, timeout=10)
                assert eta - 0.05 <= started[-1] < eta + late, (started[-1] - eta, pause)
        finally:
            worker.request_stop("test")
            await asyncio.wait_for(running, 10)


async def check_lost_wake_up_is_caught(ref: Any, *, poll_interval: float = 0.3) -> None:
    """With every wake-up lost (the queue's wait made deaf: it only sleeps), a task still
    runs, because no wait of the worker is longer than ``poll_interval``."""
    async with open_app(ref) as app:

        @app.task
        async def noop() -> None:
            pass

        worker = app.worker(pool="async", poll_interval=poll_interval)
        queue = app.task_queue
        timeouts: list[float] = []

        async def deaf(queues: Sequence[str], timeout: float) -> None:
            timeouts.append(timeout)
            await asyncio.sleep(timeout)

        running = asyncio.create_task(worker.run(install_signals=False))
        try:
            await _run_one(app, noop)
            queue.wait_for_work = deaf  # type: ignore[method-assign]

            async def asleep() -> bool:
                return bool(timeouts)

            await eventually(asleep, "the worker never waited for work")
            await app.get_result(await noop.delay(), timeout=10)
            assert timeouts and max(timeouts) <= poll_interval, timeouts
        finally:
            worker.request_stop("test")
            await asyncio.wait_for(running, 10)
