"""Oban for Python (PostgreSQL, psycopg 3) as a benchmark subject, run in its own
virtualenv (``.venv-peers-oban``: it needs Python >= 3.12) through ``peers/remote.py``.

The worker is its own CLI, ``oban start --queues omniqbench:10`` (one process, 10 jobs at
a time), in the schema ``omniqbench_oban`` (Oban's ``prefix``); ``--cron-modules`` names
this module so that the CLI imports the worker class instead of searching the working
directory for it. Oban has no burst mode (the harness stops the worker once every job is
done) and no result store: latency polls ``Oban.get_job`` every ``POLL`` seconds. Bulk
is ``Oban.enqueue_many`` (one connection, one INSERT per job). The processing window
comes from the jobs' ``attempted_at`` / ``completed_at``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, ClassVar

from oban import Job, Oban, worker
from oban.schema import install
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from . import CONCURRENCY, NAME, POLL, POSTGRES_URL, window

SCHEMA = f"{NAME}_oban"
DONE = {"completed", "discarded", "cancelled"}


@worker(queue=NAME)
class Noop:
    """The no-op task."""

    async def process(self, job: Job) -> None:
        return None


class ObanSubject:
    name = "oban"
    has_burst = False
    notes: ClassVar[list[str]] = [
        "own virtualenv (Python 3.12), driven through peers/remote.py",
        f"bulk = Oban.enqueue_many; latency by polling get_job every {POLL}s",
        "no result store, no burst mode",
    ]

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool | None = None
        self.oban: Oban | None = None

    async def _execute(self, statement: sql.Composable, *params: Any) -> list[Any]:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, params or None)
            return await cursor.fetchall() if cursor.description else []

    async def _drop_schema(self) -> None:
        await self._execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
        )

    async def open(self) -> None:
        self.pool = await Oban.create_pool(POSTGRES_URL)
        await self._drop_schema()
        await self._execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        await install(self.pool, prefix=SCHEMA)
        self.oban = await Oban(pool=self.pool, prefix=SCHEMA).start()  # a client: no queues

    async def close(self) -> None:
        if self.oban is not None:
            await self.oban.stop()
        if self.pool is not None:
            await self._drop_schema()
            await self.pool.close()

    async def enqueue_one(self) -> str:
        assert self.oban is not None
        return str((await self.oban.enqueue(Noop.new())).id)

    async def enqueue_bulk(self, n: int) -> list[str]:
        assert self.oban is not None
        return [str(job.id) for job in await self.oban.enqueue_many(Noop.new() for _ in range(n))]

    async def clear(self) -> None:
        await self._execute(sql.SQL("DELETE FROM {}.oban_jobs").format(sql.Identifier(SCHEMA)))

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "oban",
            "start",
            "--dsn",
            POSTGRES_URL,
            "--prefix",
            SCHEMA,
            "--queues",
            f"{NAME}:{CONCURRENCY}",
            "--cron-modules",
            __name__,
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        rows = await self._execute(
            sql.SQL(
                "SELECT id, extract(epoch FROM attempted_at)::float8,"
                " extract(epoch FROM completed_at)::float8"
                " FROM {}.oban_jobs WHERE id = ANY(%s) AND state = 'completed'"
            ).format(sql.Identifier(SCHEMA)),
            [int(t) for t in task_ids],
        )
        spans = {str(job_id): (started, finished) for job_id, started, finished in rows}
        return window([spans.get(t) for t in task_ids], task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        assert self.oban is not None
        deadline = time.monotonic() + timeout
        while (job := await self.oban.get_job(int(task_id))) is None or job.state not in DONE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Oban job {task_id} not done after {timeout:g} s")
            await asyncio.sleep(POLL)
        if job.state != "completed":
            raise RuntimeError(f"Oban job {task_id} ended {job.state}")
