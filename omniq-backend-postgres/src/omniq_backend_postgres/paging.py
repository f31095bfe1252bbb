"""``list_page`` by key: newest first by enqueue order (``seq``), the cursor being the
last ``seq`` shown.

Each (queue, state) pair is read backwards along the ``tasks_queue_state`` index
(queue, state, seq) with a LATERAL subquery, and the pairs' heads are merged; the queues
come from a loose index scan (a recursive CTE hopping from one queue name to the next),
so a page costs a few index probes whatever the number of tasks. The page size is
written into the statement, not bound: the store's connections plan statements
generically, and a generic plan takes a bound LIMIT for a tenth of the rows and so
prefers reading a whole (queue, state) and sorting it to walking the index. JIT is off
for the statement: the planner guesses a hundred queues, and compiling for that guess
took half a second where running the walk takes a millisecond. No index is added for
it: enqueue pays nothing. A name or time filter is checked on the rows the index walk
reads, so a filter that matches few tasks reads more of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from omniq.interfaces import TaskPage, check_page_limit, check_seq_cursor
from omniq.models import TaskState

from .rows import TASK_COLUMNS, task_from_row

if TYPE_CHECKING:
    import asyncpg

    from .queue import PostgresTaskQueue

ALL_QUEUES = """
WITH RECURSIVE queues(q) AS (
    (SELECT queue FROM {s}.tasks ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM {s}.tasks t WHERE t.queue > queues.q ORDER BY t.queue LIMIT 1)
    FROM queues WHERE queues.q IS NOT NULL
)"""
ONE_QUEUE = "WITH queues(q) AS (SELECT $2::text)"


async def list_page(
    store: PostgresTaskQueue,
    *,
    queue: str | None,
    states: Iterable[TaskState] | None,
    name: str | None,
    since: float | None,
    until: float | None,
    cursor: str | None,
    limit: int,
) -> TaskPage:
    size = check_page_limit(limit)
    after = check_seq_cursor(cursor)
    wanted = (
        [s.value for s in TaskState] if states is None else [TaskState(s).value for s in states]
    )
    args: list[Any] = [wanted]
    head = ALL_QUEUES
    if queue is not None:
        args.append(queue)
        head = ONE_QUEUE
    where = ["t.queue = queues.q", "t.state = st.state"]
    for clause, value in (
        ("t.seq < ${}::bigint", after),
        ("t.name = ${}::text", name),
        ("t.created_at >= ${}::float8", since),
        ("t.created_at < ${}::float8", until),
    ):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    sql = store.sql(
        f"""{head}
SELECT p.* FROM queues CROSS JOIN unnest($1::text[]) AS st(state)
CROSS JOIN LATERAL (
    SELECT t.seq, {TASK_COLUMNS} FROM {{s}}.tasks t
    WHERE {" AND ".join(where)}
    ORDER BY t.seq DESC LIMIT {size + 1}
) p
WHERE queues.q IS NOT NULL
ORDER BY p.seq DESC LIMIT {size + 1}"""
    )

    async def without_jit(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        await conn.execute("SELECT set_config('jit', 'off', true)")
        found: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return found

    rows = await store._run(without_jit, transaction=True)
    tasks = [task_from_row(row[1:]) for row in rows[:size]]
    return TaskPage(tasks=tasks, cursor=str(rows[size - 1][0]) if len(rows) > size else None)
