"""BullMQ's Python port (Redis) as a benchmark subject, run in its own virtualenv
(``.venv-peers-bullmq``: it needs redis-py >= 6.2, arq < 6) through ``peers/remote.py``.

The port has no worker CLI: its documented worker is a script that builds a ``Worker``
and waits for a signal, which is this module's ``__main__`` (``python -m
peers.bullmq_subject``), one process with ``concurrency`` 10. It has no burst mode (the
harness stops it once every task is done). Bulk is ``Queue.addBulk`` (one pipelined
transaction); latency waits for the job's ``completed`` event from ``QueueEvents`` (the
port has no ``waitUntilFinished``), checking the job record once after subscribing, as
the Node ``waitUntilFinished`` does, so a completion that landed before is not missed.
The processing window comes from the jobs' ``processedOn`` / ``finishedOn``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any, ClassVar

from bullmq import Job, Queue, QueueEvents, Worker

from . import CONCURRENCY, NAME, REDIS_URL, map_chunked, window
from .cleanup import redis_delete

PREFIX = f"{NAME}-bullmq"
OPTIONS: dict[str, Any] = {"connection": REDIS_URL, "prefix": PREFIX}


async def noop(job: Job, token: str) -> None:
    """The no-op task."""


async def run_worker() -> None:
    """One worker process until SIGTERM or SIGINT, then a graceful close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(NAME, noop, {**OPTIONS, "concurrency": CONCURRENCY})
    await stop.wait()
    await worker.close()


class BullmqSubject:
    name = "bullmq"
    has_burst = False
    notes: ClassVar[list[str]] = [
        "own virtualenv (redis-py >= 6.2), driven through peers/remote.py",
        "bulk = Queue.addBulk; latency via QueueEvents 'completed'; no burst mode",
    ]

    def __init__(self) -> None:
        self.queue: Queue | None = None
        self.events: QueueEvents | None = None

    async def open(self) -> None:
        await self.clear()
        self.queue = Queue(NAME, OPTIONS)
        self.events = QueueEvents(NAME, OPTIONS)

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()
        if self.queue is not None:
            await self.queue.close()
        await self.clear()

    async def enqueue_one(self) -> str:
        assert self.queue is not None
        return str((await self.queue.add("noop", {})).id)

    async def enqueue_bulk(self, n: int) -> list[str]:
        assert self.queue is not None
        jobs = await self.queue.addBulk([{"name": "noop", "data": {}} for _ in range(n)])
        return [str(job.id) for job in jobs]

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, [f"{PREFIX}:*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [sys.executable, "-m", "peers.bullmq_subject"]

    async def _job(self, task_id: str) -> Job | None:
        assert self.queue is not None
        return await Job.fromId(self.queue, task_id)

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        def span(job: Job | None) -> tuple[float, float] | None:
            if job is None or not job.finishedOn or job.failedReason:
                return None
            return job.processedOn / 1000, job.finishedOn / 1000

        return window([span(job) for job in await map_chunked(self._job, task_ids)], task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        assert self.events is not None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def completed(*_: Any) -> None:
            if not done.done():
                done.set_result(None)

        def failed(args: dict[str, Any], *_: Any) -> None:
            if not done.done():
                done.set_exception(RuntimeError(f"bullmq job {task_id} failed: {args}"))

        self.events.on(f"completed:{task_id}", completed)
        self.events.on(f"failed:{task_id}", failed)
        try:
            job = await self._job(task_id)
            if job is not None and job.finishedOn:
                if job.failedReason:
                    raise RuntimeError(f"bullmq job {task_id} failed: {job.failedReason}")
                return
            await asyncio.wait_for(done, timeout)
        finally:
            self.events.off(f"completed:{task_id}", completed)
            self.events.off(f"failed:{task_id}", failed)


if __name__ == "__main__":
    asyncio.run(run_worker())
