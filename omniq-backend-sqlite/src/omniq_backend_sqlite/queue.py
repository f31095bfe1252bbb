"""SqliteTaskQueue: tasks, leases, dependencies and schedules in one SQLite file.

Every state change that reads before it writes, or writes more than one row set, runs
in one ``BEGIN IMMEDIATE`` transaction, so several worker processes on one file never
hand out a task twice and a parent's dependents change in the same commit as the
parent. Leases and ETAs are judged by this host's ``time.time()`` (all processes on one
file share the machine's clock).
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar

import msgspec

from omniq.errors import ConfigError, SerializationError, TaskNotFoundError
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
    check_page_limit,
    check_seq_cursor,
    gather_batches,
)
from omniq.lifecycle import initial_state, ready_state
from omniq.limits import SCAN_AHEAD, Gate, Limits, Reservation
from omniq.models import (
    TERMINAL_STATES,
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
from omniq.records import schedule_or_none

from ._db import SqliteStore, json_list
from ._deps import (
    cancel_dependents,
    cancel_dependents_now,
    cancel_purged_dependents,
    make_ready_now,
)
from ._direct import DIRECT_ROWS, check_rows
from ._rows import (
    COLUMNS_SQL,
    TASK_COLUMNS,
    TASK_REQUIRED,
    RowInsert,
    encode_error,
    log,
    new_task_insert,
    row_to_task,
    task_params,
)
from ._schema import READY_WHERE, TERMINAL_SQL, UNSTARTED_WHERE, StoreKind
from .events import SqliteEventStorage, insert_events_now
from .results import SqliteResultStorage, insert_results_now

_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
_CLEAR_LEASE = "lease_owner = NULL, lease_token = NULL, lease_deadline = NULL"
_BY_IDS = "SELECT value FROM json_each(?)"
# Queue names by a loose index scan (one probe per queue, not one per task).
_QUEUE_NAMES = """
WITH RECURSIVE q(name) AS (
    SELECT min(queue) FROM omniq_tasks
    UNION ALL
    SELECT (SELECT min(queue) FROM omniq_tasks WHERE queue > q.name) FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL
"""
#: Most (queue, state) arms of one list_page statement (SQLite allows 500).
_MAX_ARMS = 400

# One arm per queue so each uses the partial index in order and stops at LIMIT; the
# arms are merged by the same order (highest priority first, then FIFO by seq).
_READY_ARM = f"""SELECT * FROM (
    SELECT seq, priority FROM omniq_tasks
    WHERE queue = ? AND {READY_WHERE}
      AND (eta IS NULL OR eta <= ?) AND (expires_at IS NULL OR expires_at > ?)
    ORDER BY priority DESC, seq LIMIT ?)"""

#: A limited reserve's candidates: ready tasks with what their limits are keyed by.
_CANDIDATE_ARM = _READY_ARM.replace(
    "SELECT seq, priority FROM", "SELECT seq, priority, name, queue FROM"
)
_RATES = f"SELECT key, next_at FROM omniq_limits WHERE key IN ({_BY_IDS})"
_RUNNING = f"""SELECT name, count(*) FROM omniq_tasks
    WHERE state = 'running' AND lease_deadline > ? AND name IN ({_BY_IDS}) GROUP BY name"""
_SET_RATE = """INSERT INTO omniq_limits (key, next_at) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET next_at = excluded.next_at"""


def _ready_pick(
    arm: str, columns: str, queues: Sequence[str], now: float, n: int
) -> tuple[str, tuple[Any, ...]]:
    """The statement that picks up to ``n`` ready tasks of ``queues`` in reserve order
    (highest priority, then oldest) through ``arm`` per queue, and its parameters."""
    arms = " UNION ALL ".join([arm] * len(queues))
    params: list[Any] = []
    for name in queues:
        params += [name, now, now, n]
    return f"SELECT {columns} FROM ({arms} ORDER BY priority DESC, seq LIMIT ?)", (*params, n)


#: Seconds after the last work seen during which wait_for_work polls every BUSY_POLL.
BUSY_WINDOW = 2.0
#: Seconds between checks while busy (data_version, or the read where there is none):
#: what a new task waits at most when no WAL watch wakes the worker.
BUSY_POLL = 0.002

_HAS_READY = f"""SELECT 1 FROM omniq_tasks
    WHERE queue IN ({_BY_IDS}) AND {READY_WHERE}
      AND (eta IS NULL OR eta <= ?) AND (expires_at IS NULL OR expires_at > ?) LIMIT 1"""

_RESERVE = f"""UPDATE omniq_tasks
    SET state = 'running', attempts = attempts + 1, lease_owner = ?,
        lease_token = lower(hex(randomblob(16))), lease_deadline = ?, started_at = ?
    WHERE seq IN ({_BY_IDS}) RETURNING seq, {COLUMNS_SQL}"""

_HEARTBEAT = """UPDATE omniq_tasks SET lease_deadline = ?
    FROM (SELECT json_extract(value, '$[0]') AS tid, json_extract(value, '$[1]') AS tok
          FROM json_each(?)) AS l
    WHERE omniq_tasks.id = l.tid AND omniq_tasks.lease_token = l.tok
      AND omniq_tasks.state = 'running'
    RETURNING omniq_tasks.id, omniq_tasks.lease_token"""

_COMPLETE = f"""UPDATE omniq_tasks
    SET state = l.st, error = COALESCE(l.err, error), finished_at = ?, {_CLEAR_LEASE}
    FROM (SELECT json_extract(value, '$[0]') AS tid, json_extract(value, '$[1]') AS tok,
                 json_extract(value, '$[2]') AS st, json_extract(value, '$[3]') AS err
          FROM json_each(?)) AS l
    WHERE omniq_tasks.id = l.tid AND omniq_tasks.lease_token = l.tok
      AND omniq_tasks.state = 'running'
    RETURNING omniq_tasks.id"""

_LAPSED_TO_DEAD = f"""UPDATE omniq_tasks
    SET state = 'dead', finished_at = ?, {_CLEAR_LEASE},
        error = json_object('type', 'LeaseExpired', 'message',
            'lease lapsed on attempt ' || attempts || ' of '
            || max(max_deliveries, max_retries + 1) || ': its worker keeps dying or hanging')
    WHERE state = 'running' AND lease_deadline <= ?
      AND attempts >= max(max_deliveries, max_retries + 1)
    RETURNING {COLUMNS_SQL}"""

_LAPSED_TO_PENDING = f"""UPDATE omniq_tasks SET state = 'pending', {_CLEAR_LEASE}
    WHERE state = 'running' AND lease_deadline <= ? RETURNING {COLUMNS_SQL}"""


class SqliteTaskQueue(SqliteStore, BaseTaskQueue):
    """The task queue on ``omniq_tasks``, ``omniq_task_deps`` and ``omniq_schedules``."""

    kind: ClassVar[StoreKind] = "queue"
    capabilities = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.SCHEDULES,
            Capability.DEPENDENCIES,
            Capability.CROSS_PROCESS,
            Capability.LIMITS,
        }
    )
    local_only = True
    _last_work = float("-inf")  # loop time work was last seen; drives wait_for_work's pace
    _last_reserved = 0  # tasks the last reserve leased
    _drained = False  # the last reserve got fewer tasks than its limit

    # -- enqueue -----------------------------------------------------------------------

    _home: tuple[BaseStore, bool] | None = None  # the last store _shares_home judged

    def _shares_home(self, store: BaseStore) -> bool:
        """Result and event stores in the same file: written in the tasks' transaction,
        one commit (one sync to disk) instead of two or three. Asked on every enqueue
        and finish of the same stores: the last answer is kept (a store's settings
        never change)."""
        home = self._home
        if home is not None and home[0] is store:
            return home[1]
        shared = isinstance(
            store, (SqliteEventStorage, SqliteResultStorage)
        ) and self.settings.same_file(store.settings)
        self._home = (store, shared)
        return shared

    async def _enqueue_recorded(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """``delay()``'s call, with events off or their store in this file: one
        transaction, without the batch machinery (``enqueue_batches``, the ``_enqueue``
        generator: ~10 µs a call, under a tenth of a ``delay()``)."""
        if event_storage is not None and not self._shares_home(event_storage):
            return await super()._enqueue_recorded(tasks, events, event_storage)
        if not tasks:
            return []
        if event_storage is None:
            events = ()
        if len(tasks) == 1 and not tasks[0].depends_on:  # a delay()'s
            return await self.db.run_sized(1, _enqueue_one_now, tasks[0], events)
        return await self.db.run_sized(len(tasks), _enqueue_now, tasks, events)

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[list[Task]]:
        """Enqueue in order in one transaction: all or nothing (a missing dependency
        rolls the whole batch back). A task may depend on one earlier in the batch. The
        whole transaction, events included, runs in one hand-over to the connection's
        thread (:meth:`Database.run`)."""
        tasks, events = gather_batches(batches)
        if not tasks:
            return
        yield await self.db.run_sized(
            len(tasks), _enqueue_now, tasks, events if event_storage is not None else ()
        )

    # -- leases ------------------------------------------------------------------------

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        """The pick and the lease in one transaction, in one hand-over to the
        connection's thread; after a reserve that drained the queues, a read first.

        That read takes no lock: most reserves after a drain find nothing (the worker's
        next reserve, a freed slot, its idle polls), and each one's ``BEGIN IMMEDIATE``
        held the write lock while a producer's enqueue might want it, which then went
        to the connection's thread and waited in SQLite's busy handler (1 ms and more):
        that was a third of the slowest tasks of a latency run. A task committed after
        the read is seen by the wait for work, which reads first."""
        if self._drained:
            now = time.time()
            if not await self.db.read(_HAS_READY, (json_list(list(queues)), now, now)):
                self._last_reserved = 0
                return []
        # Sized by the last reserve's tasks: a burst worker's batches go to the thread
        # at once, a worker fed one task at a time stays on the loop's thread.
        tasks = await self.db.run_sized(
            self._last_reserved, _reserve_now, queues, worker_id, lease, limit
        )
        self._last_reserved = len(tasks)
        self._drained = len(tasks) < limit
        if tasks:
            self._last_work = asyncio.get_running_loop().time()
        return tasks

    async def _reserve_limited(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int, limits: Limits
    ) -> Reservation:
        """The candidates, the limits' state (``omniq_limits`` for rates, a count of the
        running tasks for concurrency), the decisions (:class:`omniq.limits.Gate`) and
        the leases, in one ``BEGIN IMMEDIATE`` transaction: every process on the file
        judges the limits one at a time."""
        window = limit + SCAN_AHEAD
        async with self.db.transaction() as conn:
            now = time.time()
            found = await conn.execute_fetchall(
                *_ready_pick(_CANDIDATE_ARM, "seq, name, queue", queues, now, window)
            )
            if not found:
                return Reservation([])
            self._last_work = asyncio.get_running_loop().time()
            cands = [(name, queue) for _, name, queue in found]
            keys, capped = Gate.rate_keys(limits, cands), Gate.capped_names(limits, cands)
            rates: Iterable[Any] = (
                await conn.execute_fetchall(_RATES, (json_list(keys),)) if keys else []
            )
            running: Iterable[Any] = (
                await conn.execute_fetchall(_RUNNING, (now, json_list(capped))) if capped else []
            )
            gate = Gate(limits, now, dict(rates), dict(running))
            seqs = [seq for seq, name, queue in found if gate.admit(name, queue)][:limit]
            if gate.changed:
                await conn.executemany(_SET_RATE, [(k, gate.next_at[k]) for k in gate.changed])
            rows: Iterable[Any] = []
            if seqs:
                rows = await conn.execute_fetchall(
                    _RESERVE, (worker_id, now + lease, now, json_list(seqs))
                )
        order = {seq: i for i, seq in enumerate(seqs)}
        tasks = [row_to_task(row[1:]) for row in sorted(rows, key=lambda row: order[row[0]])]
        return Reservation(tasks, gate.retry_in, gate.deferred)

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        rows = await self.db.fetch(
            _HEARTBEAT, (time.time() + lease, json_list([list(ref) for ref in leases]))
        )
        held = {(task_id, token) for task_id, token in rows}
        return [task_id for task_id, token in leases if (task_id, token) in held]

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        """One UPDATE for the whole batch, plus the dependents, plus the results and
        events of sibling stores (those of refused items left out), in one transaction
        and one hand-over to the connection's thread (:meth:`Database.run`)."""
        size = len(items) + len(events)
        if size > DIRECT_ROWS:  # count tasks (a task's events come with it)
            size = len({t for t, *_ in items} | {e.task_id for e in events})
        return await self.db.run_sized(size, _finish_now, items, results, events)

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        rows = await self.db.fetch(
            f"""UPDATE omniq_tasks SET state = 'retrying', eta = ?, error = COALESCE(?, error),
                {_CLEAR_LEASE} WHERE id = ? AND lease_token = ? AND state = 'running'
                RETURNING id""",
            (eta, encode_error(error), task_id, token),
        )
        return bool(rows)

    async def _release(self, task_id: str, token: str) -> bool:
        rows = await self.db.fetch(
            f"""UPDATE omniq_tasks SET state = 'pending', attempts = max(attempts - 1, 0),
                {_CLEAR_LEASE} WHERE id = ? AND lease_token = ? AND state = 'running'
                RETURNING id""",
            (task_id, token),
        )
        return bool(rows)

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        params: tuple[str, ...] = (task_id,)
        if token is None:
            fence = f"state NOT IN {TERMINAL_SQL}"
        else:
            fence, params = "state = 'running' AND lease_token = ?", (task_id, token)
        async with self.db.transaction() as conn:
            now = time.time()
            rows = await conn.execute_fetchall(
                f"""UPDATE omniq_tasks SET state = 'dead', error = COALESCE(?, error),
                    finished_at = ?, {_CLEAR_LEASE} WHERE id = ? AND {fence} RETURNING id""",
                (encode_error(error), now, *params),
            )
            if rows:
                await cancel_dependents(conn, task_id, "dead", now)
        return bool(rows)

    async def _release_expired_leases(self) -> list[Task]:
        async with self.db.transaction() as conn:
            now = time.time()
            dead = [
                row_to_task(row) for row in await conn.execute_fetchall(_LAPSED_TO_DEAD, (now, now))
            ]
            for task in dead:
                await cancel_dependents(conn, task.id, "dead", now)
            back = [
                row_to_task(row) for row in await conn.execute_fetchall(_LAPSED_TO_PENDING, (now,))
            ]
        return dead + back

    async def _cancel(self, task_id: str) -> bool:
        async with self.db.transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT state FROM omniq_tasks WHERE id = ?", (task_id,)
                )
            )
            if not rows:
                raise TaskNotFoundError(task_id)
            if rows[0][0] in _TERMINAL:
                return False
            now = time.time()
            await conn.execute(
                f"UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?, {_CLEAR_LEASE}"
                " WHERE id = ?",
                (now, task_id),
            )
            await cancel_dependents(conn, task_id, "cancelled", now)
        return True

    async def _wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wait until a task is ready in ``queues``. SQLite has no cross-process
        notification: this sleeps until a store signals a commit (a Linux inotify
        watch of the ``-wal`` file, _wake.py) or a tick passes, asks ``PRAGMA
        data_version`` (a read of shared memory, no I/O) whether another connection
        committed, and only then
        runs the indexed read for a ready task; also every ``poll_interval``, since a
        delayed task becomes due without any commit. The tick is ``BUSY_POLL`` while
        work was seen in the last ``BUSY_WINDOW`` seconds, ``poll_interval`` after (at
        least ``WATCHED_TICK`` with a watch).
        Without a loop-thread connection (``:memory:``, ``synchronous=FULL``) the read
        itself is polled at that pace."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        names = json_list(list(queues))
        db = self.db
        version = db.data_version()
        while True:
            now = time.time()
            if await db.read(_HAS_READY, (names, now, now)):
                self._last_work = loop.time()
                return
            check_at = min(deadline, loop.time() + self.settings.poll_interval)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                busy = loop.time() - self._last_work < BUSY_WINDOW
                tick = BUSY_POLL if busy else self.settings.poll_interval
                if version is None:  # nothing to compare: the read at that pace
                    await asyncio.sleep(min(tick, remaining))
                    version = db.data_version()
                    break
                wait = min(remaining, check_at - loop.time())
                seen, version = version, await db.next_commit(version, wait, tick)
                if seen != version or loop.time() >= check_at:
                    break

    # -- reading and housekeeping ------------------------------------------------------

    async def _get(self, task_id: str) -> Task | None:
        rows = await self.db.fetch(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks WHERE id = ?", (task_id,)
        )
        return row_to_task(rows[0]) if rows else None

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        rows = await self.db.fetch(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks WHERE id IN "
            "(SELECT child FROM omniq_task_deps WHERE parent = ?) ORDER BY id",
            (task_id,),
        )
        return [row_to_task(row) for row in rows]

    async def _list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> list[Task]:
        where, params = _filter(queue, states)
        rows = await self.db.fetch(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks {where} ORDER BY seq LIMIT ?", (*params, limit)
        )
        return [row_to_task(row) for row in rows]

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
        """Newest first by ``seq`` (the rowid), the cursor being the last ``seq`` shown.

        Unfiltered by queue and state, SQLite walks the rowid backwards. Filtered, each
        (queue, state) pair is one arm of a UNION ALL walking the (queue, state) index,
        whose last key is the rowid, backwards to the page size; the queues come from a
        loose index scan. A plain WHERE read a whole queue, then sorted it.
        """
        size = check_page_limit(limit)
        terms: list[str] = []
        extra: list[Any] = []
        after = check_seq_cursor(cursor)
        if after is not None:
            terms.append("seq < ?")
            extra.append(after)
        filters = (("name = ?", name), ("created_at >= ?", since), ("created_at < ?", until))
        for term, value in filters:
            if value is not None:
                terms.append(term)
                extra.append(value)
        pairs: list[tuple[str, str]] = []
        if queue is not None or states is not None:
            listed = list(TaskState) if states is None else [TaskState(s) for s in states]
            wanted = [s.value for s in listed]
            if queue is not None:
                queues = [queue]
            else:
                queues = [row[0] for row in await self.db.fetch(_QUEUE_NAMES, ())]
            pairs = [(q, st) for q in queues for st in wanted]
            if not pairs:
                return TaskPage(tasks=[])
        select = f"SELECT seq, {COLUMNS_SQL} FROM omniq_tasks"
        if pairs and len(pairs) <= _MAX_ARMS:
            where = " AND ".join(["queue = ?", "state = ?", *terms])
            top = f"ORDER BY seq DESC LIMIT {size + 1}"
            arm = f"SELECT * FROM ({select} WHERE {where} {top})"
            sql = " UNION ALL ".join([arm] * len(pairs)) + f" {top}"
            params: tuple[Any, ...] = tuple(v for q, st in pairs for v in (q, st, *extra))
        else:
            where_qs, qs_params = _filter(queue, states)
            all_terms = ([where_qs[len("WHERE ") :]] if where_qs else []) + terms
            clause = " WHERE " + " AND ".join(all_terms) if all_terms else ""
            sql = f"{select}{clause} ORDER BY seq DESC LIMIT {size + 1}"
            params = (*qs_params, *extra)
        rows = await self.db.fetch(sql, params)
        tasks = [row_to_task(row[1:]) for row in rows[:size]]
        return TaskPage(tasks=tasks, cursor=str(rows[size - 1][0]) if len(rows) > size else None)

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        counts: dict[str, dict[TaskState, int]] = {}
        for queue, state, count in await self.db.fetch(
            "SELECT queue, state, count(*) FROM omniq_tasks GROUP BY queue, state"
        ):
            try:
                counts.setdefault(queue, {})[TaskState(state)] = count
            except ValueError:  # a corrupt row: not a state; reserve hands it out to dead-letter
                log.warning("omniq_tasks has %d row(s) in unknown state %r", count, state)
        return counts

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        where, params = _filter(queue, states)
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                f"DELETE FROM omniq_tasks {where} RETURNING id, state", params
            )
            ids = [row[0] for row in rows]
            unsettled = [row[0] for row in rows if row[1] != TaskState.SUCCEEDED.value]
            await cancel_purged_dependents(conn, unsettled, time.time())
            await _forget_edges(conn, ids)
        return len(ids)

    async def _cleanup(self) -> builtins.list[Task]:
        async with self.db.transaction() as conn:
            now = time.time()
            rows = await conn.execute_fetchall(
                f"""UPDATE omniq_tasks SET state = 'expired', finished_at = ?, {_CLEAR_LEASE}
                    WHERE {UNSTARTED_WHERE} AND expires_at <= ? RETURNING {COLUMNS_SQL}""",
                (now, now),
            )
            expired = [row_to_task(row) for row in rows]
            for task in expired:
                await cancel_dependents(conn, task.id, "expired", now)
            rows = await conn.execute_fetchall(
                "DELETE FROM omniq_tasks WHERE purge_at <= ? RETURNING id", (now,)
            )
            await _forget_edges(conn, [row[0] for row in rows])
        return expired

    # -- schedules ---------------------------------------------------------------------

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        await self.db.fetch(
            """INSERT OR REPLACE INTO omniq_schedules (id, next_run, last_run, paused, data)
               VALUES (?, ?, ?, ?, ?)""",
            (
                schedule.id,
                schedule.next_run,
                schedule.last_run,
                int(schedule.paused),
                encoder.encode(schedule),
            ),
        )
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = await self.db.fetch(
            f"SELECT {_SCHEDULE_COLUMNS} FROM omniq_schedules WHERE id = ?", (schedule_id,)
        )
        return _schedule(rows[0]) if rows else None

    async def _list_schedules(self) -> builtins.list[Schedule]:
        rows = await self.db.fetch(f"SELECT {_SCHEDULE_COLUMNS} FROM omniq_schedules ORDER BY id")
        return [s for s in map(_schedule, rows) if s is not None]

    async def _delete_schedule(self, schedule_id: str) -> bool:
        return bool(
            await self.db.fetch(
                "DELETE FROM omniq_schedules WHERE id = ? RETURNING id", (schedule_id,)
            )
        )

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        rows = await self.db.fetch(
            """UPDATE omniq_schedules SET paused = ?, next_run = COALESCE(?, next_run)
               WHERE id = ? RETURNING id""",
            (int(paused), next_run, schedule_id),
        )
        return bool(rows)

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        won: builtins.list[tuple[Schedule, builtins.list[float]]] = []
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                f"""SELECT {_SCHEDULE_COLUMNS} FROM omniq_schedules
                    WHERE paused = 0 AND next_run <= ? ORDER BY next_run LIMIT ?""",
                (at, limit),
            )
            for row in rows:
                try:
                    schedule = _schedule(row)
                    if schedule is None:
                        continue
                    times, nxt = schedule.due_firings(at)
                except (SerializationError, ConfigError) as exc:
                    log.warning("schedule %r cannot fire: %s", row[0], exc)
                    continue
                if not times:
                    continue
                claimed = await conn.execute_fetchall(
                    """UPDATE omniq_schedules SET next_run = ?, last_run = ?
                       WHERE id = ? AND next_run = ? RETURNING id""",
                    (nxt, times[-1], schedule.id, schedule.next_run),
                )
                if claimed:
                    won.append((schedule, times))
        return won

    # -- live workers ------------------------------------------------------------------

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        at = time.time()
        stored = msgspec.structs.replace(info, expires_at=at + ttl)
        async with self.db.transaction() as conn:  # also forgets workers that expired
            await conn.execute("DELETE FROM omniq_workers WHERE expires_at <= ?", (at,))
            await conn.execute(
                "INSERT OR REPLACE INTO omniq_workers (id, expires_at, data) VALUES (?, ?, ?)",
                (info.id, stored.expires_at, encoder.encode(stored)),
            )
        return stored

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        rows = await self.db.fetch(
            "SELECT data FROM omniq_workers WHERE expires_at > ? ORDER BY id", (time.time(),)
        )
        return [worker_decoder.decode(row[0]) for row in rows]

    async def _unregister_worker(self, worker_id: str) -> bool:
        return bool(
            await self.db.fetch("DELETE FROM omniq_workers WHERE id = ? RETURNING id", (worker_id,))
        )


