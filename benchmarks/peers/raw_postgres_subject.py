"""PostgreSQL with psycopg 3 (async) and no queue library: the "raw" row on PostgreSQL.

The table ``jobs (id bigint primary key, payload text)`` lives in its own schema,
dropped afterwards. Enqueue is one autocommitted statement per call: the ``INSERT`` and
a ``pg_notify`` on the jobs channel (OmniQ's enqueue notifies its workers too). Bulk is
one ``COPY`` in one transaction, then one notify. The burst worker (``python -m
peers.raw_postgres_subject --burst``) deletes ``BATCH_SIZE`` rows per statement with
``FOR UPDATE SKIP LOCKED`` until none is left; in latency mode it LISTENs on the jobs
channel, takes the rows the same way, and writes a reply row per id with a
``pg_notify`` of the id, which the producer LISTENs for before reading the row.
"""

from __future__ import annotations

import time
from typing import ClassVar

import psycopg

from . import BATCH_SIZE, NAME, POSTGRES_URL
from .cleanup import postgres_drop_schema
from .raw import RawSubject, Tally, run_worker

SCHEMA = f"{NAME}_raw"
JOBS_CHANNEL = f"{NAME}_raw_jobs"
REPLIES_CHANNEL = f"{NAME}_raw_replies"

ENQUEUE = (
    f"WITH j AS (INSERT INTO {SCHEMA}.jobs (id, payload) VALUES (%s, 'noop'))"
    f" SELECT pg_notify('{JOBS_CHANNEL}', '')"
)
TAKE = (
    f"DELETE FROM {SCHEMA}.jobs WHERE id IN (SELECT id FROM {SCHEMA}.jobs ORDER BY id"
    " LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
)
REPLY = (
    f"WITH r AS (INSERT INTO {SCHEMA}.replies (id) SELECT unnest(%(ids)s::bigint[]))"
    f" SELECT pg_notify('{REPLIES_CHANNEL}', i::text) FROM unnest(%(ids)s::bigint[]) i"
)


class RawPostgresSubject(RawSubject):
    module = "peers.raw_postgres_subject"
    notes: ClassVar[list[str]] = [
        "one autocommitted INSERT + pg_notify per enqueue; bulk = one COPY in one transaction",
        (
            f"worker: DELETE ... LIMIT {BATCH_SIZE} FOR UPDATE SKIP LOCKED RETURNING (no result);"
            " latency: it LISTENs, writes a reply row + NOTIFY, the producer LISTENs, reads the row"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conn: psycopg.AsyncConnection | None = None
        self.listen: psycopg.AsyncConnection | None = None

    async def open(self) -> None:
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)
        self.conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        await self.conn.execute(f"CREATE SCHEMA {SCHEMA}")
        await self.conn.execute(
            f"CREATE TABLE {SCHEMA}.jobs (id bigint PRIMARY KEY, payload text NOT NULL)"
        )
        await self.conn.execute(f"CREATE TABLE {SCHEMA}.replies (id bigint PRIMARY KEY)")
        self.listen = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        await self.listen.execute(f"LISTEN {REPLIES_CHANNEL}")

    async def close(self) -> None:
        for conn in (self.conn, self.listen):
            if conn is not None:
                await conn.close()
        await postgres_drop_schema(POSTGRES_URL, SCHEMA)
        self.remove_window_file()

    async def enqueue_one(self) -> str:
        assert self.conn is not None
        task_id = self.new_id()
        await self.conn.execute(ENQUEUE, (int(task_id),))
        return task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        assert self.conn is not None
        ids = self.new_ids(n)
        async with self.conn.transaction(), self.conn.cursor() as cur:
            async with cur.copy(f"COPY {SCHEMA}.jobs (id, payload) FROM STDIN") as copy:
                for task_id in ids:
                    await copy.write_row((int(task_id), "noop"))
            await cur.execute(f"NOTIFY {JOBS_CHANNEL}")
        return ids

    async def clear(self) -> None:
        assert self.conn is not None
        await self.conn.execute(f"TRUNCATE {SCHEMA}.jobs, {SCHEMA}.replies")

    async def wait_result(self, task_id: str, timeout: float) -> None:
        assert self.conn is not None and self.listen is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            async for note in self.listen.notifies(timeout=left):
                if note.payload == task_id:
                    cur = await self.conn.execute(
                        f"SELECT id FROM {SCHEMA}.replies WHERE id = %s", (int(task_id),)
                    )
                    if await cur.fetchone() is None:
                        raise RuntimeError(f"notified of {task_id} without its reply row")
                    return
        raise RuntimeError(f"no reply to {task_id} within {timeout:g} s")


async def work(burst: bool) -> Tally | None:
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    listen = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    try:

        async def take() -> list[int]:
            cur = await conn.execute(TAKE, (BATCH_SIZE,))
            return [row[0] for row in await cur.fetchall()]

        if burst:
            tally = Tally()
            while True:
                began = time.time()
                taken = await take()
                if not taken:
                    return tally
                tally.took(began, len(taken))
        await listen.execute(f"LISTEN {JOBS_CHANNEL}")
        while True:
            taken = await take()
            if taken:
                await conn.execute(REPLY, {"ids": taken})
                continue
            # A notification sent while the worker was taking waits in the socket, so
            # none is missed; the timeout is only a safety net.
            async for _ in listen.notifies(timeout=1.0, stop_after=1):
                pass
    finally:
        await conn.close()
        await listen.close()


if __name__ == "__main__":
    run_worker(work)
