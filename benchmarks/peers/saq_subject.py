"""SAQ (Redis) as a benchmark subject; the worker is ``saq peers.saq_subject.settings``
(``settings_burst`` for burst mode: SAQ's burst is a worker setting, not a CLI flag).

SAQ has no bulk enqueue, so "bulk" is ``BATCH_WIDTH`` concurrent ``enqueue`` calls at a
time. Latency polls the job record every ``POLL`` seconds, as SAQ's own ``Queue.apply``
does: ``Job.refresh(until_complete=...)`` subscribes only after reading the job, so it
misses a completion that lands in between and then hangs until its timeout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, ClassVar

from saq import Queue
from saq.job import TERMINAL_STATUSES, Status

from . import CONCURRENCY, NAME, POLL, REDIS_URL, gather_chunked, window
from .cleanup import redis_delete

queue = Queue.from_url(REDIS_URL, name=NAME)


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op task."""


settings: dict[str, Any] = {"queue": queue, "functions": [noop], "concurrency": CONCURRENCY}
#: Burst mode needs a positive dequeue timeout: the worker stops once a dequeue waits this
#: long for nothing (after the last task, so outside the measured window).
settings_burst: dict[str, Any] = {**settings, "burst": True, "dequeue_timeout": 0.5}


class SaqSubject:
    name = "saq"
    notes: ClassVar[list[str]] = [
        "bulk = 100 concurrent enqueue calls at a time (no bulk API)",
        f"latency by polling the job every {POLL}s (as Queue.apply does)",
    ]

    async def open(self) -> None:
        await queue.connect()
        await self.clear()

    async def close(self) -> None:
        await self.clear()
        await queue.disconnect()

    async def enqueue_one(self) -> str:
        job = await queue.enqueue("noop")
        assert job is not None
        return job.key

    async def enqueue_bulk(self, n: int) -> list[str]:
        return await gather_chunked(self.enqueue_one, n)

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, ["saq:*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "saq",
            "peers.saq_subject.settings" + ("_burst" if burst else ""),
            "--quiet",
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        spans: list[tuple[float, float] | None] = []
        for i in range(0, len(task_ids), 1000):
            for job in await queue.jobs(task_ids[i : i + 1000]):
                ok = job is not None and job.status == Status.COMPLETE
                spans.append((job.started / 1000, job.completed / 1000) if ok and job else None)
        return window(spans, task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (job := await queue.job(task_id)) is None or job.status not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"SAQ job {task_id} not done after {timeout:g} s")
            await asyncio.sleep(POLL)
        if job.status != Status.COMPLETE:
            raise RuntimeError(f"SAQ job {task_id} ended {job.status}")