def _reserve_now(
    conn: sqlite3.Connection, queues: Sequence[str], worker_id: str, lease: float, limit: int
) -> list[Task]:
    """Pick up to ``limit`` ready tasks of ``queues`` and lease them, on the
    connection's thread inside a :meth:`Database.run` transaction."""
    now = time.time()
    seqs = [row[0] for row in conn.execute(*_ready_pick(_READY_ARM, "seq", queues, now, limit))]
    if not seqs:
        return []
    check_rows(len(seqs))  # more than the last reserve's size foretold: to the thread
    rows = conn.execute(_RESERVE, (worker_id, now + lease, now, json_list(seqs))).fetchall()
    order = {seq: i for i, seq in enumerate(seqs)}
    return [row_to_task(row[1:]) for row in sorted(rows, key=lambda row: order[row[0]])]


def _finish_now(
    conn: sqlite3.Connection,
    items: Sequence[Completion],
    results: Sequence[TaskResult],
    events: Sequence[TaskEvent],
) -> list[bool]:
    """:meth:`SqliteTaskQueue._finish` inside a :meth:`Database.run` transaction."""
    states = [state for _, _, state, _ in items]
    first: dict[str, int] = {}  # a task listed twice completes once
    for i, (task_id, *_) in enumerate(items):
        first.setdefault(task_id, i)
    batch = [
        [tid, tok, state.value, error]
        for (tid, tok, _, error), state in zip(items, states, strict=True)
    ]
    now = time.time()
    rows = conn.execute(
        _COMPLETE, (now, msgspec.json.encode([batch[i] for i in first.values()]).decode())
    ).fetchall()
    done = {row[0] for row in rows}
    succeeded = [t for t in done if states[first[t]] is TaskState.SUCCEEDED]
    make_ready_now(conn, succeeded, now)
    for task_id in done:
        if states[first[task_id]] is TaskState.CANCELLED:
            cancel_dependents_now(conn, task_id, "cancelled", now)
    refused = first.keys() - done
    if results:
        insert_results_now(conn, [r for r in results if r.task_id not in refused])
    if events:
        insert_events_now(conn, [e for e in events if e.task_id not in refused])
    return [task_id in done and first[task_id] == i for i, (task_id, *_) in enumerate(items)]


