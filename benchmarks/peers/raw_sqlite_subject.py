"""SQLite with the standard library's ``sqlite3`` and no queue library: the "raw" row on
SQLite.

A file of its own in ``SQLITE_DIR`` with OmniQ's pragmas (WAL, ``synchronous=NORMAL``,
a busy timeout). Enqueue is one ``INSERT`` and its commit per call; bulk is one
``executemany`` in one transaction. The burst worker (``python -m
peers.raw_sqlite_subject --burst``) deletes ``BATCH_SIZE`` rows per transaction
(``DELETE ... RETURNING``) until none is left. SQLite has no way to wake another
process, so in latency mode the worker polls the table every ``POLL_S`` (1 ms) and
writes a reply row per id, and the producer polls for that row every 1 ms too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from . import BATCH_SIZE, SQLITE_DIR
from .cleanup import sqlite_remove
from .raw import RawSubject, Tally, run_worker

PATH = Path(SQLITE_DIR) / "raw.db"
#: Seconds between two polls of the worker (for jobs) and of the producer (for a reply).
POLL_S = 0.001
TAKE = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT ?) RETURNING id"


def connect() -> sqlite3.Connection:
    """Autocommit mode (``isolation_level=None``): a lone statement is its own
    transaction, a ``BEGIN`` opens a longer one."""
    conn = sqlite3.connect(PATH, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class RawSqliteSubject(RawSubject):
    module = "peers.raw_sqlite_subject"
    notes: ClassVar[list[str]] = [
        (
            "one INSERT + commit per enqueue; bulk = executemany in one transaction; WAL, "
            "synchronous=NORMAL"
        ),
        (
            f"worker: DELETE ... LIMIT {BATCH_SIZE} RETURNING per transaction (no result); "
            "latency: the worker polls the table every 1 ms and writes a reply row, the "
            "producer polls for it every 1 ms"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await sqlite_remove(PATH)
        self.conn = connect()
        self.conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        self.conn.execute("CREATE TABLE replies (id INTEGER PRIMARY KEY)")

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        await sqlite_remove(PATH)
        self.remove_window_file()

    async def enqueue_one(self) -> str:
        assert self.conn is not None
        task_id = self.new_id()
        self.conn.execute("INSERT INTO jobs (id, payload) VALUES (?, 'noop')", (int(task_id),))
        return task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        assert self.conn is not None
        ids = self.new_ids(n)
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO jobs (id, payload) VALUES (?, 'noop')", [(int(i),) for i in ids]
        )
        self.conn.execute("COMMIT")
        return ids

    async def clear(self) -> None:
        assert self.conn is not None
        self.conn.execute("DELETE FROM jobs")
        self.conn.execute("DELETE FROM replies")

    async def wait_result(self, task_id: str, timeout: float) -> None:
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.conn.execute("SELECT 1 FROM replies WHERE id = ?", (int(task_id),))
            if found.fetchone() is not None:
                return
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"no reply to {task_id} within {timeout:g} s")


async def work(burst: bool) -> Tally | None:
    conn = connect()
    try:
        tally = Tally()
        while True:
            began = time.time()
            conn.execute("BEGIN IMMEDIATE")
            taken = [row[0] for row in conn.execute(TAKE, (BATCH_SIZE,)).fetchall()]
            if taken and not burst:
                conn.executemany("INSERT INTO replies (id) VALUES (?)", [(i,) for i in taken])
            conn.execute("COMMIT")
            tally.took(began, len(taken))
            if not taken:
                if burst:
                    return tally
                await asyncio.sleep(POLL_S)
    finally:
        conn.close()


if __name__ == "__main__":
    run_worker(work)
