"""Tables and indexes, by store kind, and the schema version check.

The three stores may share one file (the default), so every table is prefixed
``omniq_`` and each store creates only its own tables. ``omniq_meta`` holds the schema
version of the whole file; a file written by a newer version is refused rather than
misread. docs/backends/sqlite.md describes every column for users querying with SQL.
"""

from __future__ import annotations

from typing import Literal

import aiosqlite

from omniq.errors import ConfigError

StoreKind = Literal["queue", "results", "events"]

#: Bump when a table changes; add the migration from the previous version in
#: :func:`create_schema` at the same time.
SCHEMA_VERSION = 3

#: The conditions of the partial indexes on task states, and of the queries that use
#: them (SQLite uses a partial index only for a query repeating its condition). OR'ed
#: equalities, not ``state IN (...)``: SQLite evaluates IN a list of three or more
#: constants by building a temporary table, for every row inserted or updated (~25k
#: instructions each: a third of an enqueue's SQLite work).
READY_WHERE = "(state = 'pending' OR state = 'scheduled' OR state = 'retrying')"
#: States in which a task can still expire (not started yet).
UNSTARTED_WHERE = (
    "(state = 'pending' OR state = 'scheduled' OR state = 'retrying' OR state = 'waiting')"
)
TERMINAL_SQL = "('succeeded', 'failed', 'cancelled', 'expired', 'dead')"
#: ``omniq_tasks.purge_at``: when cleanup deletes a finished task. SQLite computes a
#: virtual column on every row written, indexed or not: OR'ed equalities for the same
#: reason as :data:`READY_WHERE` (with ``IN`` it was ~30k instructions per enqueue).
PURGE_AT_SQL = """CASE WHEN state = 'dead' THEN finished_at + dead_ttl
        WHEN state = 'succeeded' OR state = 'failed' OR state = 'cancelled' OR state = 'expired'
        THEN finished_at + result_ttl END"""
#: The type index's condition: it leaves out the event types every task has, never
#: what a query by type asks for alone (see ``SqliteEventStorage._query``). Written as
#: ``<>`` terms: ``NOT IN`` a list of three builds a temporary table per row inserted.
RARE_EVENTS_SQL = "type <> 'enqueued' AND type <> 'started' AND type <> 'succeeded'"


class SchemaVersionError(ConfigError):
    """The file was written by a newer omniq-backend-sqlite than this one."""


_META = """
CREATE TABLE IF NOT EXISTS omniq_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)"""