def _enqueue_now(
    conn: sqlite3.Connection, tasks: Sequence[Task], events: Sequence[TaskEvent]
) -> list[Task]:
    """Store ``tasks`` and, when given, their ``enqueued`` events (as stored), on the
    connection's thread inside a :meth:`Database.run` transaction."""
    parents = {p for t in tasks for p in t.depends_on}
    if len(tasks) == 1 and not parents:
        return _enqueue_one_now(conn, tasks[0], events)
    now = time.time()
    if len(tasks) == 1:  # delay(): no JSON list to build and expand
        rows = conn.execute(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks WHERE id = ?", (tasks[0].id,)
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks WHERE id IN ({_BY_IDS})",
            (json_list([t.id for t in tasks]),),
        ).fetchall()
    stored = {row[0]: row_to_task(row) for row in rows}
    known: dict[str, str] = {}
    if parents:
        rows = conn.execute(
            f"SELECT id, state FROM omniq_tasks WHERE id IN ({_BY_IDS})",
            (json_list(sorted(parents)),),
        ).fetchall()
        known = dict(rows)
    out: list[Task] = []
    inserts: list[tuple[Any, ...]] = []
    edges: list[tuple[str, str]] = []
    for given in tasks:
        task = stored.get(given.id)
        if task is None:
            task = stored[given.id] = _admit(given, known, now)
            known[task.id] = task.state.value
            inserts.append(task_params(task))
            # every child, waiting or not, so dependents() lists it
            edges.extend((parent, task.id) for parent in set(task.depends_on))
        out.append(task)
    if inserts:
        _INSERT.run(conn, inserts)
    if edges:
        conn.executemany(
            "INSERT OR IGNORE INTO omniq_task_deps (parent, child) VALUES (?, ?)", edges
        )
    if events:
        insert_events_now(conn, [as_stored(e, t) for e, t in zip(events, out, strict=True)])
    return out


