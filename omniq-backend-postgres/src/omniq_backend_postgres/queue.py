"""The task queue on PostgreSQL.

Reserve is one call of the schema's ``reserve()``: a CTE picks ready rows ``FOR UPDATE
SKIP LOCKED LIMIT n`` along the ready index and an UPDATE leases them, so concurrent
workers never block on, nor share, a task, and the cost of a batch does not depend on how
many tasks are queued nor on the table's statistics (``sql/0008_...``). Leases,
ETAs and expiry are judged by the server's ``now()``. Finishing a task settles its
dependents in the same transaction (``settle()`` in the schema, see
``sql/0001_initial.sql``). The enqueue statement itself NOTIFYs each queue that got a
ready task (an update that makes a task ready does through a trigger), so workers
blocked in :meth:`wait_for_work` wake as soon as the enqueuing transaction commits.
"""

from __future__ import annotations

import asyncio
import builtins  # the queue's list() method shadows the type in the class body
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, ClassVar

import asyncpg
import msgspec

from omniq.errors import TaskNotFoundError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseStore,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    LeaseRef,
    TaskPage,
    as_stored,
)
from omniq.lifecycle import attempts_allowed, initial_state, runs_on_failure
from omniq.limits import Limits, Reservation
from omniq.models import (
    ErrorInfo,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    encoder,
    worker_decoder,
)

from .events import (
    APPEND,
    APPEND_TEMPLATE,
    COPY_COLUMNS,
    append_args,
    batch_record,
    copy_records,
    event_columns,
    event_row,
)
from .limits import reserve_limited
from .paging import list_page
from .results import ON_CONFLICT, UPSERT_TEMPLATE, upsert_args
from .rows import (
    SCHEDULE_COLUMNS,
    STATES,
    TASK_COLUMNS,
    encode_error,
    rescue_row,
    schedule_from_row,
    task_from_row,
)
from .store import (
    EPOCH_NOW,
    PostgresStore,
    broadcast,
    compact,
    json_array,
    shift_params,
    text_array,
    wait_event,
)

__all__ = ["PostgresTaskQueue"]

READY = "('pending', 'scheduled', 'retrying')"
TERMINAL = "('succeeded', 'failed', 'cancelled', 'expired', 'dead')"
_SETTLED_AT_INSERT = frozenset({TaskState.WAITING, TaskState.CANCELLED})
#: Largest batch that enqueue_recorded writes with :data:`INSERT_RECORDED`, one statement
#: without a transaction. That statement joins the events to the inserted rows, planned
#: once for any batch size (generic plans) as a nested loop, which is quadratic: a
#: 10,000-task bulk took 4 s instead of 0.3 s. Larger batches go as :data:`INSERT_BULK`.
RECORDED_MAX = 100

INSERT = f"""
WITH clock AS (SELECT {EPOCH_NOW} AS now),
ins AS (
    INSERT INTO {{s}}.tasks (id, queue, name, priority, state, eta, expires_at, created_at,
                             attempts, max_attempts, result_ttl, dead_ttl, schedule_id,
                             finished_at, error, data)
    SELECT i.id, i.queue, i.name, i.priority,
           coalesce(i.state, CASE WHEN i.eta > clock.now THEN 'scheduled' ELSE 'pending' END),
           i.eta, i.expires_at, CASE WHEN i.created_at > 0 THEN i.created_at ELSE clock.now END,
           i.attempts, i.max_attempts, i.result_ttl, i.dead_ttl, i.schedule_id,
           CASE WHEN i.state = 'cancelled' THEN clock.now END, i.error, i.data
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::float8[],
                $7::float8[], $8::float8[], $9::int4[], $10::int4[], $11::float8[], $12::float8[],
                $13::text[], $14::jsonb[], $15::bytea[])
         WITH ORDINALITY AS i(id, queue, name, priority, state, eta, expires_at, created_at,
                              attempts, max_attempts, result_ttl, dead_ttl, schedule_id, error,
                              data, ord),
         clock
    ORDER BY i.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id, state, created_at, finished_at, queue
),
-- wake the workers of each queue that got a ready task (delivered at commit) when one
-- may be waiting: a listener holds the queue's interest lock while it waits, and an
-- enqueue that takes that lock keeps it to its commit (see listener.py); the filter
-- below is a one-time InitPlan that makes this CTE run
woken AS (
    SELECT pg_notify({{tasks_channel}}, q.queue)
    FROM (SELECT DISTINCT queue FROM ins WHERE state = 'pending') q
    WHERE NOT pg_try_advisory_xact_lock(hashtextextended({{tasks_channel}} || ':' || q.queue, 0))
)
SELECT id, state, created_at, finished_at FROM ins WHERE (SELECT count(*) FROM woken) >= 0
"""
#: INSERT plus each task's ``enqueued`` event in the same statement (one round trip, one
#: commit): the event gets the queue, name and state of the task as stored, which for an
#: id that existed already is its row from before the statement.
INSERT_RECORDED = INSERT.replace(
    "SELECT id, state, created_at, finished_at FROM ins WHERE",
    """,
recorded AS (
    INSERT INTO {s}.events (id, task_id, queue, type, ts, worker_id, detail)
    SELECT e.id, e.task_id, coalesce(e.existed ->> 'queue', e.queue), e.type, e.ts, e.worker_id,
           e.detail || jsonb_build_object(
               'name', coalesce(e.existed ->> 'name', e.detail ->> 'name'),
               'state', coalesce(e.state, e.existed ->> 'state'))
    FROM (
        SELECT e.*, ins.state,
               -- the row of an id that existed, by a lookup per such event: a subquery
               -- here cannot become a join that scans the table, which a generic plan
               -- (made once, maybe while the table is empty) would otherwise choose
               CASE WHEN ins.id IS NULL THEN
                   (SELECT jsonb_build_object('queue', x.queue, 'name', x.name, 'state', x.state)
                    FROM {s}.tasks x WHERE x.id = e.task_id)
               END AS existed
        FROM unnest($16::text[], $17::text[], $18::text[], $19::text[], $20::float8[],
                    $21::text[], $22::jsonb[])
             WITH ORDINALITY AS e(id, task_id, queue, type, ts, worker_id, detail, ord)
             LEFT JOIN ins ON ins.id = e.task_id
    ) e
    ORDER BY e.ord
)
SELECT id, state, created_at, finished_at FROM ins WHERE""",
)

#: A bulk's statement for tasks that are ready at once (no eta, no state decided by the
#: caller): the tasks' INSERT, then their ``enqueued`` events (each saying ``pending``)
#: from a second unnest, of the events' arrays and the tasks' ids and queues, joined to
#: nothing (a join to the inserted rows is planned once, generically, as a nested loop:
#: quadratic in the batch). It writes the events only when every task was inserted, the
#: usual bulk; otherwise none, and the caller appends them for the tasks as stored (an
#: id that existed keeps its own queue, name and state), in the same transaction.
INSERT_BULK = broadcast(
    INSERT.replace(
        "SELECT id, state, created_at, finished_at FROM ins WHERE",
        """,
recorded AS (
    INSERT INTO {s}.events (id, task_id, queue, type, ts, worker_id, detail)
    SELECT e.id, e.task_id, e.queue, e.type, e.ts, e.worker_id, e.detail
    FROM unnest($16::text[], $1::text[], $2::text[], $17::text[], $18::float8[], $19::text[],
                $20::jsonb[])
         WITH ORDINALITY AS e(id, task_id, queue, type, ts, worker_id, detail, ord)
    WHERE (SELECT count(*) FROM ins) = cardinality($1::text[])
    ORDER BY e.ord
)
SELECT id, state, created_at, finished_at FROM ins WHERE""",
    )
)

