"""What the three PostgreSQL stores share: settings, the pool, retries, the clock.

Every statement runs through :meth:`PostgresStore._run`, which retries on a dropped
connection (server restart, ``pg_terminate_backend``, failover): the pool drops the dead
connection and the next attempt gets a fresh one. ``using(conn)`` gives a view of the
store that runs on the caller's connection instead, inside the caller's transaction, with
no retry (the transaction itself is lost with its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar, Self, TypeVar, cast

import asyncpg
import msgspec

from omniq.errors import ConfigError
from omniq.interfaces import BaseStore, Capability
from omniq.options import OptionSchema

from .listener import Listener, Notice
from .migrations import ensure_schema
from .settings import OPTIONS, PostgresSettings

T = TypeVar("T")

#: Errors after which the same statement is retried on another connection.
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and "connection was closed"
    asyncpg.exceptions.AdminShutdownError,  # pg_terminate_backend, server shutdown
    asyncpg.exceptions.CannotConnectNowError,  # server starting up
    # An idle pooled connection that received the server's FATAL message is left in a
    # state where the next statement fails with this before anything is sent.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)


async def _acquire(pool: asyncpg.Pool) -> asyncpg.Connection:
    """A pool connection. Making a new one can time out (``connect_timeout``: a server
    that accepts and never answers, a partition) with a bare ``TimeoutError``, which is
    told apart here from a statement's own timeout: it is a lost connection, retried by
    :meth:`PostgresStore._run` until ``outage_timeout`` like any other."""
    try:
        return await pool.acquire()
    except TimeoutError as exc:
        raise ConnectionError(f"connecting timed out ({exc or 'no answer'})") from exc


def hot_alive(conn: asyncpg.Connection) -> bool:
    """Whether a held pool connection can take a statement. asyncpg itself releases a
    pool connection whose socket closed (the server ended it, or went away) and its
    proxy then refuses every call, which can happen between two statements."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # released back to the pool
        return False


EPOCH_NOW = "extract(epoch FROM now())::float8"


