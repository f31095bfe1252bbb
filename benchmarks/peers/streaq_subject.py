"""streaQ (Redis) as a benchmark subject; the worker is
``streaq run peers.streaq_subject:worker`` (``--burst`` for burst mode), one process.

streaQ's ``Worker`` is both the producer's client (entered as an async context manager)
and the worker; its queue name is ours, so every key is under ``streaq:omniqbench``.
Bulk is ``Worker.enqueue_many`` (one pipeline); latency is ``Task.result()``'s own wait
(it subscribes to the task's channel, then reads the result, so an early completion is
not missed). The processing window comes from the stored results' start / finish times.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any, ClassVar

from streaq import Worker
from streaq.constants import REDIS_PREFIX

from . import CONCURRENCY, NAME, REDIS_URL, window
from .cleanup import redis_delete

worker: Worker[Any] = Worker(redis_url=REDIS_URL, queue_name=NAME, concurrency=CONCURRENCY)


@worker.task
async def noop() -> None:
    """The no-op task."""


class StreaqSubject:
    name = "streaq"
    notes: ClassVar[list[str]] = [
        "bulk = Worker.enqueue_many (one pipeline); latency via Task.result()",
    ]

    async def open(self) -> None:
        await self.clear()
        await worker.__aenter__()

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)
        await self.clear()

    async def enqueue_one(self) -> str:
        return (await noop.enqueue()).id

    async def enqueue_bulk(self, n: int) -> list[str]:
        tasks = [noop.enqueue() for _ in range(n)]
        await worker.enqueue_many(tasks)
        return [task.id for task in tasks]

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, [f"{REDIS_PREFIX}{NAME}*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streaq",
            "run",
            "peers.streaq_subject:worker",
            *(["--burst"] if burst else []),
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        prefix = worker.results_key
        spans: list[tuple[float, float] | None] = []
        for i in range(0, len(task_ids), 1000):
            chunk = task_ids[i : i + 1000]
            for raw in await worker.redis.mget([prefix + task_id for task_id in chunk]):
                data = await worker.deserialize(raw) if raw is not None else None
                ok = data is not None and data["s"]
                spans.append((data["st"] / 1000, data["ft"] / 1000) if ok and data else None)
        return window(spans, task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        result = await worker.result_by_id(task_id, timeout=timedelta(seconds=timeout))
        if not result.success:
            raise RuntimeError(f"streaQ task {task_id} failed: {result.exception!r}")