#: A batch's statement in flight: the inserted rows to come, the batch, and whether it
#: writes the events too (see :meth:`PostgresTaskQueue._statement`).
Flight = tuple["asyncio.Future[list[asyncpg.Record]]", Batch, bool]

#: The columns a bulk's ``COPY`` fills for tasks that are ready at once (the others are
#: NULL, or the identity's next ``seq``), and for their events (:func:`_copy_rows`,
#: :func:`.events.copy_records`).
COPY_TASK_COLUMNS = (
    "id", "queue", "name", "priority", "state", "eta", "expires_at", "created_at", "attempts",
    "max_attempts", "result_ttl", "dead_ttl", "schedule_id", "error", "data",
)  # fmt: skip
#: Wake the workers of the queues a bulk's ``COPY`` filled (delivered at commit), by the
#: rule of :data:`INSERT`'s ``woken``: only a queue whose interest lock a listener holds.
NOTIFY_QUEUES = """
SELECT pg_notify({tasks_channel}, q) FROM unnest($1::text[]) q
WHERE NOT pg_try_advisory_xact_lock(hashtextextended({tasks_channel} || ':' || q, 0))
"""

_UNNEST = re.compile(r"unnest\(([^()]*)\)\s*WITH ORDINALITY AS (\w+)\(", re.S)


def _one_row(sql: str) -> str:
    """``sql`` with each ``unnest($n::t[], ...) WITH ORDINALITY`` made one VALUES row of
    scalars (``$n::t``): a one-task enqueue (``delay()``) then sends 22 scalars, not 22
    one-element arrays, which asyncpg encodes at about three type checks each (a third
    of the client's Python time per task), and the server plans no function scan."""

    def row(match: re.Match[str]) -> str:
        scalars = re.sub(r"::(\w+)\[\]", r"::\1", match.group(1))
        return f"(VALUES ({scalars}, 1::bigint)) AS {match.group(2)}("

    return _UNNEST.sub(row, sql)


#: :data:`INSERT` for one task, and :data:`INSERT_RECORDED` for one task and its one
#: event (see :func:`_one_row`).
INSERT_ONE = _one_row(INSERT)
INSERT_RECORDED_ONE = _one_row(INSERT_RECORDED)
#: :data:`INSERT` and :data:`INSERT_RECORDED` for a batch: each column after the ids may
#: come as one element for all (:func:`.store.broadcast`, :func:`.store.compact`).
INSERT_MANY = broadcast(INSERT)
INSERT_RECORDED_MANY = broadcast(INSERT_RECORDED)
#: :data:`INSERT_BULK` and :data:`INSERT_MANY` for ids not stored yet: a plain INSERT,
#: which costs the server ~10% less than ``ON CONFLICT DO NOTHING`` (whose speculative
#: insertion writes one more WAL record a row). An id that exists, or given twice, fails
#: it with a unique violation; the bulk is then written again with the statements above.
INSERT_BULK_NEW = INSERT_BULK.replace("ON CONFLICT (id) DO NOTHING", "")
INSERT_MANY_NEW = INSERT_MANY.replace("ON CONFLICT (id) DO NOTHING", "")

#: The schema's reserve() (``sql/0008_reserve_along_the_ready_index.sql``): rows of
#: ``priority, seq,`` then :data:`TASK_COLUMNS`, in the order the tasks were picked.
RESERVE = "SELECT * FROM {s}.reserve($1::text[], $2, $3, $4)"
#: :data:`RESERVE` run on its own (not in a caller's transaction), committed without
#: waiting for its WAL flush (``synchronous_commit = off`` for this transaction only, set
#: by a one-time InitPlan before the scan): the flush was ~0.15 ms of the ~0.5 ms
#: reserve, on the path from a task's enqueue to its result. A crash can lose only the
#: last few such commits (the next flush, e.g. the task's finish, makes them durable),
#: and a lost lease is what at-least-once delivery already handles: the task is ready
#: again, runs again, and the first attempt's finish is refused by its token. (A reserve
#: under limits, :mod:`.limits`, stays synchronous: its limit state must survive.)
RESERVE_ALONE = (
    RESERVE + " WHERE (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
)
#: Longest wait for work (seconds) that skips ``next_ready()`` after a reserve that
#: drained its queues: the most a delayed task falling due meanwhile can be late.
DRAINED_WAIT = 0.02

#: The schema's heartbeat_many() (migration 14: one primary-key probe per lease at any
#: table size); the ids of the leases renewed.
HEARTBEAT = "SELECT {s}.heartbeat_many($1::text[], $2::text[], $3::float8)"

FENCED = "WHERE id = $1 AND lease_token = $2 AND state = 'running'"
CLEAR_LEASE = "lease_owner = NULL, lease_token = NULL, lease_deadline = NULL"

