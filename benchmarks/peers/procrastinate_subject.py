"""Procrastinate (PostgreSQL) as a benchmark subject; the worker is
``procrastinate --app=peers.procrastinate_subject.app worker --one-shot``.

Procrastinate's tables live in their own schema (``search_path`` on every connection),
dropped afterwards. Bulk is ``Task.batch_defer_async`` (one INSERT). Procrastinate has
no result store: the processing window comes from its ``procrastinate_events`` rows
(``started`` / ``succeeded``), and latency polls the job's status every ``POLL``
seconds (``JobManager.get_job_status_async``), its documented way to follow a job.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import ClassVar

from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status

from . import CONCURRENCY, NAME, POLL, POSTGRES_URL, window
from .cleanup import postgres_drop_schema

SCHEMA = f"{NAME}_procrastinate"

app = App(
    connector=PsycopgConnector(
        conninfo=POSTGRES_URL, kwargs={"options": f"-c search_path={SCHEMA}"}
    )
)


@app.task(name="noop")
async def noop() -> None:
    """The no-op task."""


SPANS = """
SELECT job_id,
       extract(epoch FROM min(at) FILTER (WHERE type = 'started'))::float8 AS started,
       extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))::float8 AS finished
  FROM procrastinate_events WHERE job_id = ANY(%(ids)s) GROUP BY job_id
"""


class ProcrastinateSubject:
    name = "procrastinate"
    max_n = 20_000
    max_n_reason = "procrastinate processes ~630/s, so 100,000 would take ~3 min"
    notes: ClassVar[list[str]] = [
        "bulk = Task.batch_defer_async (one INSERT)",
        (
            "window from procrastinate_events; latency by polling the job status every "
            f"{POLL}s (no result store)"
        ),
    ]

    async def open(self) -> None:
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)
        await app.open_async()
        await app.connector.execute_query_async(f"CREATE SCHEMA {SCHEMA}")  # type: ignore[arg-type]
        await app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await app.close_async()
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)

    async def enqueue_one(self) -> str:
        return str(await noop.defer_async())

    async def enqueue_bulk(self, n: int) -> list[str]:
        return [str(i) for i in await noop.batch_defer_async(*({} for _ in range(n)))]

    async def clear(self) -> None:
        await app.connector.execute_query_async("DELETE FROM procrastinate_jobs")

    def worker_command(self, burst: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=peers.procrastinate_subject.app",
            "worker",
            "--concurrency",
            str(CONCURRENCY),
            "--one-shot" if burst else "--wait",
        ]

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        rows = await app.connector.execute_query_all_async(SPANS, ids=[int(t) for t in task_ids])
        spans = {
            str(r["job_id"]): (r["started"], r["finished"])
            for r in rows
            if r["finished"] is not None
        }
        return window([spans.get(t) for t in task_ids], task_ids)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (status := await app.job_manager.get_job_status_async(int(task_id))) in (
            Status.TODO,
            Status.DOING,
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"procrastinate job {task_id} not done after {timeout:g} s")
            await asyncio.sleep(POLL)
        if status != Status.SUCCEEDED:
            raise RuntimeError(f"procrastinate job {task_id} ended {status}")
