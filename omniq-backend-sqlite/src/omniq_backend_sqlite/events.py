"""SqliteEventStorage: the event log as an indexed table, ``omniq_events``.

Users can query it with plain SQL (docs/backends/sqlite.md); ``detail`` is JSON text, so
``json_extract(detail, '$.key')`` works on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import aiosqlite
import msgspec

from omniq.errors import SerializationError
from omniq.interfaces import BaseEventStorage, Capability
from omniq.models import EventType, TaskEvent
from omniq.records import decode_or_skip

from ._db import SqliteStore, json_list
from ._rows import RowInsert
from ._schema import RARE_EVENTS_SQL, StoreKind

_COLUMNS = ("id", "task_id", "queue", "type", "timestamp", "worker_id", "detail")
_COLUMNS_SQL = ", ".join(_COLUMNS)
_INSERT = f"INSERT INTO omniq_events ({_COLUMNS_SQL}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: Naming only the non-NULL columns: an enqueued event has no worker, and :mod:`sqlite3`
#: tries to adapt a None it binds (see ``_rows.blob``).
_INSERT_ROW = RowInsert("omniq_events", _COLUMNS, required=_COLUMNS[:5])  # (NOT NULL)
#: A single event without a worker (a ``delay()``'s): a fixed statement, which costs
#: less than RowInsert's look at each value.
_INSERT_NO_WORKER = _INSERT_ROW.statement(tuple(c != "worker_id" for c in _COLUMNS))
_ORDER = {"asc": "timestamp ASC, seq ASC", "desc": "timestamp DESC, seq DESC"}
#: The types the partial index ``omniq_events_type`` leaves out (_schema.py).
_COMMON = frozenset(("enqueued", "started", "succeeded"))
#: Each member's value: one dict lookup per event, where ``EventType(t).value`` cost
#: ~6k instructions per ``delay()`` (a type given as a string takes that way still).
_TYPE_VALUES = {t: t.value for t in EventType}
#: The queues that have events, by a loose scan of the queue index (one probe per queue).
_QUEUES = """WITH RECURSIVE q(name) AS (
    SELECT min(queue) FROM omniq_events
    UNION ALL
    SELECT (SELECT min(queue) FROM omniq_events WHERE queue > q.name)
    FROM q WHERE q.name IS NOT NULL
)"""
_QUEUE_NAMES = f"{_QUEUES} SELECT name FROM q WHERE name IS NOT NULL"
#: Most per-queue arms of one query by time (SQLite allows 500 in a compound SELECT);
#: with more queues a query by time alone reads the whole table.
_MAX_ARMS = 400


async def insert_events(conn: aiosqlite.Connection, events: Sequence[TaskEvent]) -> None:
    """Insert ``events`` in the caller's transaction (the task queue's finish writes
    its events in the same transaction as its completions)."""
    await conn.executemany(_INSERT, [_params(e) for e in events])


def insert_events_now(
    conn: sqlite3.Connection | sqlite3.Cursor, events: Sequence[TaskEvent]
) -> None:
    """:func:`insert_events` on the connection's thread (in a :meth:`Database.run`)."""
    if len(events) == 1 and events[0].worker_id is None:  # a delay()'s
        insert_enqueued_now(conn, events[0])
    else:
        _INSERT_ROW.run(conn, [_params(e) for e in events])


def insert_enqueued_now(conn: sqlite3.Connection | sqlite3.Cursor, event: TaskEvent) -> None:
    """:func:`insert_events_now` of one event without a worker (a ``delay()``'s), its
    row built here: no list, and one call instead of three."""
    detail = msgspec.json.encode(event.detail).decode() if event.detail else None
    type_ = event.type
    conn.execute(
        _INSERT_NO_WORKER,
        (
            event.id,
            event.task_id,
            event.queue,
            _TYPE_VALUES.get(type_) or EventType(type_).value,
            event.timestamp,
            detail,
        ),
    )