RETRY = f"""
UPDATE {{s}}.tasks SET state = 'retrying', eta = $3, error = coalesce($4::jsonb, error),
    {CLEAR_LEASE}
{FENCED} RETURNING id
"""
RELEASE = f"""
UPDATE {{s}}.tasks SET state = 'pending', attempts = greatest(attempts - 1, 0), {CLEAR_LEASE}
{FENCED} RETURNING id
"""
DEAD_LETTER = f"""
UPDATE {{s}}.tasks SET state = 'dead', finished_at = {EPOCH_NOW},
    error = coalesce($3::jsonb, error), {CLEAR_LEASE}
WHERE id = $1 AND CASE WHEN $2::text IS NULL THEN state NOT IN {TERMINAL}
                       ELSE lease_token = $2 AND state = 'running' END
RETURNING id
"""
CANCEL = f"""
UPDATE {{s}}.tasks SET state = 'cancelled', finished_at = {EPOCH_NOW}, {CLEAR_LEASE}
WHERE id = $1 AND state NOT IN {TERMINAL}
RETURNING id
"""
RELEASE_EXPIRED = f"""
WITH clock AS (SELECT {EPOCH_NOW} AS now),
lapsed AS (
    SELECT t.id FROM {{s}}.tasks t, clock
    WHERE t.state = 'running' AND t.lease_deadline < clock.now
    FOR UPDATE OF t SKIP LOCKED
),
returned AS (
    UPDATE {{s}}.tasks t
    SET state = CASE WHEN t.attempts >= t.max_attempts THEN 'dead' ELSE 'pending' END,
        finished_at = CASE WHEN t.attempts >= t.max_attempts THEN clock.now END,
        error = CASE WHEN t.attempts >= t.max_attempts THEN jsonb_build_object(
                    'type', 'LeaseExpired',  -- as omniq.lifecycle.lapse_error()
                    'message', format('lease lapsed on attempt %s of %s: '
                                      'its worker keeps dying or hanging',
                                      t.attempts, t.max_attempts))
                ELSE t.error END,
        {CLEAR_LEASE}
    FROM lapsed, clock
    WHERE t.id = lapsed.id
    RETURNING t.id, {TASK_COLUMNS}
)
SELECT * FROM returned
"""
EXPIRE = f"""
WITH clock AS (SELECT {EPOCH_NOW} AS now),
expired AS (
    UPDATE {{s}}.tasks t SET state = 'expired', finished_at = clock.now
    FROM clock
    WHERE t.expires_at <= clock.now AND t.state IN ('pending', 'scheduled', 'retrying', 'waiting')
    RETURNING t.id, {TASK_COLUMNS}
)
SELECT * FROM expired
"""
DELETE_FINISHED = f"""
DELETE FROM {{s}}.tasks
WHERE finished_at IS NOT NULL AND state IN {TERMINAL}
  AND finished_at + CASE WHEN state = 'dead' THEN dead_ttl ELSE result_ttl END <= {EPOCH_NOW}
"""
#: Seconds until ``$1``'s queues have work: 0 when a task is ready now, NULL when none is
#: queued (``sql/0009_next_ready_from_the_indexes.sql``).
NEXT_READY = "SELECT {s}.next_ready($1::text[])"
#: complete_many()'s arguments come as array literals (:func:`_complete_args`).
COMPLETE_ARGS = "$1::text::text[], $2::text::text[], $3::text::text[], $4::text::jsonb[]"
COMPLETE_MANY = f"SELECT {{s}}.complete_many({COMPLETE_ARGS})"
#: complete_many() with the results and events of the tasks it completed (and those of
#: tasks not in the batch), in one statement: the inserts read the ids the function
#: returns, so a result or an event of a refused completion is never written.
#: The batch's ids, ``$1``, are parsed once, by an InitPlan (a cast in the filters would
#: parse the literal for each row they test). Every column of the results and events
#: that is never compacted comes as one literal too (:func:`_finish_result_args`,
#: :func:`_finish_event_args`); the counts the compacted ones are spread to come as
#: ``$17`` and ``$18`` (:func:`_counted_keys`).
_FINISH_MANY_LISTS = broadcast(
    "WITH done AS (SELECT id FROM\n"
    f"    {{s}}.complete_many({COMPLETE_ARGS}) AS id),\n"
    "r AS ("
    + shift_params(UPSERT_TEMPLATE, 4).replace(
        "$9::bytea[])",
        "$9::bytea[]) AS x(task_id, state, finished_at, expires_at, data)\n"
        "WHERE x.task_id IN (SELECT id FROM done)"
        " OR NOT (x.task_id = ANY ((SELECT $1::text::text[])::text[]))",
    )
    + "),\n"
    "e AS ("
    + shift_params(APPEND_TEMPLATE, 9)
    .replace("$11::text[]", "$11::text::text[]")
    .replace("$13::text[]", "$13::text::text[]")
    .replace("$16::jsonb[]", "$16::text::jsonb[]")
    .replace(
        "ORDER BY i.ord",
        "WHERE i.task_id IN (SELECT id FROM done)"
        " OR NOT (i.task_id = ANY ((SELECT $1::text::text[])::text[]))\n"
        "ORDER BY i.ord",
    )
    + ")\n"
    "SELECT id FROM done WHERE (SELECT count(pg_notify({results_channel}, notice)) FROM r) >= 0"
)


def _counted_keys(sql: str, counts: dict[str, str]) -> str:
    """``sql``, a :func:`.store.broadcast` statement, with each key array (``$k::text[]``,
    the first of its ``unnest``) of ``counts`` taken as one literal, and the row count
    its compacted columns are spread to read from the integer parameter ``counts[k]``:
    as the key's ``cardinality()`` it would parse the literal again for each of them."""
    for key, count in counts.items():
        sql = sql.replace(f"ARRAY[cardinality({key}::text[])]", f"ARRAY[{count}::int]")
        sql = sql.replace(f"{key}::text[]", f"{key}::text::text[]")
    return sql


#: The statement sent: the results' and events' first arrays as literals, their counts
#: ``$17`` and ``$18`` (:func:`_finish_result_args`, :func:`_finish_event_args`).
FINISH_MANY = _counted_keys(_FINISH_MANY_LISTS, {"$5": "$17", "$10": "$18"})
#: :data:`FINISH_MANY` with a plain INSERT of the results, for tasks with no result
#: stored yet (the rule): speculative insertion (``ON CONFLICT``) first probes the primary
#: key, then writes one more WAL record a row (~5 % of the server's CPU while a worker
#: drains a queue). A result that exists fails it with a unique violation, and nothing of
#: the statement stays: the batch then goes again as :data:`FINISH_MANY`.
FINISH_MANY_NEW = FINISH_MANY.replace(ON_CONFLICT, "")
CLAIM_SCHEDULES = """
UPDATE {s}.schedules s SET next_run = c.next_run, last_run = c.last_run
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[])
    AS c(id, old_next_run, next_run, last_run)
WHERE s.id = c.id AND s.next_run = c.old_next_run AND NOT s.paused
RETURNING s.id
"""


def _insert_args(
    tasks: Sequence[Task],
    states: Sequence[str | None] | None = None,
    errors: Sequence[str | None] | None = None,
) -> list[list[Any]]:
    """Column arrays for :data:`INSERT` (state None: decided by the server from eta): the
    columns of :func:`_insert_row`, built a column at a time (~20 % less CPU for a bulk
    than turning the rows)."""
    n = len(tasks)
    return [
        [t.id for t in tasks],
        [t.queue for t in tasks],
        [t.name for t in tasks],
        [t.priority for t in tasks],
        list(states) if states is not None else [None] * n,
        [t.eta for t in tasks],
        [t.expires_at for t in tasks],
        [t.created_at for t in tasks],
        [t.attempts for t in tasks],
        [attempts_allowed(t) for t in tasks],
        [t.result_ttl for t in tasks],
        [t.dead_ttl for t in tasks],
        [t.schedule_id for t in tasks],
        list(errors) if errors is not None else [None] * n,
        [encoder.encode(t) for t in tasks],
    ]


def _insert_row(t: Task, state: str | None = None, error: str | None = None) -> tuple[Any, ...]:
    """One task's values for :data:`INSERT_ONE`: :func:`_insert_args` for one task
    without its fifteen one-element lists (a ``delay()``'s)."""
    return (
        t.id,
        t.queue,
        t.name,
        t.priority,
        state,
        t.eta,
        t.expires_at,
        t.created_at,
        t.attempts,
        attempts_allowed(t),
        t.result_ttl,
        t.dead_ttl,
        t.schedule_id,
        error,
        encoder.encode(t),
    )


