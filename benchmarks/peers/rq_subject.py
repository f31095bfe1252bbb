"""RQ (Redis) as a benchmark subject; the worker is ``rq worker --burst`` with
``SimpleWorker``.

RQ is synchronous and runs one job at a time per worker process: there is no
concurrency setting. Its default worker forks a child per job; ``SimpleWorker`` runs
jobs in the worker process itself, which is RQ's fastest single-process setup and the
one measured here. Bulk is ``Queue.enqueue_many`` (one Redis pipeline). Latency uses
``Job.latest_result(timeout=...)``, which blocks on the job's result stream. The sync
Redis calls block the producer's event loop, which is harmless: the harness is
sequential.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from . import NAME, REDIS_URL, window
from .cleanup import redis_delete

TASK = "peers.rq_subject.noop"


def noop() -> None:
    """The no-op task."""


class RqSubject:
    name = "rq"
    max_n = 20_000
    max_n_reason = "RQ runs one job at a time (~370/s), so 100,000 would take ~5 min"
    notes: ClassVar[list[str]] = [
        "SimpleWorker (no fork per job), one job at a time (RQ has no concurrency setting)",
        "bulk = Queue.enqueue_many (one pipeline); latency via Job.latest_result(timeout)",
    ]

    def __init__(self) -> None:
        self.redis = Redis.from_url(REDIS_URL)
        self.queue = Queue(NAME, connection=self.redis)

    async def open(self) -> None:
        await self.clear()

    async def close(self) -> None:
        await self.clear()
        self.redis.close()

    async def enqueue_one(self) -> str:
        return self.queue.enqueue(TASK).id

    async def enqueue_bulk(self, n: int) -> list[str]:
        return [
            job.id for job in self.queue.enqueue_many([Queue.prepare_data(TASK) for _ in range(n)])
        ]

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, ["rq:*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--url",
            REDIS_URL,
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--quiet",
            *(["--burst"] if burst else []),
            NAME,
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        spans: list[tuple[float, float] | None] = []
        for i in range(0, len(task_ids), 1000):
            for job in Job.fetch_many(task_ids[i : i + 1000], connection=self.redis):
                ok = job is not None and job.get_status(refresh=False) == JobStatus.FINISHED
                spans.append(
                    (job.started_at.timestamp(), job.ended_at.timestamp())
                    if ok and job and job.started_at and job.ended_at
                    else None
                )
        return window(spans, task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        result = Job.fetch(task_id, connection=self.redis).latest_result(
            timeout=max(1, round(timeout))
        )
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {task_id} has no successful result")
