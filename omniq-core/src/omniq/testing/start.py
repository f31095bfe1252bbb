"""A starting worker's sweep (part of :class:`~omniq.testing.TaskQueueContract`): the
task queue's cleanup it runs as it starts (ttls, what a crashed worker left) is over
before it reserves, so its first tasks do not run beside a scan of every record. Run
with a real worker in this process on an app whose three stores are the queue's ref
(skipped for a backend without sibling result and event stores)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..interfaces import BaseTaskQueue
from ..models import TaskState
from .base import open_app
from .polling import SHORT, wait_past

__all__ = ["StartSweepTests", "check_sweep_before_first_task"]


class StartSweepTests:
    """Mixed into the task-queue contract: a worker sweeps before its first reserve."""

    async def test_a_starting_worker_sweeps_before_its_first_task(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        await check_sweep_before_first_task(task_queue_ref)


async def check_sweep_before_first_task(ref: Any) -> None:
    """A task whose ttl passed before any worker ran is marked ``EXPIRED`` by the start
    sweep, which is over by the time the worker's first task runs: that task, enqueued
    after it, reads it expired."""
    async with open_app(ref) as app:
        seen: list[TaskState] = []

        @app.task
        async def noop() -> None:
            pass

        @app.task
        async def look(task_id: str) -> None:
            seen.append((await app.get_task(task_id)).state)

        stale = await noop.apply(ttl=SHORT)
        expires_at = (await app.get_task(stale.id)).expires_at
        assert expires_at is not None
        await wait_past(app.task_queue, expires_at)
        probe = await look.delay(stale.id)
        worker = app.worker(pool="async")
        running = asyncio.create_task(worker.run(install_signals=False))
        try:
            await app.get_result(probe, timeout=10)
            assert seen == [TaskState.EXPIRED], seen
        finally:
            worker.request_stop("test")
            await asyncio.wait_for(running, 10)