def _copyable(tasks: Sequence[Task]) -> bool:
    """Whether ``tasks`` can go by ``COPY`` (:func:`_copy_rows`): each ready at once (no
    eta: ``pending`` without asking the server's clock) with its creation time."""
    # (a list comprehension: a generator under all() resumes a frame a task)
    return not [t for t in tasks if t.eta is not None or not t.created_at > 0]


def _copy_rows(tasks: Sequence[Task]) -> list[tuple[Any, ...]]:
    """Rows of :data:`COPY_TASK_COLUMNS` for :func:`_copyable` tasks: what :data:`INSERT`
    stores for them (state ``pending``, no error, not finished). (:func:`_insert_row`
    written out: a Python frame less a task, ~1,000 instructions of a bulk's ~30,000.)"""
    encode = encoder.encode
    return [
        (
            t.id,
            t.queue,
            t.name,
            t.priority,
            "pending",
            t.eta,
            t.expires_at,
            t.created_at,
            t.attempts,
            attempts_allowed(t),
            t.result_ttl,
            t.dead_ttl,
            t.schedule_id,
            None,
            encode(t),
        )
        for t in tasks
    ]


def _copy_event_rows(tasks: Sequence[Task], events: Sequence[TaskEvent]) -> list[tuple[Any, ...]]:
    """Rows of :data:`.events.COPY_COLUMNS` for the events of :func:`_copyable` tasks,
    each saying its task is stored ``pending`` (:func:`omniq.interfaces.as_stored`). A
    bulk's events share one detail that says so already, and its tasks one queue and
    name: checked once for the batch, its events go as one row without a call per event."""
    first = events[0]
    detail = first.detail
    names = [t.name for t in tasks]
    if (
        len(events) == len(names)
        and detail.get("state") == "pending"
        and detail.get("name") == names[0]
        and names.count(names[0]) == len(names)
        and [t.queue for t in tasks].count(first.queue) == len(tasks)
    ):
        row = batch_record(events)  # (None unless every event has that queue and detail)
        if row is not None:
            return [row]
    pending = TaskState.PENDING
    return copy_records([as_stored(e, t, pending) for e, t in zip(events, tasks, strict=True)])


#: The most batches one ``COPY`` of a bulk takes (:class:`_CopyStream`): its rows are
#: built and encoded without a turn of the event loop, so a bulk of many more gives the
#: loop a turn (and starts another ``COPY``) every 20 batches (10,000 tasks).
COPY_BATCHES = 20
#: How long a bulk's ``COPY`` goes on taking batches (:class:`_CopyStream`): it is one
#: statement while the client builds them, and the server's ``statement_timeout`` counts
#: all of that time, which a ``COPY`` a batch kept to about one batch's (a few ms); a
#: stream whose batches build slowly stops at about that.
COPY_SECONDS = 0.02