_DDL: dict[StoreKind, tuple[str, ...]] = {
    "queue": (
        # seq (the rowid) is the enqueue order: a new row always gets max(seq) + 1, so
        # FIFO holds without AUTOINCREMENT.
        f"""
        CREATE TABLE IF NOT EXISTS omniq_tasks (
            seq               INTEGER PRIMARY KEY,
            id                TEXT NOT NULL UNIQUE,
            name              TEXT NOT NULL,
            queue             TEXT NOT NULL,
            payload           BLOB NOT NULL,
            priority          INTEGER NOT NULL,
            state             TEXT NOT NULL,
            created_at        REAL NOT NULL,
            eta               REAL,
            expires_at        REAL,
            timeout           REAL,
            max_retries       INTEGER NOT NULL,
            retry_backoff     REAL NOT NULL,
            retry_backoff_max REAL NOT NULL,
            max_deliveries    INTEGER NOT NULL,
            attempts          INTEGER NOT NULL,
            depends_on        TEXT,
            schedule_id       TEXT,
            lease_owner       TEXT,
            lease_token       TEXT,
            lease_deadline    REAL,
            started_at        REAL,
            finished_at       REAL,
            error             TEXT,
            result_ttl        REAL NOT NULL,
            dead_ttl          REAL NOT NULL,
            headers           TEXT,
            on_parent_failure TEXT NOT NULL DEFAULT 'cancel',
            pass_results      INTEGER NOT NULL DEFAULT 0,
            purge_at          REAL GENERATED ALWAYS AS ({PURGE_AT_SQL}) VIRTUAL
        )""",
        # reserve: per queue, highest priority first, then seq (the implicit last key).
        f"""CREATE INDEX IF NOT EXISTS omniq_tasks_ready
            ON omniq_tasks (queue, priority DESC) WHERE {READY_WHERE}""",
        "CREATE INDEX IF NOT EXISTS omniq_tasks_queue_state ON omniq_tasks (queue, state)",
        """CREATE INDEX IF NOT EXISTS omniq_tasks_leases
            ON omniq_tasks (lease_deadline) WHERE state = 'running'""",
        # Only tasks that can expire: most have no expires_at, and an index entry is a
        # page written per enqueue (see _narrow_index).
        f"""CREATE INDEX IF NOT EXISTS omniq_tasks_expiry ON omniq_tasks (expires_at)
            WHERE {UNSTARTED_WHERE} AND expires_at IS NOT NULL""",
        """CREATE INDEX IF NOT EXISTS omniq_tasks_purge ON omniq_tasks (purge_at)
            WHERE purge_at IS NOT NULL""",
        # One row per (parent, child) for each child enqueued (see _deps.py).
        """
        CREATE TABLE IF NOT EXISTS omniq_task_deps (
            parent TEXT NOT NULL,
            child  TEXT NOT NULL,
            PRIMARY KEY (parent, child)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS omniq_task_deps_child ON omniq_task_deps (child)",
        # The whole Schedule is kept msgpack-encoded in `data`; next_run, last_run and
        # paused are columns (authoritative) so claims and pauses are plain UPDATEs.
        """
        CREATE TABLE IF NOT EXISTS omniq_schedules (
            id       TEXT PRIMARY KEY,
            next_run REAL NOT NULL,
            last_run REAL,
            paused   INTEGER NOT NULL,
            data     BLOB NOT NULL
        )""",
        """CREATE INDEX IF NOT EXISTS omniq_schedules_due
            ON omniq_schedules (next_run) WHERE paused = 0""",
        # Global rate limits (omniq.limits): when each rate key ('task:<name>',
        # 'queue:<queue>') next allows a start; written by limited reserves only.
        """
        CREATE TABLE IF NOT EXISTS omniq_limits (
            key     TEXT PRIMARY KEY,
            next_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # Live workers (omniq workers / health): the WorkerInfo msgpack-encoded in `data`,
        # listed while expires_at is in the future.
        """
        CREATE TABLE IF NOT EXISTS omniq_workers (
            id         TEXT PRIMARY KEY,
            expires_at REAL NOT NULL,
            data       BLOB NOT NULL
        )""",
    ),
    "results": (
        """
        CREATE TABLE IF NOT EXISTS omniq_results (
            task_id     TEXT PRIMARY KEY,
            state       TEXT NOT NULL,
            value       BLOB,
            error       TEXT,
            attempts    INTEGER NOT NULL,
            started_at  REAL,
            finished_at REAL NOT NULL,
            worker_id   TEXT,
            expires_at  REAL
        )""",
        """CREATE INDEX IF NOT EXISTS omniq_results_expiry ON omniq_results (expires_at)
            WHERE expires_at IS NOT NULL""",
    ),
    "events": (
        # seq is the append order (ties on timestamp keep it).
        """
        CREATE TABLE IF NOT EXISTS omniq_events (
            seq       INTEGER PRIMARY KEY,
            id        TEXT NOT NULL,
            task_id   TEXT NOT NULL,
            queue     TEXT NOT NULL,
            type      TEXT NOT NULL,
            timestamp REAL NOT NULL,
            worker_id TEXT,
            detail    TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS omniq_events_task ON omniq_events (task_id, timestamp)",
        "CREATE INDEX IF NOT EXISTS omniq_events_queue ON omniq_events (queue, timestamp)",
        # Only the rarer types (failures, requeues...): an index entry is a page written
        # per event, and every task has an enqueued, started and succeeded one.
        f"""CREATE INDEX IF NOT EXISTS omniq_events_type ON omniq_events (type, timestamp)
            WHERE {RARE_EVENTS_SQL}""",
        # No index by timestamp alone: queries by time and cleanup read the queue index,
        # one range per queue (events.py), and each event writes one b-tree fewer.
    ),
}


async def create_schema(conn: aiosqlite.Connection, kind: StoreKind, path: str) -> None:
    """Check the file's schema version and create this kind's tables (idempotent).

    Runs inside the caller's ``BEGIN IMMEDIATE``, so processes opening the same new
    file at once create it once.
    """
    await conn.execute(_META)
    rows = list(
        await conn.execute_fetchall("SELECT value FROM omniq_meta WHERE key = 'schema_version'")
    )
    if not rows:
        await conn.execute(
            "INSERT INTO omniq_meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    else:
        found = rows[0][0]
        try:
            version = int(found)
        except (TypeError, ValueError):
            raise SchemaVersionError(
                f"SQLite database {path!r} has an unreadable schema version {found!r} in "
                f"omniq_meta; it was not written by omniq-backend-sqlite"
            ) from None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"SQLite database {path!r} has schema version {version}, written by a newer "
                f"omniq-backend-sqlite; this one understands version {SCHEMA_VERSION}. "
                f"Upgrade omniq-backend-sqlite (pip install -U omniq-backend-sqlite)"
            )
        if version < 2:
            await _migrate_1_to_2(conn)
        if version < 3:
            await _migrate_2_to_3(conn)
    if kind == "queue":
        await _rewrite_purge_at(conn)
        await _narrow_index(conn, "omniq_tasks_ready", "state = 'pending' OR")
        await _narrow_index(conn, "omniq_tasks_expiry", "state = 'pending' OR")
    if kind == "events":
        await _narrow_index(conn, "omniq_events_type", "<> 'enqueued'")
        # Files made before the queue index served queries by time alone. Not a schema
        # version: an older version opening the file makes the index again (its DDL has
        # it), and this one drops it again.
        await conn.execute("DROP INDEX IF EXISTS omniq_events_time")
    for statement in _DDL[kind]:
        await conn.execute(statement)


async def _narrow_index(conn: aiosqlite.Connection, name: str, mark: str) -> None:
    """Files made before index ``name`` took its present condition (narrower, or
    cheaper to evaluate) hold the old one: drop it (its SQL lacks ``mark``), and the DDL
    makes the new one. Not a schema version: the tables are unchanged, and an older
    version opening the file keeps the new index (where its queries, written for the
    old condition, may not use it: they stay correct, a reserve goes by the queue/state
    index and an expiry sweep reads the table, until it is upgraded)."""
    rows = list(
        await conn.execute_fetchall(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        )
    )
    if rows and mark not in rows[0][0]:
        await conn.execute(f"DROP INDEX {name}")


async def _rewrite_purge_at(conn: aiosqlite.Connection) -> None:
    """Files made before ``purge_at`` took :data:`PURGE_AT_SQL` compute it with ``IN``
    a list: drop the column (and its index, which the DDL makes again) and add it back.
    Not a schema version: the values are the same, for this version and older ones.
    Dropping a virtual column rewrites no rows; the column is then the table's last."""
    rows = list(
        await conn.execute_fetchall(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'omniq_tasks'"
        )
    )
    if not rows or "WHEN state IN" not in rows[0][0]:
        return
    await conn.execute("DROP INDEX IF EXISTS omniq_tasks_purge")
    await conn.execute("ALTER TABLE omniq_tasks DROP COLUMN purge_at")
    await conn.execute(
        f"ALTER TABLE omniq_tasks ADD COLUMN purge_at REAL GENERATED ALWAYS AS ({PURGE_AT_SQL})"
        " VIRTUAL"
    )


async def _migrate_1_to_2(conn: aiosqlite.Connection) -> None:
    """Version 2 adds ``omniq_tasks.headers`` (a task's middleware headers, JSON)."""
    columns = [row[1] for row in await conn.execute_fetchall("PRAGMA table_info(omniq_tasks)")]
    if columns and "headers" not in columns:
        await conn.execute("ALTER TABLE omniq_tasks ADD COLUMN headers TEXT")
    await conn.execute("UPDATE omniq_meta SET value = '2' WHERE key = 'schema_version'")


async def _migrate_2_to_3(conn: aiosqlite.Connection) -> None:
    """Version 3 adds ``omniq_tasks.on_parent_failure`` and ``pass_results`` (fan-in:
    a dependent that runs after failed parents, and one given its parents' results)."""
    columns = [row[1] for row in await conn.execute_fetchall("PRAGMA table_info(omniq_tasks)")]
    if columns and "on_parent_failure" not in columns:
        await conn.execute(
            "ALTER TABLE omniq_tasks ADD COLUMN on_parent_failure TEXT NOT NULL DEFAULT 'cancel'"
        )
        await conn.execute(
            "ALTER TABLE omniq_tasks ADD COLUMN pass_results INTEGER NOT NULL DEFAULT 0"
        )
    await conn.execute("UPDATE omniq_meta SET value = '3' WHERE key = 'schema_version'")
