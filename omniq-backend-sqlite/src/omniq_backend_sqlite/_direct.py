"""Short statements run on the event loop's own thread, on a connection that never waits.

Handing a statement to aiosqlite's thread and back costs 70-100 µs of CPU over both
threads on the development VM, more than a one-row transaction itself (an enqueue's
BEGIN, two inserts and COMMIT: ~60 µs). :class:`Direct` is a second, plain
:mod:`sqlite3` connection to the same file, used only from the loop's thread, with
``busy_timeout = 0``: a write that would have to wait for the write lock (another
process, or this process's own connection, is writing) is rolled back at once and the
caller runs it on the thread as before, where waiting does not stall the loop. Nothing
on this connection waits for another process or for the disk: no lock waits, no
checkpoints (they run in ``_checkpoint.py``), and no fsync at COMMIT, which is why
:class:`Database` uses it only with ``synchronous=NORMAL`` in WAL mode (``FULL`` syncs the
WAL at every commit). A transaction can still take milliseconds of wall time, when the
process is preempted or a WAL write is held up while a checkpoint syncs the file (2-8 ms
at 0.3-0.6 ms of CPU, for a few % of them on the loaded development VM); only small
transactions come here (:func:`check_rows`).

Crash safety is SQLite's: a transaction here is the same ``BEGIN IMMEDIATE`` ...
``COMMIT`` as on the thread, so a crash at any point loses only what was not committed.
``PRAGMA data_version`` on this connection changes when any other connection (another
process, or this process's thread) commits: a read of the WAL index in shared memory,
no I/O, which is what the waits poll (see ``SqliteTaskQueue._wait_for_work``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

T = TypeVar("T")


class NotNow:
    """The statement was refused because the database is busy: run it on the thread."""


#: What :class:`Direct` returns instead of a result when the caller must go the slow way.
NOT_NOW: Final = NotNow()


#: Most tasks a transaction may write on the loop's thread (:func:`check_rows`). A
#: batch beyond it runs on the connection's thread: the hand-over costs less than its
#: statements there, and a worker's loop keeps running tasks meanwhile (on two cores,
#: a burst worker did ~25 % fewer tasks a second with its batches on the loop).
DIRECT_ROWS = 4

_local = threading.local()


class Offload(Exception):
    """Raised inside a :class:`Direct` transaction: too large for the loop's thread."""


def check_rows(count: int) -> None:
    """Called by a transaction's function with the number of tasks it will write:
    on the loop's thread, more than :data:`DIRECT_ROWS` sends it to the connection's
    thread (the transaction so far is rolled back)."""
    if count > DIRECT_ROWS and getattr(_local, "direct", False):
        raise Offload


def is_busy(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    return "locked" in str(exc) or "busy" in str(exc)


class Direct:
    """A :mod:`sqlite3` connection for the loop's thread that refuses instead of waiting."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = self._conn = conn
        # BEGIN and COMMIT on a kept cursor: Connection.execute makes a cursor a call.
        self._cursor = conn.cursor()

    @classmethod
    def connect(cls, path: str, synchronous: str) -> Direct:
        """Open (in a worker thread: opening reads the file) a connection to a WAL file
        whose schema exists. ``check_same_thread`` is off because it is opened there."""
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoint.py
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def run(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T | NotNow:
        """``fn(conn, *args, **kwargs)`` in ``BEGIN IMMEDIATE`` ... ``COMMIT``, or
        :data:`NOT_NOW` (everything rolled back) when some step met a lock or ``fn``
        found its batch too large (:func:`check_rows`)."""
        conn, cursor = self._conn, self._cursor
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return NOT_NOW
            raise
        _local.direct = True
        try:
            result = fn(conn, *args, **kwargs)
            cursor.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, Offload) or (
                isinstance(exc, sqlite3.OperationalError) and is_busy(exc)
            ):
                return NOT_NOW
            raise
        finally:
            _local.direct = False
        return result

    def read(self, sql: str, params: Sequence[Any]) -> list[Any] | NotNow:
        """The rows of one short indexed read, or :data:`NOT_NOW` if SQLite said busy
        (a WAL reader only does while another connection recovers the WAL index)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return NOT_NOW
            raise

    def data_version(self) -> int | None:
        """``PRAGMA data_version``: changes whenever another connection commits; None
        when SQLite said busy (the caller then reads as if it had changed)."""
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise
        return int(row[0])

    def close(self) -> None:
        self._conn.close()