class SqliteEventStorage(SqliteStore, BaseEventStorage):
    """Events appended in batches (one transaction, ``executemany``)."""

    kind: ClassVar[StoreKind] = "events"
    capabilities = frozenset({Capability.CROSS_PROCESS})
    local_only = True

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        async with self.db.transaction() as conn:
            await insert_events(conn, events)

    async def _query(
        self,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 1000,
        order: str = "asc",
    ) -> list[TaskEvent]:
        terms: list[str] = []
        params: list[Any] = []
        for term, value in (
            ("task_id = ?", task_id),
            ("queue = ?", queue),
            ("timestamp >= ?", since),
            ("timestamp < ?", until),
        ):
            if value is not None:
                terms.append(term)
                params.append(value)
        rare = False
        if types is not None:
            kinds = [EventType(t).value if isinstance(t, EventType) else str(t) for t in types]
            terms.append("type IN (SELECT value FROM json_each(?))")
            params.append(json_list(kinds))
            if _COMMON.isdisjoint(kinds):
                # the partial index's own WHERE, so SQLite may use it (same results)
                terms.append(RARE_EVENTS_SQL)
                rare = True
        top = f" ORDER BY {_ORDER[order]}" + (" LIMIT ?" if limit is not None else "")
        tail = [limit] if limit is not None else []
        if task_id is None and queue is None and not rare:
            queues = [row[0] for row in await self.db.fetch(_QUEUE_NAMES, ())]
            if not queues:
                return []
            if len(queues) <= _MAX_ARMS:
                # No index by time alone: one arm per queue reads the queue index in
                # order (and stops at LIMIT); the arms are merged by the same order.
                where = " AND ".join(["queue = ?", *terms])
                args = [v for q in queues for v in (q, *params, *tail)] + tail
                if limit is None:
                    arm = f"SELECT {_COLUMNS_SQL}, seq FROM omniq_events WHERE {where}"
                    sql = " UNION ALL ".join([arm] * len(queues)) + top
                    return _decoded(row[:-1] for row in await self.db.fetch(sql, args))
                # With a LIMIT, the arms read the index alone and only the rows that
                # make the cut are read (~2x faster than whole rows in every arm).
                arm = f"SELECT timestamp, seq FROM omniq_events WHERE {where}{top}"
                arms = " UNION ALL ".join([f"SELECT * FROM ({arm})"] * len(queues)) + top
                sql = f"SELECT {_COLUMNS_SQL} FROM omniq_events"
                sql += f" WHERE seq IN (SELECT seq FROM ({arms}))"
                return _decoded(await self.db.fetch(sql + f" ORDER BY {_ORDER[order]}", args))
        sql = f"SELECT {_COLUMNS_SQL} FROM omniq_events"
        if terms:
            sql += " WHERE " + " AND ".join(terms)
        return _decoded(await self.db.fetch(sql + top, params + tail))

    async def _cleanup(self, older_than: float) -> int:
        # By the queue index, one range per queue (there is no index by time alone).
        return len(
            await self.db.fetch(
                f"""{_QUEUES} DELETE FROM omniq_events
                WHERE queue IN (SELECT name FROM q) AND timestamp < ? RETURNING seq""",
                (older_than,),
            )
        )


def _decoded(rows: Iterable[Sequence[Any]]) -> list[TaskEvent]:
    """The events of ``rows`` that decode (see omniq.records)."""
    found = (decode_or_skip(_decode, row, "omniq_events", row[0]) for row in rows)
    return [event for event in found if event is not None]


def _params(event: TaskEvent) -> tuple[Any, ...]:
    detail = msgspec.json.encode(event.detail).decode() if event.detail else None
    return (
        event.id,
        event.task_id,
        event.queue,
        _TYPE_VALUES.get(event.type) or EventType(event.type).value,
        event.timestamp,
        event.worker_id,
        detail,
    )


def _decode(row: Sequence[Any]) -> TaskEvent:
    fields = dict(zip(_COLUMNS, row, strict=True))
    try:
        fields["detail"] = (
            msgspec.json.decode(fields["detail"]) if fields["detail"] is not None else {}
        )
        return msgspec.convert(fields, TaskEvent)
    except (msgspec.MsgspecError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"event {fields['id']!r} in omniq_events cannot be decoded: {exc}"
        ) from exc