def _enqueue_one_now(
    conn: sqlite3.Connection, given: Task, events: Sequence[TaskEvent]
) -> list[Task]:
    """:func:`_enqueue_now` for one task without parents (what ``delay()`` sends): the
    insert itself tells whether the id was new (``ON CONFLICT DO NOTHING``), so a new
    task, the usual case, costs no lookup; only an existing one is read back."""
    task = _admit_ready(given, time.time())
    cursor = conn.cursor()  # (one for both inserts: Connection.execute makes one a call)
    if cursor.execute(*new_task_insert(_INSERT_NEW, task)).rowcount == 0:
        [row] = cursor.execute(
            f"SELECT {COLUMNS_SQL} FROM omniq_tasks WHERE id = ?", (given.id,)
        ).fetchall()
        task = row_to_task(row)
    if events:
        insert_events_now(cursor, [as_stored(events[0], task)])
    return [task]


_INSERT = RowInsert("omniq_tasks", TASK_COLUMNS, required=TASK_REQUIRED)
_INSERT_NEW = RowInsert(
    "omniq_tasks", TASK_COLUMNS, "ON CONFLICT (id) DO NOTHING", required=TASK_REQUIRED
)


def _admit(task: Task, known: dict[str, str], now: float) -> Task:
    """The task as it will be stored: its state decided from its parents and eta."""
    for parent in task.depends_on:
        if parent not in known:
            raise TaskNotFoundError(parent, f" (task {task.id!r} depends on it)")
    created = task.created_at or now
    state, error = initial_state(task, known, now)
    if error is not None:
        return msgspec.structs.replace(
            task, state=state, created_at=created, finished_at=now, error=error
        )
    if state is task.state and created == task.created_at:
        return task  # (a delay()'s task: no copy)
    return msgspec.structs.replace(task, state=state, created_at=created)


