"""Taskiq on Redis (taskiq-redis) as a benchmark subject; the worker is
``taskiq worker peers.taskiq_redis_subject:broker``.

The broker is ``RedisStreamBroker`` (consumer group + XACK after the result is saved,
taskiq's at-least-once choice, like OmniQ's delivery); results go to
``RedisAsyncResultBackend``. Taskiq has no bulk enqueue (``BATCH_WIDTH`` concurrent
``kiq`` calls at a time), no burst mode (the harness stops the worker once every task is
done) and no task timestamps: the no-op returns its finish time and the start is that
minus taskiq's recorded ``execution_time``. Latency uses ``wait_result``, which polls.
"""

from __future__ import annotations

import sys
import time
from typing import ClassVar

from taskiq import AsyncTaskiqTask
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from . import CONCURRENCY, NAME, POLL, REDIS_URL, gather_chunked
from .cleanup import redis_delete
from .taskiq_records import taskiq_window

PREFIX = f"{NAME}-taskiq"

# consumer_id="0": a group the worker creates after tasks were queued still delivers them
# (the default "$" would skip everything added before the worker started).
broker = RedisStreamBroker(
    REDIS_URL, queue_name=PREFIX, consumer_group_name=PREFIX, consumer_id="0"
).with_result_backend(RedisAsyncResultBackend(REDIS_URL, prefix_str=PREFIX, result_ex_time=3600))


@broker.task
async def noop() -> float:
    """The no-op task; returns when it finished (taskiq stores no timestamps)."""
    return time.time()


class TaskiqRedisSubject:
    name = "taskiq"
    has_burst = False
    notes: ClassVar[list[str]] = [
        "RedisStreamBroker (acks after the result is saved) + RedisAsyncResultBackend",
        "bulk = 100 concurrent kiq calls at a time (no bulk API); no burst mode",
        f"latency via wait_result(check_interval={POLL})",
    ]

    async def open(self) -> None:
        await self.clear()
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()
        await self.clear()

    async def enqueue_one(self) -> str:
        return (await noop.kiq()).task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        return await gather_chunked(self.enqueue_one, n)

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, [f"{PREFIX}*"])

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "peers.taskiq_redis_subject:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(CONCURRENCY),
            "--no-configure-logging",
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        return await taskiq_window(broker.result_backend, task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        await AsyncTaskiqTask(task_id, broker.result_backend).wait_result(
            check_interval=POLL, timeout=timeout
        )
