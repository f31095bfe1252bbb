"""Events on PostgreSQL: an indexed, append-only table users can query in SQL.

``<schema>.events`` keeps ``ts`` as epoch seconds (exact round trips) and ``detail`` as
jsonb; the ``<schema>.event_log`` view adds ``occurred_at timestamptz`` and the task name.
docs/backends/postgres.md shows queries over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from omniq.interfaces import BaseEventStorage, EventCount
from omniq.models import EventType, TaskEvent
from omniq.records import decode_or_skip

from .store import PostgresStore, broadcast, compact

__all__ = ["PostgresEventStorage"]

#: One row per event; :data:`APPEND` takes a column of one element for all (see
#: :func:`.store.broadcast`).
APPEND_TEMPLATE = """
INSERT INTO {s}.events (id, task_id, queue, type, ts, worker_id, detail)
SELECT i.id, i.task_id, i.queue, i.type, i.ts, i.worker_id, i.detail
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::jsonb[])
     WITH ORDINALITY AS i(id, task_id, queue, type, ts, worker_id, detail, ord)
ORDER BY i.ord
"""
APPEND = broadcast(APPEND_TEMPLATE)
#: The columns of :func:`event_records`, for ``COPY`` (``seq`` is the identity's).
EVENT_COLUMNS = ("id", "task_id", "queue", "type", "ts", "worker_id", "detail")
#: The columns of :func:`copy_records`: a row of several events (migration 15) has their
#: ids, their tasks' ids (each space-separated) and their number in the last three.
COPY_COLUMNS = (
    *EVENT_COLUMNS,
    "batch_ids",
    "batch_task_ids",
    "batch_size",
    "batch_task_min",
    "batch_task_max",
)
# Counted on the server: one row per bucket, queue and type, along the (ts) index (a
# row of several events counts each).
COUNTS = """
SELECT floor((ts - $1) / $3) AS bucket, queue, type, sum(coalesce(batch_size, 1))::bigint
FROM {s}.events
WHERE ts >= $1 AND ts < $2 AND ($4::text IS NULL OR queue = $4)
  AND ($5::text[] IS NULL OR type = ANY ($5::text[]))
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
#: Delete what is older than $1; the number of events deleted (a row of several
#: events counts each).
CLEANUP = """
WITH gone AS (DELETE FROM {s}.events WHERE ts < $1 RETURNING batch_size)
SELECT coalesce(sum(coalesce(batch_size, 1)), 0)::bigint FROM gone
"""
#: The events of the rows of several (``{rows}``: a query of such rows, in their order;
#: ``{task}``: a task's filter on the events).
BATCHED = """
SELECT x.id, x.task_id, b.queue, b.type, b.ts, b.worker_id, b.detail, b.seq, x.ord
FROM ({rows}) b
     CROSS JOIN LATERAL unnest(string_to_array(b.batch_ids, ' '),
                               string_to_array(b.batch_task_ids, ' '))
     WITH ORDINALITY AS x(id, task_id, ord){task}
"""
#: The rows of several events. Each has task_id '', so the (task_id, ts) index finds
#: them in time order.
BATCH_ROWS = "SELECT * FROM {s}.events b WHERE b.task_id = '' AND b.batch_ids IS NOT NULL"
EVENT_TYPES = {t.value: t for t in EventType}
_TYPE_NAMES = {t.value: t.value for t in EventType}
_json = msgspec.json.Encoder()
_detail = msgspec.json.Decoder(dict[str, Any])


def append_args(events: Sequence[TaskEvent]) -> list[list[Any]]:
    """Column arrays for :data:`APPEND` (compacted, see :func:`.store.compact`)."""
    ids, types, times, workers, details = event_columns(events)
    task_ids, queues = [e.task_id for e in events], [e.queue for e in events]
    return compact([ids, task_ids, queues, types, times, workers, details])


def event_row(e: TaskEvent) -> tuple[Any, ...]:
    """One event's values in :data:`APPEND`'s order (a ``delay()``'s event)."""
    return (
        e.id,
        e.task_id,
        e.queue,
        _type_value(e.type),
        e.timestamp,
        e.worker_id,
        _json.encode(e.detail).decode(),
    )


def event_records(events: Sequence[TaskEvent]) -> list[tuple[Any, ...]]:
    """Rows of :data:`EVENT_COLUMNS` for ``COPY``; the detail's JSON is made once for
    the events that share one detail dict (a bulk's ``enqueued`` events do)."""
    rows = []
    shared: dict[str, Any] | None = None
    text = ""
    for e in events:
        if e.detail is not shared:
            shared = e.detail
            text = _json.encode(shared).decode()
        rows.append((e.id, e.task_id, e.queue, _type_value(e.type), e.timestamp, e.worker_id, text))
    return rows


def copy_records(events: Sequence[TaskEvent]) -> list[tuple[Any, ...]]:
    """Rows of :data:`COPY_COLUMNS` for ``COPY``: :func:`batch_record`'s one row when the
    events share all but their ids, else one row each (:func:`event_records`')."""
    row = batch_record(events)
    if row is not None:
        return [row]
    return [(*row, None, None, None, None, None) for row in event_records(events)]


