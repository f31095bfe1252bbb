"""Taskiq on NATS JetStream (taskiq-nats) as a benchmark subject; the worker is
``taskiq worker peers.taskiq_nats_subject:broker``.

The broker is ``PullBasedJetStreamBroker`` (durable pull consumer, ack after the result
is saved: at-least-once) with its default of one message per pull: a larger
``pull_consume_batch`` without a ``pull_consume_timeout`` waits until that many messages
are there, so a lone task is never picked up. Results go to
``NATSObjectStoreResultBackend``. As with taskiq on Redis:
no bulk enqueue (``BATCH_WIDTH`` concurrent ``kiq`` calls), no burst mode, and the no-op
returns its finish time because taskiq stores no timestamps.
"""

from __future__ import annotations

import sys
import time
from typing import ClassVar

import nats
from taskiq import AsyncTaskiqTask
from taskiq_nats import PullBasedJetStreamBroker
from taskiq_nats.result_backend import NATSObjectStoreResultBackend

from . import CONCURRENCY, NAME, NATS_URL, POLL, gather_chunked
from .cleanup import nats_delete_streams
from .taskiq_records import taskiq_window

STREAM = f"{NAME}-taskiq"
BUCKET = f"{STREAM}-results"

broker = PullBasedJetStreamBroker(
    NATS_URL,
    subject=f"{NAME}.taskiq",
    stream_name=STREAM,
    durable=STREAM,
).with_result_backend(NATSObjectStoreResultBackend(NATS_URL, bucket_name=BUCKET))


@broker.task
async def noop() -> float:
    """The no-op task; returns when it finished (taskiq stores no timestamps)."""
    return time.time()


class TaskiqNatsSubject:
    name = "taskiq-nats"
    has_burst = False
    notes: ClassVar[list[str]] = [
        (
            "PullBasedJetStreamBroker (one message per pull, its default)"
            " + NATSObjectStoreResultBackend"
        ),
        "bulk = 100 concurrent kiq calls at a time (no bulk API); no burst mode",
        f"latency via wait_result(check_interval={POLL})",
    ]

    async def open(self) -> None:
        await nats_delete_streams(NATS_URL, (STREAM, f"OBJ_{BUCKET}"))
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()
        await nats_delete_streams(NATS_URL, (STREAM, f"OBJ_{BUCKET}"))

    async def enqueue_one(self) -> str:
        return (await noop.kiq()).task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        return await gather_chunked(self.enqueue_one, n)

    async def clear(self) -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().purge_stream(STREAM)
        finally:
            await nc.close()

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "peers.taskiq_nats_subject:broker",
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
