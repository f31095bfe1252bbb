"""WAL checkpoints, run beside the store's connection instead of inside its commits.

With ``synchronous=NORMAL`` a WAL commit does not sync; the syncs happen when the WAL is
copied back into the database file (a checkpoint). SQLite runs that checkpoint inside
the commit that takes the WAL past 1,000 pages, so about one enqueue in a hundred waited
10-40 ms for two fsyncs: more than half of all the time spent committing. Each
:class:`~omniq_backend_sqlite._db.Database` turns SQLite's automatic checkpoint off on its
connection and has this class run a PASSIVE checkpoint (which never blocks a reader or a
writer) on a connection of its own, in a worker thread, as often as the automatic one
would have: what is lost on a power cut stays what ``synchronous=NORMAL`` loses.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

log = logging.getLogger("omniq.sqlite")

#: Rows changed since the last checkpoint that call for the next. A single enqueue
#: changes two rows (task and event) and writes about ten pages, so this is about
#: SQLite's own threshold of 1,000 pages; a bulk enqueue writes fewer pages per row.
CHECKPOINT_CHANGES = 200
#: Seconds after which any change is checkpointed, however few.
CHECKPOINT_AGE = 1.0
#: What the store's connection runs after a background checkpoint (see ``catch_up``).
CATCH_UP = "PRAGMA wal_checkpoint(PASSIVE)"
#: WAL pages (frames) at which a background checkpoint calls for the catch-up. The
#: catch-up runs on the connection's thread and syncs (11-34 ms on the development VM),
#: and the transaction behind it waits: after every checkpoint, that was about one
#: enqueue in a hundred, the p99 latency. Below this the WAL only grows until a
#: checkpoint ends between two writes (any write then starts it over): ~20-25 MB at most
#: under a stream of enqueues, where catching up after every checkpoint kept ~8-11 MB.
CATCH_UP_PAGES = 4_000


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` in a thread once enough has changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = 0  # the connection's total_changes at the last checkpoint
        self._at = 0.0  # monotonic time of the last checkpoint
        self._running: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None
        #: A background checkpoint ended with the WAL at CATCH_UP_PAGES or more: the
        #: store's connection runs a short one (the frames written meanwhile) before its
        #: next transaction, which lets that transaction start the WAL over instead of
        #: growing it.
        self.catch_up = False

    def changed(self, total_changes: int, now: float | None = None) -> None:
        """Called after each statement or transaction with the store connection's
        ``total_changes`` (and ``time.monotonic()`` when the caller has it): start a
        checkpoint when due and none is running. No I/O."""
        if total_changes == self._seen or self._running is not None:
            return
        if now is None:
            now = time.monotonic()  # (the loop's time() would cost a getpid call: _db.py)
        if total_changes - self._seen < CHECKPOINT_CHANGES and now - self._at < CHECKPOINT_AGE:
            return
        self._seen, self._at = total_changes, now
        self._running = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            pages = await asyncio.to_thread(self._run)
            self.catch_up = pages >= CATCH_UP_PAGES
        except Exception:  # a busy or vanished file: the next one will do
            log.debug("checkpoint of %s failed", self.path, exc_info=True)
        finally:
            self._running = None

    def _run(self) -> int:
        """Checkpoint; return the WAL's size in pages (its frames)."""
        if self._conn is None:
            # (used by one thread at a time: only one checkpoint runs at once)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        [(_, pages, _)] = self._conn.execute(CATCH_UP).fetchall()
        return int(pages)

    async def close(self) -> None:
        """Wait for a running checkpoint, then close its connection (the store's own
        connection, closed last, checkpoints what is left, as SQLite always does)."""
        running = self._running
        if running is not None:
            await asyncio.shield(running)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