class _CopyStream:
    """The ``COPY`` rows (:func:`_copy_rows`) of a batch of new tasks ready at once and
    of the batches after it in ``source`` while those are too (up to
    :data:`COPY_BATCHES`, taken within :data:`COPY_SECONDS`), each batch built as the
    rows before it are sent: one statement for them all, whose rows the server inserts
    while the client builds and encodes the next ones (a ``COPY`` a batch left the
    server idle while its rows were encoded and between batches, and made its slots and
    statement state again each time). Kept as it goes: the tasks as stored, their
    events' rows, their queues, and the batch that ended it, if any.

    The rows are a plain iterator, which asyncpg reads in C and sends every 512 KiB:
    rows from an async iterator cost ~1,400-2,600 more instructions a task (one
    ``StopIteration`` or coroutine a row)."""

    __slots__ = ("after", "copied", "held", "recorded", "source", "stored")

    def __init__(self, source: Iterator[Batch], recorded: bool) -> None:
        self.source = source
        self.recorded = recorded
        self.stored: list[Task] = []
        self.held: list[tuple[Any, ...]] = []
        self.copied: set[str] = set()
        self.after: Batch | None = None

    def rows(self, tasks: Sequence[Task], events: Sequence[TaskEvent]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``tasks`` and of the batches after them, built as they are read."""
        return itertools.chain.from_iterable(self._batches(tasks, events))

    def _batches(
        self, tasks: Sequence[Task], events: Sequence[TaskEvent]
    ) -> Iterator[list[tuple[Any, ...]]]:
        pending = TaskState.PENDING
        until = time.monotonic() + COPY_SECONDS  # (the statement starts as rows are read)
        for taken in range(1, COPY_BATCHES + 1):
            if tasks:
                if events:
                    self.held += _copy_event_rows(tasks, events)
                self.copied.update([t.queue for t in tasks])
                self.stored += [
                    t
                    if t.state is pending and t.finished_at is None
                    else msgspec.structs.replace(t, state=pending, finished_at=None)
                    for t in tasks
                ]
                yield _copy_rows(tasks)
            if taken == COPY_BATCHES or time.monotonic() > until:
                return
            batch = next(self.source, None)
            if batch is None:
                return
            tasks, events = batch
            if not self.recorded:
                events = ()
            if [t for t in tasks if t.depends_on] or not _copyable(tasks):
                self.after = batch
                return


def _complete_args(items: Sequence[Completion]) -> list[str]:
    """Arguments of the schema's complete_many() (states checked by the base), each
    column one array literal (:func:`.store.text_array`, :func:`.store.json_array`: no
    per-element checks)."""
    return [
        text_array([i[0] for i in items]),
        text_array([i[1] for i in items]),
        text_array([i[2]._value_ for i in items]),  # (``.value``: a Python-level property)
        json_array([encode_error(i[3]) for i in items]),
    ]


def _finish_result_args(results: Sequence[TaskResult]) -> tuple[list[Any], int]:
    """:func:`.results.upsert_args` for :data:`FINISH_MANY`, the task ids as one array
    literal (:func:`.store.text_array`); and the results' count (``$17``)."""
    args: list[Any] = upsert_args(results)
    count = len(args[0])  # (a task id repeated in the batch is written once)
    args[0] = text_array(args[0])
    return args, count


def _finish_event_args(events: Sequence[TaskEvent]) -> tuple[list[Any], int]:
    """:func:`.events.append_args` for :data:`FINISH_MANY`, the columns a worker's events
    never share (ids, task ids, types, details) as one array literal each
    (:func:`.store.text_array`, :func:`.store.json_array`: asyncpg checks each element
    of a list against abstract base classes, two Python-level ``isinstance`` calls for
    a string); and the events' count (``$18``). The times stay a list: as a literal
    each costs the server ~200 ns more to read (``float8in``) than it saves here."""
    ids, types, times, workers, details = event_columns(events)
    _, queues, workers = compact([ids, [e.queue for e in events], workers])
    task_ids = text_array([e.task_id for e in events])
    literals = text_array(ids), task_ids, text_array(types), json_array(details)
    return [*literals[:2], queues, literals[2], times, workers, literals[3]], len(ids)


#: The waiting direct dependents of purged parents ($1), each with its parent: read
#: before settle() cancels them.
PURGED_WAITING = """
SELECT d.child_id, d.parent_id
FROM unnest($1::text[]) AS p(id) JOIN {s}.dependencies d ON d.parent_id = p.id
JOIN {s}.tasks c ON c.id = d.child_id
WHERE c.state = 'waiting'
"""

#: Those settle() cancelled for that parent ($1 children, $2 their parents) name the
#: purge: omniq.lifecycle.purge_failure(). Joined by primary key: a join from the
#: dependencies took two minutes for 10,000 parents.
PURGED_MESSAGE = """
UPDATE {s}.tasks c
SET error = jsonb_set(
    c.error, '{message}', to_jsonb(format('parent task ''%s'' was purged', x.parent)))
FROM unnest($1::text[], $2::text[]) AS x(id, parent)
WHERE c.id = x.id AND c.state = 'cancelled'
  AND c.error ->> 'message' = format('parent task ''%s'' ended cancelled', x.parent)
"""


def _where(
    queue: str | None, states: Iterable[TaskState] | None, start: int = 1
) -> tuple[str, list[Any]]:
    """A WHERE clause filtering by queue and states, with its bound arguments."""
    clauses: list[str] = []
    args: list[Any] = []
    if queue is not None:
        args.append(queue)
        clauses.append(f"queue = ${start + len(args) - 1}")
    if states is not None:
        args.append([TaskState(s).value for s in states])
        clauses.append(f"state = ANY (${start + len(args) - 1}::text[])")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class PostgresTaskQueue(PostgresStore, BaseTaskQueue):
    """Tasks in ``<schema>.tasks``; see the module docstring for how it works."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.SCHEDULES,
            Capability.DEPENDENCIES,
            Capability.CROSS_PROCESS,
            Capability.BLOCKING_RESERVE,
            Capability.LIMITS,
        }
    )
    channel_suffix = "tasks"
    #: A reserve that returns fewer tasks than its limit took every ready task but those
    #: another transaction held locked (another worker's reserve, mostly); and
    #: :meth:`_wait_for_work` returns at once if one is ready, or within
    #: :data:`DRAINED_WAIT` when it skips that check.
    reserve_drains = True
    #: The queues of the last reserve, if it drained them while listening, and the
    #: listener's count then (see :meth:`_wait_for_work`).
    _drained: tuple[tuple[str, ...], int] | None = None

    # -- enqueue -------------------------------------------------------------------------

    async def enqueue(self, task: Task, *, connection: asyncpg.Connection | None = None) -> Task:
        """Store ``task``; with ``connection``, inside that connection's transaction."""
        if connection is not None:
            return await self.using(connection).enqueue(task)
        return await super().enqueue(task)

    async def enqueue_many(
        self, tasks: Sequence[Task], *, connection: asyncpg.Connection | None = None
    ) -> list[Task]:
        """Store ``tasks``; with ``connection``, inside that connection's transaction."""
        if connection is not None:
            return await self.using(connection).enqueue_many(tasks)
        return await super().enqueue_many(tasks)

    async def _enqueue_recorded(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """``delay()``'s call: one task without parents, with its events in this schema or
        events off, goes straight to its one statement (what :meth:`_enqueue` does for
        it), without the batch machinery (``enqueue_batches``, the ``_enqueue``
        generator and its hooks); the rest the general way."""
        if len(tasks) == 1 and not tasks[0].depends_on:
            if event_storage is None:
                return await self._run(lambda conn: self._insert(conn, tasks))
            if self._shares_home(event_storage):
                return await self._run(lambda conn: self._insert(conn, tasks, events=events))
        return await super()._enqueue_recorded(tasks, events, event_storage)

    def _shares_home(self, store: BaseStore) -> bool:
        """Result and event stores in this schema of this database."""
        return self.shares_schema(store)

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[list[Task]]:
        """A batch given whole (``delay()``, a bulk of one batch) of at most
        :data:`RECORDED_MAX` tasks without parents, or without events: one statement,
        tasks with their events (:data:`INSERT_RECORDED`). Otherwise one transaction on
        one connection (one commit, and never tasks without their events): a statement
        per batch (:data:`INSERT_BULK`), sent before the next batch is built, so the
        server writes one batch while the client builds the next; tasks with
        ``depends_on`` one by one, in order."""
        if isinstance(batches, Sequence) and len(batches) == 1:
            tasks, events = batches[0]
            if not tasks:
                return
            if event_storage is None:
                events = ()
            if not any(t.depends_on for t in tasks) and (not events or len(tasks) <= RECORDED_MAX):
                yield await self._run(lambda conn: self._insert(conn, tasks, events=events))
                return
        taken: list[Batch] = []  # a retry on another connection writes these again
        source = iter(batches)

        def replay() -> Iterator[Batch]:
            yield from builtins.list(taken)
            for batch in source:
                taken.append(batch)
                yield batch

        recorded = event_storage is not None
        # (a caller's transaction cannot be tried again: its ids may exist)
        new = self._conn is None
        try:
            stored = await self._run(
                lambda conn: self._write_batches(conn, replay(), recorded, new),
                transaction=True,
            )
        except asyncpg.UniqueViolationError as exc:
            if not new or exc.constraint_name != "tasks_pkey":
                raise
            stored = await self._run(
                lambda conn: self._write_batches(conn, replay(), recorded, False),
                transaction=True,
            )
        if stored:
            yield stored

    async def _write_batches(
        self, conn: asyncpg.Connection, batches: Iterable[Batch], recorded: bool, new: bool
    ) -> list[Task]:
        """Write ``batches`` on ``conn``, the statement of each in flight while the
        ``for`` builds the next one and its arguments (asyncpg runs one statement at a
        time); ``new``: with the statements for ids not stored yet (:data:`INSERT_BULK_NEW`,
        ``COPY``). Consecutive batches of new tasks ready at once go by one ``COPY``
        (:class:`_CopyStream`). The events of the batches written by ``COPY`` are held and
        written together by one ``COPY`` (:meth:`_copy_events`) before any other
        statement of the bulk and at its end: in the same order, and one round trip and
        statement for them instead of one a batch."""
        stored: list[Task] = []
        flight: Flight | None = None
        copied: set[str] = set()  # queues of the tasks written by COPY
        held: list[tuple[Any, ...]] = []  # their events' rows, not written yet
        source = iter(batches)
        after: list[Batch] = []  # the batch a COPY stopped at, to write the other way
        try:
            while True:
                batch = after.pop() if after else next(source, None)
                if batch is None:
                    break
                tasks, events = batch
                if not recorded:
                    events = ()
                if [t for t in tasks if t.depends_on]:  # (a list: no generator a task)
                    if flight is not None:
                        stored += await self._landed(conn, flight)
                        flight = None
                    await self._copy_events(conn, held)
                    part = await self._enqueue_in_order(conn, tasks)
                    if events:
                        done = [as_stored(e, t) for e, t in zip(events, part, strict=True)]
                        await conn.execute(self.sql(APPEND), *append_args(done))
                    stored += part
                elif tasks and new and _copyable(tasks):
                    if flight is not None:
                        stored += await self._landed(conn, flight)
                        flight = None
                    stream = _CopyStream(source, recorded)
                    await self._copy(conn, stream.rows(tasks, events))
                    stored += stream.stored
                    held += stream.held
                    copied |= stream.copied
                    if stream.after is not None:
                        after.append(stream.after)
                elif tasks:
                    send, writes_events = self._statement(conn, tasks, events, new)
                    if flight is not None:  # (the next batch's arguments are built)
                        stored += await self._landed(conn, flight)
                        flight = None
                    await self._copy_events(conn, held)
                    # asyncpg sends a statement in the first step of its task
                    future = asyncio.ensure_future(send())
                    flight = future, (tasks, events), writes_events
                    await asyncio.sleep(0)
            if flight is not None:
                stored += await self._landed(conn, flight)
                flight = None
            await self._copy_events(conn, held)
            if copied:
                await conn.execute(self.sql(NOTIFY_QUEUES), sorted(copied))
        finally:
            if flight is not None:  # the next batch failed to build: let this one end
                with contextlib.suppress(Exception):
                    await flight[0]
        return stored

    def _statement(
        self,
        conn: asyncpg.Connection,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        new: bool,
    ) -> tuple[Callable[[], Awaitable[list[asyncpg.Record]]], bool]:
        """What writes ``tasks`` (and ``events``) by a statement, its arguments built
        now, to send later; whether it writes the events. The events go with their
        tasks when each task is ready at once (:data:`INSERT_BULK`), else after (see
        :meth:`_landed`)."""
        recorded = bool(events) and all(t.eta is None for t in tasks)
        if recorded:
            ready_events = [
                as_stored(e, t, TaskState.PENDING) for e, t in zip(events, tasks, strict=True)
            ]
            args = compact([*_insert_args(tasks), *event_columns(ready_events)])
            sql = INSERT_BULK_NEW if new else INSERT_BULK
        else:
            args = compact(_insert_args(tasks))
            sql = INSERT_MANY_NEW if new else INSERT_MANY
        return partial(conn.fetch, self.sql(sql), *args), recorded

    async def _copy(self, conn: asyncpg.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """Write tasks that are ready at once by binary ``COPY``: the server inserts a
        page of rows at a time (one WAL record a heap page, not a row), with no plan,
        unnest or projection per row, and asyncpg encodes each value in C. An id that
        exists (or given twice) fails it on ``tasks_pkey``."""
        await conn.copy_records_to_table(
            "tasks", records=rows, columns=COPY_TASK_COLUMNS, schema_name=self.settings.schema
        )

    async def _copy_events(self, conn: asyncpg.Connection, held: list[tuple[Any, ...]]) -> None:
        """Write the event rows ``held`` (:data:`.events.COPY_COLUMNS`) by ``COPY``, and
        empty it."""
        if held:
            await conn.copy_records_to_table(
                "events", records=held, columns=COPY_COLUMNS, schema_name=self.settings.schema
            )
            held.clear()

    async def _landed(self, conn: asyncpg.Connection, flight: Flight) -> list[Task]:
        """The tasks of a batch :meth:`_statement` wrote, as stored, with their events: when
        the statement did not write them (delayed tasks, or some not inserted: an id
        that existed, or given twice) they are appended here, each saying how its task
        is stored."""
        future, (tasks, events), recorded = flight
        rows = await future
        stored = await self._stored(conn, tasks, rows)
        if events and (not recorded or len(rows) < len(tasks)):
            done = [as_stored(e, t) for e, t in zip(events, stored, strict=True)]
            await conn.execute(self.sql(APPEND), *append_args(done))
        return stored

    async def _enqueue_in_order(
        self, conn: asyncpg.Connection, tasks: Sequence[Task]
    ) -> list[Task]:
        stored: list[Task] = []
        run: list[Task] = []
        for task in tasks:
            if not task.depends_on:
                run.append(task)
                continue
            if run:
                stored += await self._insert(conn, run)
                run = []
            stored.append(await self._insert_dependent(conn, task))
        if run:
            stored += await self._insert(conn, run)
        return stored

    async def _insert(
        self,
        conn: asyncpg.Connection,
        tasks: Sequence[Task],
        states: Sequence[str | None] | None = None,
        errors: Sequence[str | None] | None = None,
        events: Sequence[TaskEvent] = (),
    ) -> list[Task]:
        if len(tasks) == 1 and len(events) < 2:  # one row of scalars, not 1-element arrays
            row = _insert_row(
                tasks[0], states[0] if states else None, errors[0] if errors else None
            )
            if events:
                rows = await conn.fetch(self.sql(INSERT_RECORDED_ONE), *row, *event_row(events[0]))
            else:
                rows = await conn.fetch(self.sql(INSERT_ONE), *row)
            return await self._stored(conn, tasks, rows)
        args = _insert_args(tasks, states, errors)
        if events:
            rows = await conn.fetch(
                self.sql(INSERT_RECORDED_MANY), *compact(args), *append_args(events)
            )
        else:
            rows = await conn.fetch(self.sql(INSERT_MANY), *compact(args))
        return await self._stored(conn, tasks, rows)

    async def _stored(
        self, conn: asyncpg.Connection, tasks: Sequence[Task], rows: Sequence[asyncpg.Record]
    ) -> list[Task]:
        """``tasks`` as stored, from an insert's rows (``id, state, created_at,
        finished_at`` of those it inserted) and, for the others, a read."""
        if len(tasks) == 1 and len(rows) == 1:  # a delay()'s, inserted
            task, row = tasks[0], rows[0]
            if row[0] == task.id:
                return [
                    msgspec.structs.replace(
                        task, state=STATES[row[1]], created_at=row[2], finished_at=row[3]
                    )
                ]
        inserted = {row[0]: row for row in rows}
        missing = [t.id for t in tasks if t.id not in inserted]
        stored = await self._get_many(conn, missing) if missing else {}
        for task in tasks:
            row = inserted.get(task.id)
            if row is not None and task.id not in stored:  # a repeated id is stored once
                stored[task.id] = msgspec.structs.replace(
                    task, state=STATES[row[1]], created_at=row[2], finished_at=row[3]
                )
        return [stored[task.id] for task in tasks]

    async def _insert_dependent(self, conn: asyncpg.Connection, task: Task) -> Task:
        """Enqueue a task with parents. FOR SHARE on the parents makes a parent's
        completion wait for this insert (and then see the child), or this insert wait for
        the completion (and then see the parent's final state)."""
        existing = await self._get_many(conn, [task.id])
        if existing:
            return existing[task.id]
        parents = dict(
            await conn.fetch(
                self.sql("SELECT id, state FROM {s}.tasks WHERE id = ANY ($1::text[]) FOR SHARE"),
                list(task.depends_on),
            )
        )
        for parent_id in task.depends_on:
            if parent_id not in parents:
                raise TaskNotFoundError(parent_id, f" (a dependency of task {task.id!r})")
        decided, failure = initial_state(task, parents, 0.0)
        # (ready or scheduled: the insert decides by the server's clock)
        state = decided.value if decided in _SETTLED_AT_INSERT else None
        error = encode_error(failure) if failure is not None else None
        await self._insert(conn, [task], [state], [error])
        await conn.execute(
            self.sql(
                "INSERT INTO {s}.dependencies (parent_id, child_id, run_on_failure) "
                "SELECT DISTINCT unnest($1::text[]), $2, $3::boolean ON CONFLICT DO NOTHING"
            ),
            list(task.depends_on),
            task.id,
            runs_on_failure(task),
        )
        return (await self._get_many(conn, [task.id]))[task.id]

    # -- leases --------------------------------------------------------------------------

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        seen = self._seen()  # before the statement: what it may not have seen counts
        sql = RESERVE if self._conn is not None else RESERVE_ALONE
        rows = await self.fetch(sql, list(queues), limit, worker_id, lease)
        self._drained = (tuple(queues), seen) if len(rows) < limit and seen is not None else None
        try:
            return [task_from_row(row[2:]) for row in rows]
        except Exception:  # a record that does not decode: not on the hot path
            return await self._rescued(rows, 2, by_id=False)

    async def _reserve_limited(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int, limits: Limits
    ) -> Reservation:
        """See :mod:`.limits`: the limits are judged in the transaction that leases."""
        self._drained = None
        rows, answer = await reserve_limited(self, list(queues), worker_id, lease, limit, limits)
        try:
            tasks = [task_from_row(row[2:]) for row in rows]
        except Exception:  # a record that does not decode: not on the hot path
            tasks = await self._rescued(rows, 2, by_id=False)
        return Reservation(tasks, answer.retry_in, answer.deferred)

    async def _rescued(
        self, rows: Sequence[asyncpg.Record], skip: int, *, by_id: bool
    ) -> builtins.list[Task]:
        """Rows whose :data:`TASK_COLUMNS` start at ``skip``, a stand-in for each one that
        does not decode. Its id, queue and name are read by its id (the row's first
        column) or, for reserve's rows (which leave the id out), by its lease token."""
        out: list[Any] = []
        bad: list[int] = []
        for row in rows:
            try:
                out.append(task_from_row(row[skip:]))
            except Exception as exc:
                bad.append(len(out))
                out.append(exc)
        column = "id" if by_id else "lease_token"
        keys = [rows[i][0] if by_id else rows[i][skip + 6] for i in bad]
        sql = f"SELECT {column}, id, queue, name FROM {{s}}.tasks WHERE {column} = ANY ($1::text[])"
        found = {row[0]: row[1:] for row in await self.fetch(sql, keys)}
        for i, key in zip(bad, keys, strict=True):
            task_id, queue, name = found.get(key, (key if by_id else "", None, None))
            out[i] = rescue_row(task_id, rows[i][skip:], out[i], queue, name)
        return out

    async def _decoded(self, rows: Sequence[asyncpg.Record]) -> builtins.list[Task]:
        """Rows of ``t.id, TASK_COLUMNS`` as tasks (a stand-in for one that does not decode)."""
        try:
            return [task_from_row(row[1:]) for row in rows]
        except Exception:
            return await self._rescued(rows, 1, by_id=True)

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        rows = await self.fetch(HEARTBEAT, [i for i, _ in leases], [t for _, t in leases], lease)
        return [row[0] for row in rows]

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        """One round trip: the schema's complete_many() finishes the tasks and settles
        their dependents atomically, with the results and events of sibling stores in the
        same statement (:data:`FINISH_MANY`: one commit)."""
        if results or events:
            (result_args, n_results), (event_args, n_events) = (
                _finish_result_args(results),
                _finish_event_args(events),
            )
            args = (*_complete_args(items), *result_args, *event_args, n_results, n_events)
            if not results or self._conn is not None:  # (a failure would end its transaction)
                rows = await self.fetch(FINISH_MANY, *args)
            else:
                try:
                    rows = await self.fetch(FINISH_MANY_NEW, *args)
                except asyncpg.UniqueViolationError:  # a task's result was stored already
                    rows = await self.fetch(FINISH_MANY, *args)
        else:
            rows = await self.fetch(COMPLETE_MANY, *_complete_args(items))
        done = {row[0] for row in rows}
        return [item[0] in done for item in items]

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        return bool(await self.fetch(RETRY, task_id, token, eta, encode_error(error)))

    async def _release(self, task_id: str, token: str) -> bool:
        return bool(await self.fetch(RELEASE, task_id, token))

    async def _settled(self, template: str, *args: Any) -> list[asyncpg.Record]:
        """Run an UPDATE ... RETURNING (first column: task id), then settle the
        dependents of the tasks it changed, in one transaction."""
        sql, settle = self.sql(template), self.sql("SELECT {s}.settle($1::text[])")

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            if rows:
                await conn.execute(settle, [row[0] for row in rows])
            return rows

        return await self._run(work, transaction=True)

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        return bool(await self._settled(DEAD_LETTER, task_id, token, encode_error(error)))

    async def _release_expired_leases(self) -> list[Task]:
        return await self._decoded(await self._settled(RELEASE_EXPIRED))

    async def _cancel(self, task_id: str) -> bool:
        if await self._settled(CANCEL, task_id):
            return True
        if await self.fetchval("SELECT 1 FROM {s}.tasks WHERE id = $1", task_id) is None:
            raise TaskNotFoundError(task_id)
        return False

    # -- inspection ----------------------------------------------------------------------

    async def _get_many(self, conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Task]:
        rows = await conn.fetch(
            self.sql(
                f"SELECT t.id, {TASK_COLUMNS} FROM {{s}}.tasks t WHERE t.id = ANY ($1::text[])"
            ),
            list(ids),
        )
        return {row[0]: task_from_row(row[1:]) for row in rows}

    async def _get(self, task_id: str) -> Task | None:
        rows = await self.fetch(
            f"SELECT t.id, {TASK_COLUMNS} FROM {{s}}.tasks t WHERE t.id = $1", task_id
        )
        return (await self._decoded(rows))[0] if rows else None

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        """Along the dependencies table's primary key (parent_id, child_id); its edges
        live until one of the two tasks is deleted."""
        rows = await self.fetch(
            f"SELECT t.id, {TASK_COLUMNS} FROM {{s}}.dependencies d "
            "JOIN {s}.tasks t ON t.id = d.child_id WHERE d.parent_id = $1 ORDER BY t.id",
            task_id,
        )
        return await self._decoded(rows)

    async def _list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> list[Task]:
        where, args = _where(queue, states)
        rows = await self.fetch(
            f"SELECT t.id, {TASK_COLUMNS} FROM {{s}}.tasks t{where} "
            f"ORDER BY t.seq LIMIT ${len(args) + 1}",
            *args,
            limit,
        )
        return await self._decoded(rows)

    async def _list_page(
        self,
        *,
        queue: str | None,
        states: builtins.list[TaskState] | None,
        name: str | None,
        since: float | None,
        until: float | None,
        cursor: str | None,
        limit: int,
    ) -> TaskPage:
        """Paged by ``seq`` along the (queue, state, seq) index (see :mod:`.paging`)."""
        return await list_page(
            self,
            queue=queue,
            states=states,
            name=name,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        counts: dict[str, dict[TaskState, int]] = {}
        for queue, state, n in await self.fetch(
            "SELECT queue, state, count(*) FROM {s}.tasks GROUP BY queue, state"
        ):
            counts.setdefault(queue, {})[STATES[state]] = n
        return counts

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        """Delete the tasks; first, in the same transaction, the waiting dependents of
        those that had not succeeded end as a cancelled parent's do (``settle()``, the
        parents marked cancelled for it), the direct ones naming the purge
        (:func:`omniq.lifecycle.purge_failure`). The deletion drops the edges
        (ON DELETE CASCADE), after which nothing would settle them: they waited for ever."""
        where, args = _where(queue, states)
        # The rows the filter matches, locked as purge() begins: a completion waits and
        # then finds its task gone (refused), and a dependent this purge cancels is
        # still deleted when its former state was matched.
        doomed_sql = self.sql(f"SELECT t.id, t.state FROM {{s}}.tasks t{where} FOR UPDATE")
        find = self.sql(
            "SELECT DISTINCT d.parent_id FROM {s}.dependencies d"
            " WHERE d.parent_id = ANY ($1::text[])"
        )
        waiting = self.sql(PURGED_WAITING)
        mark = self.sql("UPDATE {s}.tasks SET state = 'cancelled' WHERE id = ANY ($1::text[])")
        settle = self.sql("SELECT {s}.settle($1::text[])")
        name = self.sql(PURGED_MESSAGE)
        delete = self.sql("DELETE FROM {s}.tasks WHERE id = ANY ($1::text[])")

        async def work(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(doomed_sql, *args)
            doomed = [row[0] for row in rows]
            unsettled = [row[0] for row in rows if row[1] != TaskState.SUCCEEDED.value]
            parents = [row[0] for row in await conn.fetch(find, unsettled)] if unsettled else []
            if parents:
                pairs = await conn.fetch(waiting, parents)
                await conn.execute(mark, parents)
                await conn.execute(settle, parents)
                if pairs:
                    await conn.execute(name, [r[0] for r in pairs], [r[1] for r in pairs])
            status = await conn.execute(delete, doomed)
            return int(status.split()[-1])

        return await self._run(work, transaction=True)

    async def _cleanup(self) -> builtins.list[Task]:
        rows = await self._settled(EXPIRE)
        await self.execute(DELETE_FINISHED)
        return await self._decoded(rows)

    async def _wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until a NOTIFY for one of ``queues``, the next delayed task's eta, or
        ``timeout``, whichever comes first; return at once if work is ready.

        Right after a reserve of these queues that drained them, a wait of at most
        :data:`DRAINED_WAIT` skips the ``next_ready()`` query when no notification arrived
        since that reserve began: nothing became ready but a delayed task falling due,
        which the next reserve, at most that much later, takes. When one did arrive (a
        task enqueued while that reserve ran, its commit maybe after the reserve's
        snapshot), it returns at once: the reserve that follows is the check, where
        ``next_ready()`` would be one more round trip before it."""
        names = list(queues)
        drained, self._drained = self._drained, None
        async with self._watching(names) as enqueued:
            if timeout <= DRAINED_WAIT and drained is not None and drained[0] == tuple(names):
                if self._heard_since(names, drained[1]):
                    return
                await wait_event(enqueued, timeout)
                return
            delay = await self.fetchval(NEXT_READY, names)
            if delay is not None and delay <= 0:
                return
            await wait_event(enqueued, timeout if delay is None else min(delay, timeout))

    # -- schedules -----------------------------------------------------------------------

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        await self.execute(
            "INSERT INTO {s}.schedules (id, next_run, last_run, paused, data)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET"
            " next_run = excluded.next_run, last_run = excluded.last_run, "
            "paused = excluded.paused, data = excluded.data",
            schedule.id,
            schedule.next_run,
            schedule.last_run,
            schedule.paused,
            encoder.encode(schedule),
        )
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = await self.fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM {{s}}.schedules WHERE id = $1", schedule_id
        )
        return schedule_from_row(rows[0]) if rows else None

    async def _list_schedules(self) -> builtins.list[Schedule]:
        rows = await self.fetch(f"SELECT {SCHEDULE_COLUMNS} FROM {{s}}.schedules ORDER BY id")
        return [s for s in map(schedule_from_row, rows) if s is not None]

    async def _delete_schedule(self, schedule_id: str) -> bool:
        return bool(
            await self.fetch("DELETE FROM {s}.schedules WHERE id = $1 RETURNING id", schedule_id)
        )

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        return bool(
            await self.fetch(
                "UPDATE {s}.schedules SET paused = $2, next_run = coalesce($3, next_run)"
                " WHERE id = $1 RETURNING id",
                schedule_id,
                paused,
                next_run,
            )
        )

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        """Read the due schedules, compute their firings here (cron lives in Python),
        then win them with one compare-and-set UPDATE on the old ``next_run``."""
        rows = await self.fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM {{s}}.schedules WHERE NOT paused AND next_run <= $1 "
            f"ORDER BY next_run, id LIMIT $2",
            at,
            limit,
        )
        due: dict[str, tuple[Schedule, list[float], float]] = {}
        for row in rows:
            schedule = schedule_from_row(row)
            if schedule is None:
                continue
            times, following = schedule.due_firings(at)
            if times:
                due[schedule.id] = (schedule, times, following)
        if not due:
            return []
        won = await self.fetch(
            CLAIM_SCHEDULES,
            list(due),
            [s.next_run for s, _, _ in due.values()],
            [f for _, _, f in due.values()],
            [t[-1] for _, t, _ in due.values()],
        )
        won_ids = {row[0] for row in won}
        return [(s, times) for sid, (s, times, _) in due.items() if sid in won_ids]

    # -- live workers ------------------------------------------------------------------
    # `data` holds the WorkerInfo without expires_at; the column is the server's word.

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        data = encoder.encode(msgspec.structs.replace(info, expires_at=0.0))
        expires_at = await self.fetchval(REGISTER_WORKER, info.id, ttl, data)
        return msgspec.structs.replace(info, expires_at=expires_at)

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        rows = await self.fetch(
            f"SELECT expires_at, data FROM {{s}}.workers WHERE expires_at > {EPOCH_NOW} ORDER BY id"
        )
        return [
            msgspec.structs.replace(worker_decoder.decode(data), expires_at=at) for at, data in rows
        ]

    async def _unregister_worker(self, worker_id: str) -> bool:
        return bool(
            await self.fetch("DELETE FROM {s}.workers WHERE id = $1 RETURNING id", worker_id)
        )


#: Upsert one worker, forgetting the others that expired, in one round trip.
REGISTER_WORKER = f"""
WITH gone AS (DELETE FROM {{s}}.workers WHERE expires_at <= {EPOCH_NOW} AND id <> $1)
INSERT INTO {{s}}.workers (id, expires_at, data) VALUES ($1, {EPOCH_NOW} + $2::float8, $3)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, data = excluded.data
RETURNING expires_at"""