def _admit_ready(task: Task, now: float) -> Task:
    """:func:`_admit` for a task without parents: :func:`ready_state` is what
    :func:`initial_state` decides for it, without its checks of parents (a generator
    and two calls a ``delay()``)."""
    created = task.created_at or now
    state = ready_state(task, now)
    if state is task.state and created == task.created_at:
        return task  # (a delay()'s task: no copy)
    return msgspec.structs.replace(task, state=state, created_at=created)


def _filter(queue: str | None, states: Iterable[TaskState] | None) -> tuple[str, tuple[Any, ...]]:
    terms: list[str] = []
    params: list[Any] = []
    if queue is not None:
        terms.append("queue = ?")
        params.append(queue)
    if states is not None:
        terms.append(f"state IN ({_BY_IDS})")
        params.append(json_list([TaskState(s).value for s in states]))
    return ("WHERE " + " AND ".join(terms) if terms else ""), tuple(params)


async def _forget_edges(conn: Any, ids: Sequence[str]) -> None:
    """Drop dependency rows of deleted tasks."""
    if ids:
        listed = json_list(ids)
        await conn.execute(
            f"DELETE FROM omniq_task_deps WHERE parent IN ({_BY_IDS}) OR child IN ({_BY_IDS})",
            (listed, listed),
        )


_SCHEDULE_COLUMNS = "id, next_run, last_run, paused, data"


def _schedule(row: Sequence[Any]) -> Schedule | None:
    """The schedule of a row, or None when it does not decode (see omniq.records)."""
    schedule_id, next_run, last_run, paused, data = row
    schedule = schedule_or_none(schedule_id, data, "omniq_schedules")
    if schedule is None:
        return None
    return msgspec.structs.replace(
        schedule, next_run=next_run, last_run=last_run, paused=bool(paused)
    )
