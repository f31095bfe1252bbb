"""What the three stores share: URL and options, the connection, transactions, schema.

One store instance holds one aiosqlite connection (one thread). Work on it is serialised
by an ``asyncio.Lock`` so two coroutines never interleave statements inside one
transaction; across processes, every state change runs inside ``BEGIN IMMEDIATE``,
which takes SQLite's single write lock up front (waiting up to ``busy_timeout``), so a
read-then-write can never race another process or fail half-way with SQLITE_BUSY.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import unquote, urlsplit

import aiosqlite
import msgspec

from omniq.config import mask_url
from omniq.errors import ConfigError, QueueError
from omniq.options import Option, OptionSchema

from ._checkpoint import CATCH_UP, Checkpointer
from ._direct import DIRECT_ROWS, NOT_NOW, Direct, NotNow, is_busy
from ._schema import SCHEMA_VERSION, SchemaVersionError, StoreKind, create_schema
from ._wake import WalWatch, signal_commit, watch_wal

#: Used for ``sqlite://`` (what the registry passes when a config names only the
#: plugin): the same file as omniq's default URL ``sqlite:///omniq.db``.
DEFAULT_PATH = "omniq.db"
MEMORY = ":memory:"
#: RETURNING and UPDATE ... FROM (3.35), JSON functions built in.
MIN_SQLITE = (3, 35, 0)
SYNCHRONOUS = ("NORMAL", "FULL")

#: Seconds between checks of a wait that a WAL watch wakes (only a commit by something
#: other than an OmniQ store goes unsignalled). Every wake-up costs ~60 µs of CPU, and
#: on a loaded machine a process's CPU time is its latency.
WATCHED_TICK = 0.02

#: Seconds of transactions on the loop's thread between two yields to the event loop
#: (see :meth:`Database.run_sized`).
YIELD_EVERY = 0.001

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """A parsed ``sqlite://`` URL plus options."""

    path: str  # a file path, or ":memory:"
    busy_timeout: float = 30.0  # seconds to wait for the write lock
    synchronous: str = "NORMAL"
    poll_interval: float = 0.05  # seconds between checks in wait_for_work
    create: bool = True  # False: a missing file is an error (read-only commands)

    @property
    def memory(self) -> bool:
        return self.path == MEMORY

    @functools.cached_property
    def resolved(self) -> Path:
        """The file's absolute path, resolved once: ``same_file`` is asked on every
        enqueue and finish, and resolving is a system call per path component."""
        return Path(self.path).resolve()

    def same_file(self, other: Settings) -> bool:
        """True when both name one database file (two ":memory:" are two databases)."""
        return not (self.memory or other.memory) and self.resolved == other.resolved


#: The options of every SQLite store (:mod:`omniq.options`).
OPTIONS = OptionSchema(
    "sqlite",
    (
        Option(
            "busy_timeout",
            "duration",
            30.0,
            "How long a write waits for another process's write transaction before failing "
            "with QueueError.",
            minimum=0,
            above=True,
        ),
        Option(
            "synchronous",
            "enum",
            "NORMAL",
            "SQLite's synchronous pragma; see *What can be lost* (OFF would lose committed "
            "tasks on power loss).",
            choices=SYNCHRONOUS,
        ),
        Option(
            "poll_interval",
            "duration",
            0.05,
            "How long wait_for_work waits between checks.",
            minimum=0,
            above=True,
        ),
        Option(
            "create",
            "bool",
            True,
            "Create the database file when it is missing. The CLI's inspection and operator "
            "commands open with false, so a mistyped path is an error, not a new empty database.",
        ),
    ),
)