def shift_params(sql: str, by: int) -> str:
    """``sql`` with ``$n`` renumbered ``$(n + by)``, to nest one store's statement in
    another's (one round trip for writes that span the stores)."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + by}", sql)


_UNNEST_ARGS = re.compile(r"unnest\(([^()]*)\)")
_ARRAY_PARAM = re.compile(r"\$\d+::\w+\[\]")


def broadcast(sql: str) -> str:
    """``sql`` with each array parameter of an ``unnest(...)`` after the first one taking
    a one-element array as that value for every row (the first array, never compacted,
    gives the row count). A bulk's columns are mostly one value for all its tasks (queue,
    name, options, the events' type and detail): :func:`compact` sends each such column as
    one element, where asyncpg would check and encode every element (about a third of the
    client's time per task in a bulk enqueue), and the server expands it with array_fill."""

    def one(match: re.Match[str]) -> str:
        params = _ARRAY_PARAM.findall(match.group(1))
        key = params[0]
        text = match.group(1)
        for param in params[1:]:
            text = text.replace(
                param,
                f"CASE WHEN cardinality({param}) = 1 THEN array_fill(({param})[1], "
                f"ARRAY[cardinality({key})]) ELSE {param} END",
                1,
            )
        return f"unnest({text})"

    return _UNNEST_ARGS.sub(one, sql)


def compact(columns: Sequence[list[Any]]) -> list[list[Any]]:
    """``columns`` (arrays for a :func:`broadcast` statement) with each one after the first
    whose values are all equal cut to its first value (``list.count`` compares in C)."""
    head, *rest = columns
    return [
        head,
        *(c[:1] if len(c) > 1 and c.count(c[0]) == len(c) else c for c in rest),
    ]


def text_array(values: list[str | None]) -> str:
    """``values`` as one array literal, for a parameter the statement declares text and
    casts (``$1::text::text[]``, or ``::jsonb[]`` for JSON texts): asyncpg checks each
    element of a list parameter against abstract base classes (two ``isinstance`` calls
    through ``abc`` for a string, one for None: ~30 % of its time encoding a worker's
    ``finish_many``), where one string is copied as it is. Each element is quoted, with
    backslashes and quotes escaped; None is ``NULL``. Values without either (ids, tokens,
    states: most columns) are joined with the quoted separator as they are, checked by
    counting quotes (a value's own quote would add to the separators'). Otherwise the
    separator is NUL, which PostgreSQL text never holds (a value with one goes whole, for
    the server to refuse as it refuses a list parameter's), and the joined text is
    escaped at once. ``join`` refuses None (a TypeError): what sends the NULLs apart."""
    if not values:
        return "{}"
    try:
        plain = '","'.join(cast("list[str]", values))
    except TypeError:  # (a None: NULL)
        return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"
    if "\\" not in plain and plain.count('"') == 2 * len(values) - 2:
        return '{"' + plain + '"}'
    joined = "\x00".join(cast("list[str]", values))
    if joined.count("\x00") != len(values) - 1:  # (a NUL in a value: refused)
        return "{" + ",".join(_quoted(v) for v in cast("list[str]", values)) + "}"
    return "{" + _quoted(joined).replace("\x00", '","') + "}"


def json_array(texts: list[str | None]) -> str:
    """JSON texts (each made by a JSON encoder, or None) as one array literal, for a
    parameter cast ``$1::text::jsonb[]``: msgspec's JSON string of a text without control
    characters is the literal's quoted element (only quotes and backslashes escaped, by
    a backslash), and a JSON text holds none (it escapes its own); None is ``null``, the
    literal's NULL. One encoder call for the column, where :func:`text_array` escapes
    the quotes every JSON object has in three passes (~2.5x slower for events' details)."""
    listed = _list_encoder.encode(texts).decode()
    return "{" + listed[1:-1] + "}"


_list_encoder = msgspec.json.Encoder()


def _quoted(text: str) -> str:
    """``text`` as one quoted element of an array literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Oldest server OmniQ runs on: reserve uses gen_random_uuid(), built in from 13.
MIN_SERVER_VERSION = 13


async def init_session(conn: asyncpg.Connection, settings: PostgresSettings) -> None:
    """Check the server's version, then plan generically: every statement OmniQ runs is
    prepared (asyncpg) and shaped so a generic plan is the right one (partial-index
    predicates are literals, batches are unnested arrays), while PostgreSQL's default
    re-plans each run as long as a custom plan looks cheaper: ~13% of the server's CPU
    under a busy worker. A SET rather than a startup parameter, which poolers such as
    PgBouncer refuse; connections the user passes in keep their own settings."""
    version = conn.get_server_version()
    if version.major < MIN_SERVER_VERSION:
        raise ConfigError(
            f"PostgreSQL at {settings.where()} is version {version.major}.{version.minor}; "
            f"OmniQ needs {MIN_SERVER_VERSION} or newer"
        )
    await conn.execute("SET plan_cache_mode = force_generic_plan")


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without asyncpg's reset query (``RESET ALL; UNLISTEN
    *; CLOSE ALL; pg_advisory_unlock_all()``): a round trip after every statement. Our
    statements leave no session state behind: LISTEN runs on dedicated connections and
    the migration lock is transaction-scoped. asyncpg still rolls back an open
    transaction on release."""

    def get_reset_query(self) -> str:
        return ""


class PostgresStore(BaseStore):
    """Base of the task queue, result and event stores."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.CROSS_PROCESS})
    local_only: ClassVar[bool] = False
    #: Suffix of this store's NOTIFY channel ("omniq_<schema>_<suffix>"), if it listens.
    channel_suffix: ClassVar[str | None] = None

    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._conn: asyncpg.Connection | None = None  # set by using()
        #: A pool connection this store keeps acquired (see :meth:`_connection`), and
        #: whether a statement is using it.
        self._hot: asyncpg.Connection | None = None
        self._hot_busy = False
        self._listener: Listener | None = None
        self._sql_cache: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return cls(PostgresSettings.from_url(url, cls, **options))

    def shares_schema(self, other: object) -> bool:
        """True when ``other`` is a PostgreSQL store on the same database and schema, so
        one statement can write both."""
        return (
            isinstance(other, PostgresStore)
            and other.settings.dsn == self.settings.dsn
            and other.settings.schema == self.settings.schema
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None or self._conn is not None:
            return
        settings = self.settings
        try:
            pool = await asyncpg.create_pool(
                settings.dsn,
                min_size=settings.min_size,
                max_size=settings.max_size,
                connection_class=PooledConnection,
                init=partial(init_session, settings=settings),
                **settings.connect_kwargs(),
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise settings.unavailable(exc) from exc
        try:
            async with pool.acquire() as conn:
                await ensure_schema(conn, settings, apply=settings.auto_migrate)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        if self.channel_suffix is not None:
            self._listener = Listener(
                self._connect,
                f"omniq_{settings.schema}_{self.channel_suffix}",
                interest=self.channel_suffix == "tasks",
            )

    async def close(self) -> None:
        if self._conn is not None:  # a using() view: the connection is the caller's
            return
        listener, pool, hot = self._listener, self._pool, self._hot
        self._listener = self._pool = None
        if not self._hot_busy:  # else its statement gives it back (see _connection)
            self._hot = None
            if hot is not None and pool is not None:
                await pool.release(hot)
        if listener is not None:
            await listener.close()
        if pool is not None:
            await pool.close()

    async def _connect(self) -> asyncpg.Connection:
        """A dedicated connection (for LISTEN, which a pooled connection would lose)."""
        return await asyncpg.connect(self.settings.dsn, **self.settings.connect_kwargs())

    def using(self, connection: asyncpg.Connection) -> Self:
        """This store running on ``connection`` (and in its open transaction, if any).

        ``await queue.using(conn).enqueue(task)`` inside ``async with conn.transaction()``
        makes the task exist only if that transaction commits.
        """
        view = copy.copy(self)
        view._conn = connection
        view._hot, view._hot_busy = None, False
        return view

    # -- running statements ------------------------------------------------------------

    def sql(self, template: str) -> str:
        """``template`` with ``{s}`` replaced by the quoted schema, ``{tasks_channel}`` and
        ``{results_channel}`` by the NOTIFY channels as literals (cached)."""
        text = self._sql_cache.get(template)
        if text is None:
            schema = self.settings.schema  # letters, digits and "_" (settings check it)
            text = self._sql_cache[template] = (
                template.replace("{s}", self.settings.quoted_schema)
                .replace("{tasks_channel}", f"'omniq_{schema}_tasks'")
                .replace("{results_channel}", f"'omniq_{schema}_results'")
            )
        return text

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None:
            yield self._conn
            return
        if self._pool is None:
            raise RuntimeError(
                f"{type(self).__name__} is not open: use 'async with store' or 'await store.open()'"
            )
        pool = self._pool
        if self._hot_busy or pool.get_max_size() < 2:
            conn = await _acquire(pool)
            try:
                yield conn
            finally:
                await pool.release(conn)
            return
        # The hot connection: statements one after another (a producer's delay() and
        # get_result(), a worker's reserve loop) skip asyncpg's pool acquire and
        # release, ~0.12 ms of client CPU per statement (more than the statement's
        # own), while concurrent ones take pool connections as before. It is kept only
        # while statements succeed; after any error it goes back to the pool, whose
        # release rolls back, waits out a cancellation or drops a dead connection.
        # Never with max_size 1: the pool would have nothing left for the others.
        # Closed meanwhile (the store's close leaves a busy one to its statement), it
        # goes back to the pool too, which close() is waiting for. One whose socket
        # closed between two statements (see hot_alive) is replaced before use.
        self._hot_busy = True
        conn = self._hot
        failed = True
        try:
            if conn is not None and not hot_alive(conn):
                self._hot = None
                await pool.release(conn)
                conn = None
            if conn is None:
                conn = self._hot = await _acquire(pool)
            yield conn
            failed = False
        finally:
            if conn is not None:
                await self._hot_done(conn, pool, failed)
            else:
                self._hot_busy = False

    async def _hot_done(self, conn: asyncpg.Connection, pool: asyncpg.Pool, failed: bool) -> None:
        """After a statement on the hot connection: it goes back to the pool when the
        statement failed or the store was closed meanwhile (see :meth:`_connection`)."""
        self._hot_busy = False
        if self._hot is conn and (failed or self._pool is None):
            self._hot = None
            await pool.release(conn)

    async def _run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, transaction: bool = False
    ) -> T:
        """Run ``work(conn)``; retry on a dropped connection: at once while the pool has
        others that may be dead too (each failure removes one), then with a backoff
        until ``outage_timeout`` has passed; then raise PostgresUnavailableError
        naming the server. On a ``using()`` view the caller's connection error is raised
        as it is (its transaction went with the connection)."""
        quick = 1 if self._conn is not None else self.settings.max_size + 1
        deadline = 0.0
        pause = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                hot, pool = self._hot, self._pool
                if (
                    hot is not None
                    and pool is not None
                    and not self._hot_busy
                    and not transaction
                    and hot_alive(hot)  # else _connection() replaces it
                ):
                    return await self._on_hot(hot, pool, work)
                async with self._connection() as conn:
                    try:
                        if not transaction:
                            return await work(conn)
                        async with conn.transaction():
                            return await work(conn)
                    except RECONNECT_ERRORS:
                        if self._conn is None:  # make the pool replace it, not reuse it
                            with contextlib.suppress(asyncpg.InterfaceError):  # already released
                                conn.terminate()
                        raise
            except RECONNECT_ERRORS as exc:
                if self._conn is not None:
                    raise
                if attempt < quick:
                    continue
                clock = time.monotonic()
                deadline = deadline or clock + self.settings.outage_timeout
                if clock >= deadline:
                    raise self.settings.unavailable(exc) from exc
                await asyncio.sleep(min(pause, deadline - clock))
                pause = min(pause * 2, 1.0)

    async def _on_hot(
        self,
        conn: asyncpg.Connection,
        pool: asyncpg.Pool,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
    ) -> T:
        """``work`` on the hot connection, as :meth:`_connection` and :meth:`_run` run it
        there, without an async context manager (its async generator, hooks and frames
        cost ~5 % of a ``delay()``'s client CPU): the common case, a statement after
        another."""
        self._hot_busy = True
        failed = True
        try:
            result = await work(conn)
            failed = False
            return result
        except RECONNECT_ERRORS:  # make the pool replace it
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
            raise
        finally:
            await self._hot_done(conn, pool, failed)

    async def fetch(self, template: str, *args: Any) -> list[asyncpg.Record]:
        sql = self.sql(template)
        return await self._run(lambda conn: conn.fetch(sql, *args))

    async def fetchval(self, template: str, *args: Any) -> Any:
        sql = self.sql(template)
        return await self._run(lambda conn: conn.fetchval(sql, *args))

    async def execute(self, template: str, *args: Any) -> str:
        sql = self.sql(template)
        return await self._run(lambda conn: conn.execute(sql, *args))

    async def now(self) -> float:
        """PostgreSQL's clock, in epoch seconds."""
        return float(await self.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))

    @asynccontextmanager
    async def _watching(self, keys: Sequence[str]) -> AsyncIterator[Notice]:
        """An event set by a NOTIFY whose payload is in ``keys``. LISTEN is in place when
        the block starts, so a check made inside it cannot miss a later write. Without a
        listening connection the event is never set: callers poll on their timeout."""
        if self._listener is None:
            yield Notice()
            return
        async with self._listener.watch(keys) as event:
            yield event

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected

    def _heard_since(self, keys: Sequence[str], seen: int) -> bool:
        """Whether a notification for one of ``keys`` may have arrived (or the listening
        connection dropped or changed) since the listener's count was ``seen``."""
        listener = self._listener
        return listener is None or not listener.connected or listener.heard_since(keys, seen)

    def _seen(self) -> int | None:
        """The listener's count of notifications and drops, None while not listening."""
        listener = self._listener
        return listener.seen if listener is not None and listener.connected else None


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds. ``asyncio.timeout`` rather than
    ``wait_for``, which on Python 3.11 wraps the wait in a task of its own each time."""
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
