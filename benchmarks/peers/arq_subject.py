"""arq (Redis) as a benchmark subject; the worker is ``arq peers.arq_subject.WorkerSettings``.

arq has no bulk enqueue (each ``enqueue_job`` is its own WATCH/MULTI transaction), so
"bulk" is ``BATCH_WIDTH`` concurrent single enqueues at a time. Its worker polls the
queue every ``poll_delay`` (default 0.5 s, which caps throughput at ~200 tasks/s and
adds up to 0.5 s latency), so the benchmark sets it to ``POLL``; its documented await,
``Job.result()``, polls too, at the same interval.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job

from . import CONCURRENCY, NAME, POLL, REDIS_URL, gather_chunked, map_chunked, window
from .cleanup import redis_delete

QUEUE = f"{NAME}:arq"


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op task."""


class WorkerSettings:
    functions: ClassVar[list[Callable[..., Any]]] = [noop]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    max_jobs = CONCURRENCY
    poll_delay = POLL
    keep_result = 3600


class ArqSubject:
    name = "arq"
    notes: ClassVar[list[str]] = [
        "bulk = 100 concurrent enqueue_job calls at a time (no bulk API)",
        f"worker poll_delay={POLL}s (default 0.5 s); latency via Job.result(poll_delay={POLL})",
    ]

    def __init__(self) -> None:
        self.redis: ArqRedis | None = None

    async def open(self) -> None:
        self.redis = await create_pool(WorkerSettings.redis_settings, default_queue_name=QUEUE)
        await self.clear()

    async def close(self) -> None:
        await self.clear()
        assert self.redis is not None
        await self.redis.aclose()

    async def enqueue_one(self) -> str:
        assert self.redis is not None
        job = await self.redis.enqueue_job("noop")
        assert job is not None
        return job.job_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        return await gather_chunked(self.enqueue_one, n)

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, ["arq:*", f"{QUEUE}*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "arq",
            "peers.arq_subject.WorkerSettings",
            *(["--burst"] if burst else []),
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        async def span(task_id: str) -> tuple[float, float] | None:
            info = await self._job(task_id).result_info()
            if info is None or not info.success:
                return None
            return info.start_time.timestamp(), info.finish_time.timestamp()

        return window(await map_chunked(span, task_ids), task_ids)

    def _job(self, task_id: str) -> Job:
        assert self.redis is not None
        return Job(task_id, self.redis, _queue_name=QUEUE)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        await self._job(task_id).result(timeout=timeout, poll_delay=POLL)
