"""PgQueuer (PostgreSQL) as a benchmark subject; the worker is
``pgq run peers.pgqueuer_subject:create --mode drain``.

PgQueuer's objects live in their own schema (``PGQUEUER_SCHEMA``) with a prefix (so its
database-wide NOTIFY channel is ours too), dropped afterwards. Bulk is the list form of
``Queries.enqueue`` (one statement). The processing window comes from the
``pgqueuer_log`` rows (``picked`` / ``successful``), and latency uses
``CompletionWatcher`` (LISTEN/NOTIFY), its documented await, with a 1 ms debounce
instead of the default 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import ClassVar

from . import BATCH_SIZE, NAME, POSTGRES_URL, window
from .cleanup import postgres_drop_schema

SCHEMA = f"{NAME}_pgqueuer"
# Read by pgqueuer's settings at first use, here and (inherited) in the worker process.
os.environ.setdefault("PGQUEUER_SCHEMA", SCHEMA)
os.environ.setdefault("PGQUEUER_PREFIX", f"{NAME}_")

import asyncpg  # noqa: E402
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries  # noqa: E402
from pgqueuer.core.completion import CompletionWatcher  # noqa: E402
from pgqueuer.domain.settings import db_settings  # noqa: E402


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The worker's factory: one connection, one no-op entrypoint."""
    conn = await asyncpg.connect(POSTGRES_URL)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """The no-op task."""

    try:
        yield pgq
    finally:
        await conn.close()


class PgQueuerSubject:
    name = "pgqueuer"
    notes: ClassVar[list[str]] = [
        "bulk = Queries.enqueue with lists (one statement)",
        "window from pgqueuer_log; latency via CompletionWatcher(debounce=1 ms)",
    ]

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.queries: Queries | None = None
        self.watcher: CompletionWatcher | None = None

    async def open(self) -> None:
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)
        conn = await asyncpg.connect(POSTGRES_URL)
        self.stack.push_async_callback(conn.close)
        self.queries = Queries(AsyncpgDriver(conn))
        await self.queries.install()
        listen = AsyncpgDriver(await asyncpg.connect(POSTGRES_URL))
        self.watcher = await self.stack.enter_async_context(
            CompletionWatcher(listen, queries=Queries(listen), debounce=timedelta(milliseconds=1))
        )

    async def close(self) -> None:
        await self.stack.aclose()
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)

    async def enqueue_one(self) -> str:
        assert self.queries is not None
        return str((await self.queries.enqueue("noop", None))[0])

    async def enqueue_bulk(self, n: int) -> list[str]:
        assert self.queries is not None
        return [str(i) for i in await self.queries.enqueue(["noop"] * n, [None] * n, [0] * n)]

    async def clear(self) -> None:
        assert self.queries is not None
        await self.queries.clear_queue()
        await self.queries.clear_queue_log()

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pgqueuer",
            "run",
            "peers.pgqueuer_subject:create",
            "--batch-size",
            str(BATCH_SIZE),
            "--mode",
            "drain" if burst else "continuous",
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        assert self.queries is not None
        log = db_settings().queue_table_log
        rows = await self.queries.driver.fetch(
            "SELECT job_id,"
            " extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))::float8 AS started,"
            " extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8"
            " AS finished"
            f" FROM {SCHEMA}.{log} WHERE job_id = ANY($1::bigint[]) GROUP BY job_id",
            [int(t) for t in task_ids],
        )
        spans = {
            str(r["job_id"]): (r["started"] or r["finished"], r["finished"])
            for r in rows
            if r["finished"]
        }
        return window([spans.get(t) for t in task_ids], task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        assert self.watcher is not None
        status = await asyncio.wait_for(self.watcher.wait_for(int(task_id)), timeout)
        if status != "successful":
            raise RuntimeError(f"pgqueuer job {task_id} ended {status}")