def parse_settings(url: str, options: Mapping[str, Any], store: Any = None) -> Settings:
    """``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite:///:memory:``, ``sqlite://``.

    Options come from the query string and from keyword arguments (keywords win).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigError(
            f"not a sqlite URL: {mask_url(url)!r}; expected sqlite:///path/to/file.db"
        )
    values = OPTIONS.parse(url, options, store)
    if parts.netloc:
        raise ConfigError(
            f"sqlite URL {mask_url(url)!r} has a host part {parts.netloc.rpartition('@')[2]!r}; "
            f"SQLite has no server: use three slashes for a relative path (sqlite:///omniq.db) "
            f"or four for an absolute one (sqlite:////var/lib/omniq.db)"
        )
    raw_path = unquote(parts.path)
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    return Settings(path=path or DEFAULT_PATH, **values.values)


def _missing_file(path: str) -> str | None:
    """The absolute form of ``path`` when no file is there, else ``None``: file-system
    calls, which :meth:`Database.open` runs in a thread, off the event loop."""
    where = Path(path)
    return None if where.is_file() else str(where.absolute())


class Database:
    """One connection, opened with WAL and the schema for one store kind."""

    def __init__(self, settings: Settings, kind: StoreKind) -> None:
        self.settings = settings
        self.kind = kind
        self._conn: aiosqlite.Connection | None = None
        #: The loop thread's connection (_direct.py): a file in WAL mode with
        #: synchronous=NORMAL only, where its commits never sync.
        self._direct: Direct | None = None
        self._watch: WalWatch | None = None  # see next_commit
        self._watch_tried = False
        self._total_changes = 0  # both connections' total_changes at the last _changed
        self._yielded_at = 0.0  # monotonic time of the last yield after a Direct transaction
        self._wal_path = os.fsencode(f"{settings.path}-wal")  # (bytes: no encoding per commit)
        self._lock = asyncio.Lock()
        self._checkpointer = None if settings.memory else Checkpointer(settings.path)

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise QueueError(
                f"sqlite store on {self.settings.path!r} is not open: call open() first"
            )
        return self._conn

    async def open(self) -> None:
        if self._conn is not None:
            return
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"omniq-backend-sqlite needs SQLite >= {'.'.join(map(str, MIN_SQLITE))}; this "
                f"Python links SQLite {sqlite3.sqlite_version}"
            )
        path = self.settings.path
        if (
            not self.settings.memory
            and not self.settings.create
            and (missing := await asyncio.to_thread(_missing_file, path)) is not None
        ):
            raise ConfigError(
                f"SQLite database {missing!r} does not exist (opened with "
                f"create=false, as the CLI's inspection commands do): check the path, or start a "
                f"worker or enqueue a task to create it"
            )
        if not self.settings.memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Some SQLite steps of opening (switching to WAL, recovering the WAL index while
        # another process checkpoints) report "locked" at once instead of calling the
        # busy handler: several workers starting together on one file met that. Opening
        # is retried until busy_timeout, as a locked write would wait.
        deadline = time.monotonic() + self.settings.busy_timeout
        while True:
            conn = await _connection(path)
            try:
                await self._prepare(conn, path)
                return
            except BaseException as exc:
                self._conn = None
                await conn.close()
                if not isinstance(exc, sqlite3.DatabaseError):
                    raise
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise ConfigError(f"cannot open SQLite database {path!r}: {exc}") from exc
            await asyncio.sleep(0.05)

    async def _prepare(self, conn: aiosqlite.Connection, path: str) -> None:
        """The connection's pragmas and the store's schema (see :meth:`open`)."""
        await conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout * 1000)}")
        if not self.settings.memory:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoint.py
        await conn.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
        self._conn = conn
        async with self.transaction():
            await create_schema(conn, self.kind, path)
        if not self.settings.memory and self.settings.synchronous == "NORMAL":
            self._direct = await asyncio.to_thread(Direct.connect, path, "NORMAL")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        direct, self._direct = self._direct, None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        if direct is not None:  # before the last connection, which checkpoints on close
            direct.close()
        if conn is not None:
            async with self._lock:
                if self._checkpointer is not None:
                    await self._checkpointer.close()
                await _close_connection(conn)

    def _catch_up_due(self) -> bool:
        checkpointer = self._checkpointer
        return checkpointer is not None and checkpointer.catch_up

    def _catch_up(self) -> bool:
        """Whether the next transaction first checkpoints what a background checkpoint
        left (see _checkpoint.py); asked once per transaction."""
        checkpointer = self._checkpointer
        if checkpointer is None or not checkpointer.catch_up:
            return False
        checkpointer.catch_up = False
        return True

    def _changed(self, conn: aiosqlite.Connection, now: float | None = None) -> None:
        """After a statement or transaction: when it changed rows (on either
        connection: the sum only grows), signal the waiters (_wake.py) and let the
        checkpointer see how much has changed (``now``: ``time.monotonic()`` if the
        caller has read it)."""
        direct = self._direct
        # (aiosqlite's total_changes and Direct's are properties: the attributes behind
        # them, read by every delay())
        total = conn._connection.total_changes  # type: ignore[union-attr]  # (open)
        if direct is not None:
            total += direct.conn.total_changes
        if total == self._total_changes:
            return
        self._total_changes = total
        checkpointer = self._checkpointer
        if checkpointer is not None:  # (a file: a memory database has none)
            signal_commit(self._wal_path)
            checkpointer.changed(total, now)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (also on
        cancellation: statements run in order on the connection's thread)."""
        async with self._lock:
            conn = self.conn
            if self._catch_up():
                await conn.execute(CATCH_UP)
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                self._raise_if_locked(exc)
                raise
            except BaseException:
                # Cancelled while waiting for the write lock: the BEGIN still runs on the
                # connection's thread, and must not leave the file locked.
                await _rollback(conn)
                raise
            try:
                yield conn
            except BaseException:
                await _rollback(conn)
                raise
            await conn.execute("COMMIT")
            self._changed(conn)

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(connection, *args)`` in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the
        connection's thread, with the plain :mod:`sqlite3` connection: one hand-over to
        that thread and back for the whole transaction. (Each awaited statement of
        :meth:`transaction` is one: a thread switch each way costs more than a small
        statement, so an enqueue of five statements spent most of its time switching.)
        Rolled back if ``fn`` raises, or if the caller is cancelled before the
        transaction reaches its COMMIT (while it waits for the write lock, say): the
        thread checks for that once it holds the lock and again before committing.

        First, unless a checkpoint's catch-up is due (which runs on the thread), the
        whole transaction is tried on the loop's thread (:class:`Direct`), which costs
        no hand-over; it goes to the thread when the write lock is taken. ``fn`` must
        therefore have no effect but its statements (it may be run twice, the first
        run rolled back)."""
        return await self.run_sized(0, fn, *args, **kwargs)

    async def run_sized(
        self,
        size: int,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """:meth:`run` for a batch of about ``size`` tasks: one larger than
        ``DIRECT_ROWS`` goes to the connection's thread at once, without first
        beginning (and rolling back) the transaction on the loop's thread."""
        direct = self._direct
        checkpointer = self._checkpointer
        if (
            direct is not None
            and size <= DIRECT_ROWS
            and (checkpointer is None or not checkpointer.catch_up)  # (_catch_up_due)
        ):
            conn = self._conn or self.conn  # (the property raises once closed)
            done = direct.run(fn, args, kwargs)
            if done is not NOT_NOW:
                now = time.monotonic()
                self._changed(conn, now)
                # Run nothing here suspends: without a yield, a caller awaiting enqueues
                # in a loop would never let the event loop run anything else (a
                # checkpoint: the WAL grew to 240 MB over 6,000 enqueues; a server's
                # requests). Once per YIELD_EVERY is enough for those, and a yield per
                # transaction (a pass of the loop, a system call) was ~5 % of a delay().
                # (time.monotonic, not the loop's time(): asyncio.get_running_loop
                # makes a getpid system call in Python 3.11)
                if now - self._yielded_at >= YIELD_EVERY:
                    self._yielded_at = now
                    await asyncio.sleep(0)
                return done  # type: ignore[return-value]  # (not NOT_NOW)
        async with self._lock:
            conn = self.conn
            cancelled: list[bool] = []
            try:
                # aiosqlite runs functions on its thread with _execute, the one way it
                # has to run several statements in one hand-over (used since 0.11).
                result: T = await conn._execute(  # type: ignore[no-untyped-call]
                    _in_transaction, conn._connection, self._catch_up(), cancelled, fn, args, kwargs
                )
            except sqlite3.OperationalError as exc:
                self._raise_if_locked(exc)
                raise
            except BaseException:
                cancelled.append(True)  # (the thread reads it: a list append is atomic)
                raise
            self._changed(conn)
            return result

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """:meth:`fetch` for a short indexed read (a few rows by an index): run on the
        loop's thread when there is a :class:`Direct` connection, so a poll costs no
        hand-over. Never for a read whose cost grows with the table."""
        direct = self._direct
        if direct is not None:
            self.conn  # noqa: B018  (raises once closed)
            rows = direct.read(sql, params)
            if not isinstance(rows, NotNow):
                return rows
        return await self.fetch(sql, params)

    def data_version(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` on the loop's connection (it changes when
        any other connection commits), or None when there is none or SQLite was busy:
        the caller then reads anyway."""
        direct = self._direct
        return None if direct is None else direct.data_version()

    async def next_commit(self, version: int | None, timeout: float, tick: float) -> int | None:
        """Wait until another connection commits (the data version is no longer
        ``version``) or ``timeout`` seconds pass; return the data version then.

        With a WAL watch (_wake.py) the wait wakes when a store signals a commit, and
        checks every ``WATCHED_TICK`` seconds besides (for a commit by another tool,
        which sends no signal); without one it checks every ``tick``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._watch is None and self._direct is not None and not self._watch_tried:
            self._watch_tried = True
            self._watch = watch_wal(self.settings.path)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return version
            watch = self._watch
            if watch is None:
                await asyncio.sleep(min(tick, remaining))
            else:
                await watch.wait(min(max(tick, WATCHED_TICK), remaining))
            seen = self.data_version()
            if seen is None or seen != version:
                return seen

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (a read, or a write that is atomic on its own) and return
        its rows (RETURNING rows for writes)."""
        async with self._lock:
            conn = self.conn
            try:
                rows = list(await conn.execute_fetchall(sql, params))
            except sqlite3.OperationalError as exc:
                self._raise_if_locked(exc)
                raise
            self._changed(conn)
            return rows

    def _raise_if_locked(self, exc: sqlite3.OperationalError) -> None:
        if is_busy(exc):
            raise QueueError(
                f"SQLite database {self.settings.path!r} stayed locked longer than "
                f"busy_timeout={self.settings.busy_timeout}s; another process holds a long "
                f"write transaction, or raise busy_timeout"
            ) from exc


class _Cancelled(Exception):
    """The caller of :meth:`Database.run` was cancelled before the COMMIT."""


def _in_transaction(
    conn: sqlite3.Connection,
    catch_up: bool,
    cancelled: list[bool],
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    """On the connection's thread: ``fn`` between BEGIN IMMEDIATE and COMMIT, unless
    the caller was cancelled meanwhile."""
    if catch_up:
        conn.execute(CATCH_UP).fetchall()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if cancelled:
            raise _Cancelled
        result = fn(conn, *args, **kwargs)
        if cancelled:
            raise _Cancelled
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _connection(path: str) -> aiosqlite.Connection:
    """aiosqlite's connection, its thread a daemon (a thread takes the flag of the thread
    that makes it): an app left open (``asyncio.run(main())`` that never closes it) must
    not hold the interpreter's exit up, which joins non-daemon threads first. Safe to
    end with the process: a write reported done was committed on that thread before it
    was reported (see docs/architecture.md, "SQLite", under "Crash windows")."""
    thread = threading.current_thread()
    daemon = thread._daemonic  # type: ignore[attr-defined]  # (the property's value)
    thread._daemonic = True  # type: ignore[attr-defined]
    try:
        return aiosqlite.connect(path, isolation_level=None)
    finally:
        thread._daemonic = daemon  # type: ignore[attr-defined]


async def _close_connection(conn: aiosqlite.Connection) -> None:
    """Close ``conn``, also when aiosqlite's finalizer has stopped its thread.

    A facade nobody closed is closed by its finalizer (omniq.sync, ``Portal.__del__``),
    and an app whose task refers to it is a cycle: the collector runs the finalizer of
    every object in that cycle, this connection's among them, while (or before) the
    facade's hands the app's close to the loop, which brings the cycle back. aiosqlite's
    finalizer queues the stop of the connection's thread (the thread closes the SQLite
    connection and ends); ``close()`` then waited for work queued after that stop, which
    that thread never runs: for ever, until the exit's cap. So the end of the thread
    ends the wait too: by then everything queued before the stop has run, the SQLite
    connection's close among it."""
    closing = asyncio.ensure_future(conn.close())
    ended = asyncio.ensure_future(asyncio.to_thread(conn._thread.join))
    try:
        done, _ = await asyncio.wait((closing, ended), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        closing.cancel()
        ended.cancel()
        raise
    if closing not in done:
        closing.cancel()  # its thread has ended: it would wait for ever
        await asyncio.wait((closing,))  # (ended before the loop stops: not left pending)
        return
    await ended  # (the thread ends once the close has run)
    closing.result()


async def _rollback(conn: aiosqlite.Connection) -> None:
    """Queue a ROLLBACK behind whatever the thread is running (it is queued before the
    first await, so it runs even if this coroutine is cancelled again)."""
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error:  # no transaction: BEGIN failed, or SQLite ended it (full disk)
        pass


class SqliteStore:
    """Mixin for the three stores: ``from_url``, ``open`` and ``close``."""

    kind: ClassVar[StoreKind]
    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings, self.kind)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return cls(parse_settings(url, options, cls))

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.settings.path!r})"


def json_list(values: Sequence[Any]) -> str:
    """A JSON array to bind as one parameter and expand with ``json_each`` (no limit on
    the number of values, one statement text whatever the length)."""
    return msgspec.json.encode(list(values)).decode()


__all__ = [
    "SCHEMA_VERSION",
    "Database",
    "SchemaVersionError",
    "Settings",
    "SqliteStore",
    "json_list",
    "parse_settings",
]
