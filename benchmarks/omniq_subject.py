"""OmniQ as a benchmark subject (see harness.Subject)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench_tasks import app, noop_async, noop_sync

from omniq import OmniQ
from omniq.config import WorkerConfig
from omniq.models import TaskState

#: Results are read in chunks, so a large n does not become one huge query.
CHUNK = 1000


def prefetch(concurrency: int | None) -> int | None:
    """The worker's ``--prefetch`` for compare.py's ``--batch-size`` (``OMNIQ_BENCH_BATCH_SIZE``):
    a reserve takes up to concurrency + prefetch tasks, so a batch of 100 is prefetch 90
    (at least 0), the same take per round trip as pgqueuer's ``--batch-size``. Unset: the
    worker's own default (4 x concurrency, 50 in all)."""
    batch = os.environ.get("OMNIQ_BENCH_BATCH_SIZE")
    if not batch:
        return None
    return max(int(batch) - (concurrency or WorkerConfig().concurrency), 0)


class OmniQSubject:
    name = "omniq"

    def __init__(
        self, pool: str | None, concurrency: int | None, task_kind: str, log_level: str = "INFO"
    ) -> None:
        self.pool = pool
        self.log_level = log_level
        self.concurrency = concurrency
        self.task: Any = noop_async if task_kind == "async" else noop_sync

    async def open(self) -> None:
        await app.open()

    async def close(self) -> None:
        await app.close()

    async def enqueue_one(self) -> str:
        return (await self.task.delay()).id

    def enqueue_singles_sync(self, n: int) -> float:
        """Seconds for ``n`` ``delay()`` calls through the blocking API: a sync app on the
        same stores (from the same environment), opened before the clock starts, with
        the same task registered under the same name."""
        sync_app = OmniQ()
        task = sync_app.task(name=self.task.name)(self.task.fn)
        sync_app.open()
        try:
            started = time.perf_counter()
            for _ in range(n):
                task.delay()
            return time.perf_counter() - started
        finally:
            sync_app.close()

    async def enqueue_bulk(self, n: int) -> list[str]:
        return [ref.id for ref in await app.enqueue_many(self.task, [()] * n)]

    async def clear(self) -> None:
        await app.purge()

    def worker_command(self, burst: bool) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "omniq.cli",
            "worker",
            "--app",
            "bench_tasks:app",
            "--no-progress",
            "--log-level",
            self.log_level,
        ]
        if self.pool:
            command += ["--pool", self.pool]
        if self.concurrency:
            command += ["--concurrency", str(self.concurrency)]
        extra = prefetch(self.concurrency)
        if extra is not None:
            command += ["--prefetch", str(extra)]
        return command + (["--burst"] if burst else [])

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        first, last = float("inf"), 0.0
        for i in range(0, len(task_ids), CHUNK):
            chunk = task_ids[i : i + CHUNK]
            results = await app.result_storage.get_many(chunk)
            unfinished = [
                t for t in chunk if t not in results or results[t].state is not TaskState.SUCCEEDED
            ]
            if unfinished:
                raise RuntimeError(
                    f"{len(unfinished)} task(s) did not succeed, e.g. {unfinished[0]}"
                )
            first = min(first, *(r.started_at or r.finished_at for r in results.values()))
            last = max(last, *(r.finished_at for r in results.values()))
        return first, last

    async def wait_result(self, task_id: str, timeout: float) -> None:
        await app.get_result(task_id, timeout=timeout)