def batch_record(events: Sequence[TaskEvent]) -> tuple[Any, ...] | None:
    """Several events that share their queue, type, time, worker and detail (a bulk's
    ``enqueued`` events, each its own event and task id) as one row of
    :data:`COPY_COLUMNS` that holds their ids (migration 15): one heap row and three
    index entries for them all instead of for each. None for one event, events that
    differ, or an id with a space in it."""
    n = len(events)
    if n < 2:
        return None
    first = events[0]
    ids = " ".join([e.id for e in events])
    task_list = [e.task_id for e in events]
    task_ids = " ".join(task_list)
    detail = first.detail
    if not (
        ids.count(" ") == n - 1
        and task_ids.count(" ") == n - 1
        and [e.detail for e in events].count(detail) == n
        and [e.timestamp for e in events].count(first.timestamp) == n
        and [e.queue for e in events].count(first.queue) == n
        and [e.type for e in events].count(first.type) == n
        and [e.worker_id for e in events].count(first.worker_id) == n
    ):
        return None
    return (
        first.id,
        "",
        first.queue,
        _type_value(first.type),
        first.timestamp,
        first.worker_id,
        _json.encode(detail).decode(),
        ids,
        task_ids,
        n,
        min(task_list),
        max(task_list),
    )


def event_columns(events: Sequence[TaskEvent]) -> list[list[Any]]:
    """The id, type, time, worker and detail (JSON) of each event, as column arrays."""
    return [
        [e.id for e in events],
        [_type_value(e.type) for e in events],
        [e.timestamp for e in events],
        [e.worker_id for e in events],
        [_json.encode(e.detail).decode() for e in events],
    ]


def _type_value(kind: EventType | str) -> str:
    """The stored name of an event type: a dict lookup (a member hashes as its value)
    where ``EventType(kind)`` costs an enum call per event."""
    name = _TYPE_NAMES.get(kind)
    return name if name is not None else EventType(kind).value


class PostgresEventStorage(PostgresStore, BaseEventStorage):
    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        await self.execute(APPEND, *append_args(events))

    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: Iterable[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> list[TaskEvent]:
        clauses: list[str] = []
        args: list[Any] = []

        def where(clause: str, value: Any) -> None:
            args.append(value)
            clauses.append(clause.replace("?", f"${len(args)}"))

        if queue is not None:
            where("queue = ?", queue)
        if types is not None:
            where("type = ANY (?::text[])", [str(getattr(t, "value", t)) for t in types])
        if since is not None:
            where("ts >= ?", since)
        if until is not None:
            where("ts < ?", until)
        sql = _query_sql(clauses, task_id is not None, order, limit is not None)
        if task_id is not None:
            args.append(task_id)
        if limit is not None:
            args.append(limit)
        rows = await self.fetch(sql, *args)
        found = (decode_or_skip(_event, r, "the events table", r[0]) for r in rows)
        return [event for event in found if event is not None]

    async def _counts(
        self,
        *,
        since: float,
        until: float,
        step: float,
        queue: str | None,
        types: list[str] | None,
    ) -> list[EventCount]:
        """Counted by the server (the default would fetch every event of the window)."""
        rows = await self.fetch(COUNTS, float(since), float(until), float(step), queue, types)
        return [EventCount(since + r[0] * step, r[1], r[2], r[3]) for r in rows]

    async def _cleanup(self, older_than: float) -> int:
        return int(await self.fetchval(CLEANUP, older_than))


def _query_sql(clauses: list[str], by_task: bool, order: str, limited: bool) -> str:
    """The events of the rows that are one event each and of the rows of several
    (:data:`BATCHED`), filtered by ``clauses`` (on the row: queue, type, time), by the
    task (the parameter after the clauses' when ``by_task``) and limited (the last
    parameter when ``limited``), in order of time, then of appending.

    A limit bounds the rows read on each side: the rows of several are read in order
    up to the one that reaches the limit's number of events (a running sum of their
    sizes), so the newest 100 events expand one batch, not 100. By task, the rows of
    several read are those whose range of task ids holds the id (the
    ``events_batch_tasks`` index), and of those the ones whose list has it: each holds
    an event of the task, so at most the limit's number of them are expanded."""
    task_param = f"${len(clauses) + 1}"
    limit_param = f"${len(clauses) + 1 + by_task}"
    where = "".join(f" AND {c}" for c in clauses)
    in_order = f" ORDER BY b.ts {order}, b.seq {order}"
    single = (
        "SELECT id, task_id, queue, type, ts, worker_id, detail, seq, 0::bigint AS ord"
        " FROM {s}.events b WHERE batch_ids IS NULL"
        + (f" AND task_id = {task_param}" if by_task else "")
        + where
        + (f"{in_order} LIMIT {limit_param}" if limited else "")
    )
    task = ""
    rows = BATCH_ROWS + where
    if by_task:
        rows = (
            "SELECT * FROM {s}.events b WHERE b.batch_ids IS NOT NULL"
            f" AND b.batch_task_min <= {task_param} AND b.batch_task_max >= {task_param}"
            f"{where} AND strpos(' ' || b.batch_task_ids || ' ', ' ' || {task_param} || ' ') > 0"
        )
        task = f" WHERE x.task_id = {task_param}"
        if limited:
            rows += f"{in_order} LIMIT {limit_param}"
    elif limited:
        rows = (
            f"SELECT * FROM (SELECT b.*, sum(b.batch_size) OVER ({in_order}"
            f" ROWS UNBOUNDED PRECEDING) AS upto FROM ({rows}) b{in_order}"
            f" LIMIT {limit_param}) b WHERE b.upto - b.batch_size < {limit_param}"
        )
    batched = BATCHED.replace("{rows}", rows).replace("{task}", task)
    return f"({single}) UNION ALL ({batched}) ORDER BY ts {order}, seq {order}, ord {order}" + (
        f" LIMIT {limit_param}" if limited else ""
    )


def _event(r: Sequence[Any]) -> TaskEvent:
    return TaskEvent(
        id=r[0],
        task_id=r[1],
        queue=r[2],
        type=EVENT_TYPES.get(r[3], r[3]),
        timestamp=r[4],
        worker_id=r[5],
        detail=_detail.decode(r[6]),
    )
