"""What only the PostgreSQL backend has: migrations, in-transaction enqueue, NOTIFY
wake-ups, SQL-queryable events, and its behaviour under hostile input and faults."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import click
import msgspec
import pytest
from asyncpg.types import ServerVersion
from click.testing import CliRunner

from omniq.errors import ConfigError
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskState, encoder
from omniq.testing import eventually, make_event, make_result, make_task
from omniq_backend_postgres import listener as listener_module
from omniq_backend_postgres import plugin
from omniq_backend_postgres.events import PostgresEventStorage
from omniq_backend_postgres.listener import HEARD_MAX, Listener
from omniq_backend_postgres.migrations import (
    _TABLE_SQL,
    LATEST_VERSION,
    MIGRATIONS,
    SchemaVersionError,
    migrate,
)
from omniq_backend_postgres.queue import (
    COMPLETE_MANY,
    DRAINED_WAIT,
    HEARTBEAT,
    INSERT_RECORDED,
    NEXT_READY,
    RECORDED_MAX,
    RESERVE,
    RESERVE_ALONE,
    PostgresTaskQueue,
    _copy_rows,
    _insert_args,
    _insert_row,
)
from omniq_backend_postgres.results import CARRIED_MAX, EXPECTED_MAX, PostgresResultStorage
from omniq_backend_postgres.settings import PostgresSettings, PostgresUnavailableError
from omniq_backend_postgres.store import compact, hot_alive, json_array, text_array

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends" / "postgres.md"
#: Long enough that returning before it proves a NOTIFY woke the waiter.
LONG = 30.0

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url)
    yield connection
    await connection.close()


@pytest.fixture
async def queue(pg_url: str, pg_schema: str) -> AsyncIterator[PostgresTaskQueue]:
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=4) as store:
        yield store


async def count_tasks(conn: asyncpg.Connection, schema: str) -> int:
    return await conn.fetchval(f'SELECT count(*) FROM "{schema}".tasks')


async def test_an_array_literal_reads_back_as_the_values_it_was_made_of(
    conn: asyncpg.Connection,
) -> None:
    """finish_many sends its text columns as one literal each (``text_array``): quotes,
    backslashes, commas, braces, the word NULL, spaces and empty strings must come back
    as they were, and None as NULL, as text and as jsonb."""
    odd = ['x"y', "a\\b", "", "NULL", "{,}", " sp ", "\u00fc\u20ac", '\\"']
    joined = ['a","b', "c"]  # (as many quotes as a separator: told by their count)
    for values in ([], ["a"], odd, [None], [None, None], ["a", None, '"'], joined, ['"', "x"]):
        assert await conn.fetchval("SELECT $1::text::text[]", text_array(values)) == values
    jsons = ['{"k": "v\\"q"}', None, "[1, 2]"]
    assert await conn.fetchval("SELECT $1::text::jsonb[]", text_array(jsons)) == jsons
    # json_array: JSON texts as a JSON encoder writes them (escapes and all)
    objects = [{"k": 'a"b\\c\n{,}'}, "\u00fc", [], None]
    texts = [None if v is None else msgspec.json.encode(v).decode() for v in objects]
    for values, expected in (([], []), ([None], [None]), (texts, objects)):
        got = await conn.fetchval("SELECT $1::text::jsonb[]", json_array(values))
        assert [None if v is None else msgspec.json.decode(v) for v in got] == expected


async def test_an_array_literal_of_a_value_with_nul_is_refused_not_split(
    conn: asyncpg.Connection,
) -> None:
    """PostgreSQL text cannot hold NUL: a value with one is refused by the server, as a
    list parameter's is, never read as two elements (which would shift every column of
    a finish_many after it onto the wrong task)."""
    for values in (["a\x00b", "c"], ["a\x00b"], ["a", None, "b\x00"]):
        with pytest.raises(asyncpg.PostgresError):
            await conn.fetchval("SELECT $1::text[]", values)
        with pytest.raises(asyncpg.PostgresError):
            await conn.fetchval("SELECT $1::text::text[]", text_array(values))


async def test_finish_many_stores_its_literal_columns_as_they_were(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    """finish_many sends the events' ids, task ids, types and details and the results'
    task ids as literals, and the row counts apart: details with quotes, backslashes,
    braces and non-ASCII text, each event's own type and time, and a task's result
    given twice in one batch (its last kept) come back as they were."""
    for _ in range(2):
        await queue.enqueue(make_task())
    a, b = await queue.reserve(["default"], "w", 30.0, limit=2)
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema) as results,
        PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events,
    ):
        odd = {"name": 'x"y', "p": "a\\b {,} NULL \u00fc\u20ac", "n": [1, None]}
        sent = [
            make_event(task_id=a.id, type=EventType.STARTED, detail=odd, timestamp=1.5),
            make_event(task_id=a.id, type=EventType.SUCCEEDED, detail={}, timestamp=2.25),
            make_event(task_id=b.id, type=EventType.SUCCEEDED, detail={"q": '"'}),
        ]
        first, last = make_result(task_id=a.id), make_result(task_id=a.id, attempts=2)
        answers = await queue.finish_many(
            [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in (a, b)],
            [first, last, make_result(task_id=b.id)],
            sent,
            results,
            events,
        )
        assert answers == [True, True]
        assert await results.get(a.id) == last
        got = await events.query(task_id=a.id) + await events.query(task_id=b.id)
        assert [(e.id, e.type, e.timestamp, e.detail) for e in got] == [
            (e.id, e.type, e.timestamp, e.detail) for e in sent
        ]


# -- migrations ----------------------------------------------------------------------


def test_one_task_row_and_the_bulk_columns_agree() -> None:
    """A delay()'s row of scalars and a bulk's column arrays are built apart (for speed);
    they must give the same values in the same order."""
    tasks = [
        make_task(id="a", eta=5.0, expires_at=9.0, priority=3, attempts=1),
        make_task(id="b", queue="other", max_retries=0),
    ]
    tasks[1] = msgspec.structs.replace(tasks[1], schedule_id="nightly", result_ttl=60.0)
    states, errors = ["dead", None], ['{"type": "E"}', None]
    columns = _insert_args(tasks, states, errors)
    for i, task in enumerate(tasks):
        assert [column[i] for column in columns] == list(_insert_row(task, states[i], errors[i]))
    assert [column[0] for column in _insert_args(tasks[:1])] == list(_insert_row(tasks[0]))


def test_a_copied_row_is_the_row_insert_stores_pending() -> None:
    """A bulk's ``COPY`` rows are :func:`_insert_row` written out: the same values for
    each task (its attempts allowed among them), state pending."""
    tasks = [
        make_task(id="a", created_at=1.0, max_retries=4, max_deliveries=2),
        make_task(id="b", created_at=2.0, max_retries=0, max_deliveries=3, priority=7),
    ]
    assert _copy_rows(tasks) == [_insert_row(t, "pending") for t in tasks]


async def test_concurrent_migrators_apply_each_migration_once(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    results = await asyncio.gather(*(migrate(pg_url, schema=pg_schema) for _ in range(6)))
    applied = [m.version for ran in results for m in ran]
    assert sorted(applied) == list(range(1, LATEST_VERSION + 1)), applied
    rows = await conn.fetch(f'SELECT version FROM "{pg_schema}".migrations ORDER BY version')
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))


async def test_concurrent_store_opens_on_a_fresh_schema(pg_url: str, pg_schema: str) -> None:
    stores = [PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].enqueue(make_task(id="t1"))
        assert (await stores[-1].get("t1")) is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_check_reports_pending_then_nothing(pg_url: str, pg_schema: str) -> None:
    pending = await migrate(pg_url, schema=pg_schema, check=True)
    assert [m.version for m in pending] == list(range(1, LATEST_VERSION + 1))
    assert await migrate(pg_url, schema=pg_schema) != []
    assert await migrate(pg_url, schema=pg_schema, check=True) == []
    assert await migrate(pg_url, schema=pg_schema) == []


async def test_a_schema_made_by_version_1_upgrades_with_its_tasks(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """Each later migration applies over data an older OmniQ left, mid-flight."""
    first = MIGRATIONS[0]
    settings = PostgresSettings.from_url(pg_url, schema=pg_schema)
    await conn.execute(_TABLE_SQL.replace("{s}", settings.quoted_schema) + first.render(settings))
    await conn.execute(
        f'INSERT INTO "{pg_schema}".migrations (version, description) VALUES (1, $1)',
        first.description,
    )
    old = PostgresTaskQueue.from_url(pg_url, schema=pg_schema).using(conn)  # no migration on open
    await old.enqueue(make_task(id="t1"))
    # leased as version 1's reserve left it (today's reserve() is a later migration's)
    await conn.execute(
        f"UPDATE \"{pg_schema}\".tasks SET state = 'running', attempts = 1, lease_owner = 'w', "
        "lease_token = 'token-1', lease_deadline = extract(epoch FROM now()) + 60 WHERE id = 't1'"
    )
    await conn.execute(  # an event as version 1 wrote it (a row of one event)
        f'INSERT INTO "{pg_schema}".events (id, task_id, queue, type, ts, detail)'
        " VALUES ('e1', 't1', 'default', 'enqueued', 1700000000, '{\"state\": \"pending\"}')"
    )
    applied = await migrate(pg_url, schema=pg_schema)
    assert [m.version for m in applied] == list(range(2, LATEST_VERSION + 1))
    async with (
        PostgresTaskQueue.from_url(pg_url, schema=pg_schema) as queue,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema) as results,
        PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events,
    ):
        [event] = await events.query(task_id="t1")
        assert (event.id, event.type, event.detail) == (
            "e1",
            EventType.ENQUEUED,
            {"state": "pending"},
        )
        assert await events.query(limit=1, order="desc") == [event]
        [count] = await events.counts(since=1_699_999_999, until=1_700_000_001, step=10)
        assert count.count == 1
        view = await conn.fetch(f'SELECT id, task_id FROM "{pg_schema}".event_log')
        assert [tuple(r) for r in view] == [("e1", "t1")]
        waiter = asyncio.create_task(results.wait("t1", LONG))
        result = make_result(task_id="t1")
        assert await queue.finish_many(
            [("t1", "token-1", TaskState.SUCCEEDED, None)],
            [result],
            [],
            results,
            None,
        ) == [True]
        assert await asyncio.wait_for(waiter, 10) == result, "the result NOTIFY still wakes wait()"
        assert (await queue.get("t1")).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
        assert await events.cleanup(1_700_000_001) == 1


async def test_schema_from_a_newer_version_is_refused(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    await migrate(pg_url, schema=pg_schema)
    await conn.execute(
        f'INSERT INTO "{pg_schema}".migrations (version, description) VALUES ($1, $2)',
        LATEST_VERSION + 1,
        "from the future",
    )
    store = PostgresTaskQueue.from_url(pg_url, schema=pg_schema)
    with pytest.raises(SchemaVersionError, match=rf"version {LATEST_VERSION + 1}.*newer"):
        await store.open()
    with pytest.raises(SchemaVersionError, match="newer"):
        await migrate(pg_url, schema=pg_schema, check=True)
    await store.close()


async def test_without_auto_migrate_an_old_schema_names_the_command(
    pg_url: str, pg_schema: str
) -> None:
    store = PostgresTaskQueue.from_url(pg_url, schema=pg_schema, auto_migrate="false")
    with pytest.raises(SchemaVersionError, match="omniq migrate"):
        await store.open()


def test_cli_migrate_and_check(pg_url: str, pg_schema: str) -> None:
    cli = click.Group()
    plugin.omniq_register_cli_commands(cli=cli)
    runner = CliRunner()
    args = ["migrate", "--url", pg_url, "--schema", pg_schema]
    pending = runner.invoke(cli, [*args, "--check"])
    assert pending.exit_code == 1 and "pending migrations" in pending.output, pending.output
    applied = runner.invoke(cli, args)
    assert applied.exit_code == 0 and "applied migration 1" in applied.output, applied.output
    current = runner.invoke(cli, [*args, "--check"])
    assert current.exit_code == 0 and "up to date" in current.output, current.output


def test_plugin_module_does_not_import_asyncpg() -> None:
    code = (
        "import sys, click, omniq_backend_postgres.plugin as p\n"
        "p.omniq_register_backends(register=lambda spec: None)\n"
        "p.omniq_register_cli_commands(cli=click.Group())\n"
        "assert 'asyncpg' not in sys.modules, 'the plugin imported asyncpg'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- enqueue in the caller's transaction -----------------------------------------------


@pytest.mark.parametrize("style", ["connection", "using"])
async def test_enqueue_in_user_transaction(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_schema: str, style: str
) -> None:
    async def enqueue(task_id: str) -> None:
        task = make_task(id=task_id)
        if style == "connection":
            await queue.enqueue(task, connection=conn)
        else:
            await queue.using(conn).enqueue(task)

    async with conn.transaction():
        await enqueue("kept")
        assert await queue.get("kept") is None, "visible before the transaction committed"
    assert (await queue.get("kept")).state is TaskState.PENDING

    transaction = conn.transaction()
    await transaction.start()
    await enqueue("dropped")
    await transaction.rollback()
    assert await queue.get("dropped") is None
    assert await count_tasks(conn, pg_schema) == 1


async def test_enqueue_many_in_user_transaction_with_dependencies(
    queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    parent = make_task(id="parent")
    child = make_task(id="child", depends_on=("parent",))
    async with conn.transaction():
        stored = await queue.enqueue_many([parent, child], connection=conn)
    assert [t.state for t in stored] == [TaskState.PENDING, TaskState.WAITING]
    assert (await queue.get("child")).state is TaskState.WAITING


async def test_bulk_with_an_existing_id_in_user_transaction(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_url: str, pg_schema: str
) -> None:
    """In the caller's transaction a bulk cannot be written again after a unique
    violation (the transaction would be lost): it uses ON CONFLICT from the start."""
    existing = make_task(queue="elsewhere")
    await queue.enqueue(existing)
    bulk = [make_task() for _ in range(RECORDED_MAX)] + [make_task(id=existing.id)]
    recorded = [make_event(task_id=t.id) for t in bulk]
    async with (
        PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events,
        conn.transaction(),
    ):
        stored = await queue.using(conn).enqueue_recorded(bulk, recorded, events)
        assert await conn.fetchval("SELECT 1") == 1, "the transaction goes on"
    assert stored[-1].queue == "elsewhere"
    assert await count_tasks(conn, pg_schema) == RECORDED_MAX + 1


async def test_child_enqueued_while_parent_completes_is_released(
    queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    """The race dependencies must survive: the child's transaction holds FOR SHARE on
    the parent, so the parent's completion waits, then sees and releases the child."""
    await queue.enqueue(make_task(id="parent"))
    [leased] = await queue.reserve(["default"], "w", 30)
    async with conn.transaction():
        await queue.enqueue(make_task(id="child", depends_on=("parent",)), connection=conn)
        completing = asyncio.ensure_future(
            queue.complete("parent", leased.lease_token, TaskState.SUCCEEDED)
        )
        await asyncio.sleep(0.1)  # let the completion reach the parent's row lock
        assert not completing.done(), "the completion did not wait for the child's transaction"
    assert await completing
    assert (await queue.get("child")).state is TaskState.PENDING


# -- LISTEN/NOTIFY -------------------------------------------------------------------


async def test_enqueue_recorded_writes_tasks_and_events_in_one_statement(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the event storage in the same schema the queue writes the events itself (the
    event store is never called): in its own statement for a small batch, and in the
    transaction that stores the tasks for a task with parents or a bulk."""

    async def refuse(self: PostgresEventStorage, events: Any) -> None:
        raise AssertionError("the event store was called")

    monkeypatch.setattr(PostgresEventStorage, "append_many", refuse)
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        tasks = [make_task(), make_task(eta=time.time() + 3600)]
        recorded = [
            make_event(task_id=t.id, detail={"name": t.name, "state": "pending"}) for t in tasks
        ]
        stored = await queue.enqueue_recorded(tasks, recorded, events)
        assert [t.state for t in stored] == [TaskState.PENDING, TaskState.SCHEDULED]
        got = [(await events.query(task_id=t.id))[0] for t in tasks]
        assert [e.id for e in got] == [e.id for e in recorded]
        assert [e.detail["state"] for e in got] == ["pending", "scheduled"]
        child = make_task(depends_on=[tasks[0].id])
        await queue.enqueue_recorded([child], [make_event(task_id=child.id)], events)
        [event] = await events.query(task_id=child.id)
        assert event.detail["state"] == "waiting"
        bulk = [make_task() for _ in range(RECORDED_MAX + 1)]
        await queue.enqueue_recorded(bulk, [make_event(task_id=t.id) for t in bulk], events)
        for task in (bulk[0], bulk[-1]):
            [event] = await events.query(task_id=task.id)
            assert (event.detail["state"], event.detail["name"]) == ("pending", task.name)


async def test_statements_one_after_another_share_one_connection(
    queue: PostgresTaskQueue,
) -> None:
    """Sequential statements reuse the store's held connection (no pool round per
    statement); concurrent ones take other pool connections; after an error the held
    connection goes back to the pool and the store goes on."""
    pid = "SELECT pg_backend_pid()"
    assert len({await queue.fetchval(pid) for _ in range(5)}) == 1
    assert len(set(await asyncio.gather(*(queue.fetchval(pid) for _ in range(3))))) == 3
    with pytest.raises(asyncpg.DivisionByZeroError):
        await queue.fetchval("SELECT 1 / 0")
    assert await queue.fetchval("SELECT 1") == 1
    running = asyncio.ensure_future(queue.fetchval("SELECT 2 FROM pg_sleep(0.05)"))
    await asyncio.sleep(0)  # the statement holds the connection as close() starts
    await queue.close()
    assert await running == 2


async def test_bulk_columns_sent_once_still_store_each_task_as_given(
    queue: PostgresTaskQueue,
) -> None:
    """A column that is one value for a whole batch travels as one element and is
    expanded by the server; a column where one task differs travels whole."""
    tasks = [make_task(queue="q", priority=0) for _ in range(5)]
    tasks[3] = make_task(queue="q", priority=7)
    await queue.enqueue_many(tasks)
    stored = [await queue.get(t.id) for t in tasks]
    assert [(t.queue, t.priority) for t in stored if t] == [("q", 0)] * 3 + [("q", 7), ("q", 0)]
    assert compact([["a", "b"], [1, 1], [1, 2], [None, None], [3]]) == [
        ["a", "b"],
        [1],
        [1, 2],
        [None],
        [3],
    ]


async def test_bulk_enqueue_stores_no_task_without_its_event(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk's tasks and events share one transaction: when the events cannot be
    written (here by the statement after the insert, as for a bulk holding an id that
    existed), no task of the bulk is stored."""
    from omniq_backend_postgres import queue as queue_module

    existing = make_task()
    await queue.enqueue(existing)
    monkeypatch.setattr(queue_module, "APPEND", "INSERT INTO {s}.no_such_table VALUES ($1)")
    monkeypatch.setattr(queue_module, "append_args", lambda events: [[e.id for e in events]])
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        bulk = [make_task() for _ in range(RECORDED_MAX)] + [existing]
        with pytest.raises(asyncpg.UndefinedTableError):
            await queue.enqueue_recorded(bulk, [make_event(task_id=t.id) for t in bulk], events)
    assert await queue.get(bulk[0].id) is None


async def test_bulk_events_say_how_each_task_is_stored(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    """A bulk's statement writes the events itself only when it inserted every task; with
    an id that existed or one given twice, the events are written after it, each with its
    task as stored. Batches built as they are taken go in one transaction, in order."""
    running = make_task(queue="elsewhere", name="another:task")
    await queue.enqueue(running)
    await queue.reserve(["elsewhere"], "w", 30)
    twice = make_task()
    later = make_task(eta=time.time() + 3600)
    again = make_task(id=running.id, queue="q", name="some:task")
    mixed = [make_task() for _ in range(RECORDED_MAX)] + [twice, again, later, twice]
    plain = [make_task() for _ in range(RECORDED_MAX + 1)]

    def batches() -> Iterator[tuple[list[Task], list[TaskEvent]]]:
        for tasks in (plain, mixed):
            yield tasks, [make_event(task_id=t.id, queue=t.queue) for t in tasks]

    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(batches(), events)
        assert [t.id for t in stored] == [t.id for t in plain + mixed]
        assert [t.state for t in stored[-4:]] == [
            TaskState.PENDING,
            TaskState.RUNNING,
            TaskState.SCHEDULED,
            TaskState.PENDING,
        ]
        for task in (plain[0], plain[-1], mixed[0], running, later):
            [event] = await events.query(task_id=task.id, types=[EventType.ENQUEUED])
            as_stored = await queue.get(task.id)
            assert as_stored is not None
            assert (event.queue, event.detail["name"], event.detail["state"]) == (
                as_stored.queue,
                as_stored.name,
                as_stored.state.value,
            )
        assert len(await events.query(task_id=twice.id)) == 2


def copied_bulk(queue_name: str = "default", at: float | None = None) -> list[Task]:
    """New tasks ready at once with their creation time: a bulk that goes by ``COPY``."""
    at = time.time() if at is None else at
    tasks = [make_task(queue=queue_name, created_at=at) for _ in range(RECORDED_MAX + 1)]
    tasks[1] = msgspec.structs.replace(
        tasks[1],
        priority=-3,
        expires_at=at + 600,
        schedule_id="nightly",
        result_ttl=60.0,
        dead_ttl=120.0,
        attempts=2,
        max_retries=7,
    )
    return tasks


def bulk_events(tasks: Sequence[Task]) -> list[TaskEvent]:
    detail = {"name": tasks[0].name, "state": "pending"}
    return [make_event(task_id=t.id, queue=t.queue, detail=detail) for t in tasks]


async def test_a_bulk_by_copy_stores_what_the_insert_stores(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """A bulk of new tasks ready at once goes by ``COPY`` (outside a caller's
    transaction), built apart from the INSERT's columns: the rows and events must be
    the same as the INSERT's (in a caller's transaction) for the same tasks, in order."""
    at = time.time()
    copied, inserted = copied_bulk(at=at), copied_bulk(at=at)
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(iter([(copied, bulk_events(copied))]), events)
        assert stored == copied  # each as given: pending, not finished
        async with conn.transaction():
            await queue.using(conn).enqueue_batches(
                iter([(inserted, bulk_events(inserted))]), events
            )

        async def rows(tasks: list[Task]) -> list[tuple[Any, ...]]:
            got = await conn.fetch(
                f'SELECT * FROM "{pg_schema}".tasks WHERE id = ANY($1::text[]) ORDER BY seq',
                [t.id for t in tasks],
            )
            return [tuple(v for k, v in r.items() if k not in ("id", "seq", "data")) for r in got]

        assert await rows(copied) == await rows(inserted)
        assert [t.id for t in copied] == [
            r[0]
            for r in await conn.fetch(
                f'SELECT id FROM "{pg_schema}".tasks WHERE id = ANY($1::text[]) ORDER BY seq',
                [t.id for t in copied],
            )
        ]
        for a, b in zip(copied, inserted, strict=True):
            got_a, got_b = await queue.get(a.id), await queue.get(b.id)
            assert got_a is not None and got_b is not None
            assert msgspec.structs.replace(got_a, id=b.id, payload=b.payload) == got_b
            [event_a] = await events.query(task_id=a.id)
            [event_b] = await events.query(task_id=b.id)
            assert (event_a.queue, event_a.type, event_a.detail) == (
                event_b.queue,
                event_b.type,
                event_b.detail,
            )
            assert event_a.detail == {"name": a.name, "state": "pending"}


async def test_a_bulk_by_copy_writes_its_events_as_one_row_that_every_reader_expands(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """A bulk's ``enqueued`` events, alike but for their ids, go by ``COPY`` as one events
    row (migration 15). Queries by task, queue, type and time, their order and limit,
    the counts, the cleanup and the event_log view each see every event of it, among
    rows of one event each (all that older versions wrote)."""
    at = 1_700_000_000.0
    tasks = copied_bulk(at=at)
    bulk = bulk_events(tasks)  # (at make_event's time, 1_700_000_000.0)
    later = copied_bulk(at=at)
    bulk2 = [msgspec.structs.replace(e, timestamp=at + 0.5) for e in bulk_events(later)]
    before = make_event(timestamp=at - 1)
    after = make_event(timestamp=at + 1, type=EventType.STARTED, worker_id="w")
    everything = [before, *bulk, *bulk2, after]
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        await events.append(before)
        await queue.enqueue_batches(iter([(tasks, bulk), (later, bulk2)]), events)
        await events.append(after)
        assert await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".events') == 4
        assert await events.query(limit=None) == everything
        assert await events.query(limit=None, order="desc") == everything[::-1]
        for limit in (1, 3, len(bulk) + 1, len(bulk) + 2, len(everything) + 1):
            assert await events.query(limit=limit) == everything[:limit]
            assert await events.query(limit=limit, order="desc") == everything[::-1][:limit]
        assert await events.query(task_id=tasks[7].id) == [bulk[7]]
        assert await events.query(task_id=before.task_id) == [before]
        assert await events.query(task_id="") == []
        inside = min(t.id for t in tasks) + "0"  # in the batch's range of ids, not in it
        assert await events.query(task_id=inside) == []
        assert await events.query(task_id=tasks[7].id[:-1]) == []
        assert await events.query(types=[EventType.STARTED]) == [after]
        assert await events.query(types=[EventType.ENQUEUED], since=at, limit=None) == [
            *bulk,
            *bulk2,
        ]
        assert await events.query(since=at, until=at + 0.5, limit=2, order="desc") == [
            bulk[-1],
            bulk[-2],
        ]
        assert await events.query(queue="default", until=at) == [before]
        assert await events.query(queue="elsewhere", limit=None) == []
        counts = await events.counts(since=at - 1, until=at + 2, step=1.0)
        assert [(c.bucket, c.type, c.count) for c in counts] == [
            (at - 1, "enqueued", 1),
            (at, "enqueued", len(bulk) + len(bulk2)),
            (at + 1, "started", 1),
        ]
        view = await conn.fetch(
            f'SELECT id, task_id, task_name FROM "{pg_schema}".event_log ORDER BY ts, seq'
        )
        assert sorted((r["id"], r["task_id"]) for r in view) == sorted(
            (e.id, e.task_id) for e in everything
        )
        assert {r["task_id"]: r["task_name"] for r in view}[tasks[5].id] == tasks[5].name
        assert await events.query(task_id=later[3].id, limit=1) == [bulk2[3]]
        assert await events.cleanup(at + 0.5) == 1 + len(bulk)
        assert await events.query(limit=None) == [*bulk2, after]


async def test_a_bulk_keeps_its_events_in_order_across_copy_and_insert_batches(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """The events of the batches written by ``COPY`` are held and written together:
    before a batch that goes another way (here delayed tasks), so the bulk's events are
    appended in its order whatever way each batch went."""
    first, last = copied_bulk(), copied_bulk()
    delayed = [make_task(eta=time.time() + 3600) for _ in range(3)]
    batches = [
        (first, bulk_events(first)),
        (delayed, bulk_events(delayed)),
        (last, bulk_events(last)),
    ]
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(iter(batches), events)
        assert [t.id for t in stored] == [t.id for t in (*first, *delayed, *last)]
        got = await events.query(limit=None)
        assert [e.id for e in got] == [e.id for _, evs in batches for e in evs]
        assert [e.detail["state"] for e in got[len(first) : len(first) + 3]] == ["scheduled"] * 3
        assert await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".events') == 2 + 3


@pytest.fixture
def copied_tables(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables each ``COPY`` of the test writes, in order."""
    tables: list[str] = []
    copy = asyncpg.Connection.copy_records_to_table

    async def counted(self: asyncpg.Connection, table_name: str, **kwargs: Any) -> Any:
        tables.append(table_name)
        return await copy(self, table_name, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", counted)
    return tables


async def test_a_bulk_sends_its_consecutive_copied_batches_as_one_copy(
    queue: PostgresTaskQueue,
    pg_url: str,
    pg_schema: str,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    copied_tables: list[str],
) -> None:
    """Consecutive batches of new tasks ready at once go by one ``COPY`` of the tasks
    (a stream fed as each batch is built), cut where a batch goes another way; every
    task and event is stored in the bulk's order."""
    from omniq_backend_postgres import queue as queue_module

    monkeypatch.setattr(queue_module, "COPY_SECONDS", math.inf)  # (however slow the host)
    runs = [copied_bulk(), copied_bulk(), copied_bulk()]
    delayed = [make_task(eta=time.time() + 3600) for _ in range(3)]
    last = copied_bulk()
    order = [*runs, delayed, last]
    batches = [(tasks, bulk_events(tasks)) for tasks in order]
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(iter(batches), events)
        assert [t.id for t in stored] == [t.id for tasks in order for t in tasks]
        assert copied_tables == ["tasks", "events", "tasks", "events"]
        got = await events.query(limit=None)
        assert [e.id for e in got] == [e.id for _, evs in batches for e in evs]
    in_order = f'SELECT array_agg(id ORDER BY seq) FROM "{pg_schema}".tasks'
    assert await conn.fetchval(in_order) == [t.id for tasks in order for t in tasks]


async def test_a_long_bulk_gives_the_loop_a_turn_between_copies(
    queue: PostgresTaskQueue,
    pg_url: str,
    pg_schema: str,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    copied_tables: list[str],
) -> None:
    """A ``COPY`` takes at most ``COPY_BATCHES`` batches (its rows are built without a
    turn of the event loop); the bulk goes on in another ``COPY`` of the same
    transaction, in order, and each task's event is stored."""
    from omniq_backend_postgres import queue as queue_module

    monkeypatch.setattr(queue_module, "COPY_BATCHES", 2)
    monkeypatch.setattr(queue_module, "COPY_SECONDS", math.inf)  # (however slow the host)
    order = [copied_bulk() for _ in range(5)]
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(
            iter([(tasks, bulk_events(tasks)) for tasks in order]), events
        )
        assert [t.id for t in stored] == [t.id for tasks in order for t in tasks]
        assert copied_tables == ["tasks", "tasks", "tasks", "events"]
        got = await events.query(limit=None)
        assert [e.task_id for e in got] == [t.id for tasks in order for t in tasks]
    in_order = f'SELECT array_agg(id ORDER BY seq) FROM "{pg_schema}".tasks'
    assert await conn.fetchval(in_order) == [t.id for tasks in order for t in tasks]


async def test_a_copy_of_batches_built_slowly_lasts_about_one_batch(
    pg_url: str, pg_schema: str
) -> None:
    """A ``COPY`` of consecutive batches is one statement that lasts while the client
    builds them: one whose batches build slowly stops taking more (``COPY_SECONDS``),
    so the server's ``statement_timeout``, which a ``COPY`` a batch (the INSERT before
    it) kept under, does not cancel the bulk: here 12 batches of 50 ms in a COPY of
    them all would last 0.6 s, over the 0.3 s allowed."""
    order = [copied_bulk() for _ in range(12)]

    def batches() -> Iterator[tuple[list[Task], list[TaskEvent]]]:
        for tasks in order:
            time.sleep(0.05)  # (a builder that takes its time: blocks, as building does)
            yield tasks, []

    async with PostgresTaskQueue.from_url(
        f"{pg_url}?statement_timeout=300", schema=pg_schema
    ) as slow:
        stored = await slow.enqueue_batches(batches(), None)
    assert [t.id for t in stored] == [t.id for tasks in order for t in tasks]


async def test_a_bulk_whose_batch_fails_to_build_during_its_copy_stores_nothing(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    """A batch that fails to build while the ``COPY`` of the batches before it is open
    ends that ``COPY`` and the bulk's transaction: no task of the bulk is stored, the
    builder's error is raised, and the connection serves the next bulk."""
    first = copied_bulk()

    def batches() -> Iterator[tuple[list[Task], list[TaskEvent]]]:
        yield first, bulk_events(first)
        raise RuntimeError("the second batch could not be built")

    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        with pytest.raises(RuntimeError, match="could not be built"):
            await queue.enqueue_batches(batches(), events)
        assert await queue.get(first[0].id) is None
        assert await events.query(task_id=first[0].id) == []
        again = copied_bulk()
        stored = await queue.enqueue_batches(iter([(again, bulk_events(again))]), events)
        assert [t.id for t in stored] == [t.id for t in again]
        assert await queue.get(again[-1].id) is not None


async def test_a_bulk_by_copy_stores_no_task_without_its_event(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tasks' ``COPY`` and the events' share the bulk's transaction: when the
    events' fails, no task of the bulk is stored."""
    from omniq_backend_postgres import queue as queue_module

    monkeypatch.setattr(queue_module, "COPY_COLUMNS", ("id", "no_such_column"))
    tasks = copied_bulk()
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        with pytest.raises(asyncpg.UndefinedColumnError):
            await queue.enqueue_batches(iter([(tasks, bulk_events(tasks))]), events)
    assert await queue.get(tasks[0].id) is None


async def test_a_bulk_by_copy_with_an_existing_or_repeated_id_is_written_again(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    """An id that exists, or comes twice, fails the ``COPY`` on ``tasks_pkey``; the bulk
    is then written again (``ON CONFLICT``), each event saying how its task is stored."""
    running = make_task(queue="elsewhere", name="another:task")
    await queue.enqueue(running)
    await queue.reserve(["elsewhere"], "w", 30)
    tasks = copied_bulk()
    again = msgspec.structs.replace(tasks[5], id=running.id)
    tasks[5] = again
    tasks.append(tasks[7])
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema) as events:
        stored = await queue.enqueue_batches(iter([(tasks, bulk_events(tasks))]), events)
        assert [t.id for t in stored] == [t.id for t in tasks]
        assert stored[5].state is TaskState.RUNNING and stored[5].queue == "elsewhere"
        [event] = await events.query(task_id=running.id, types=[EventType.ENQUEUED])
        assert (event.queue, event.detail["state"]) == ("elsewhere", "running")
        assert len(await events.query(task_id=tasks[7].id)) == 2
        [event] = await events.query(task_id=tasks[0].id)
        assert event.detail["state"] == "pending"
    assert await queue.get(tasks[0].id) is not None


async def test_a_bulk_by_copy_wakes_a_waiting_worker(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    """``COPY`` sends no NOTIFY of its own: the bulk notifies its queues before it
    commits."""
    loop = asyncio.get_running_loop()
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as other:
        waiting = asyncio.ensure_future(queue.wait_for_work(["jobs"], LONG))
        await eventually(lambda: _true(queue.listening), "the queue never started listening")
        started = loop.time()
        tasks = copied_bulk("jobs")
        await other.enqueue_batches(iter([(tasks, [])]), None)
        await asyncio.wait_for(waiting, LONG / 2)
    assert loop.time() - started < LONG / 2
    assert len(await queue.reserve(["jobs"], "w", 30, limit=10)) == 10


async def test_enqueue_recorded_plan_probes_existing_ids_by_key(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_schema: str
) -> None:
    """The pool plans generically, once per connection, maybe while the tasks table is
    empty: the lookup of ids that existed must be an index probe, not a join that scans
    the table (which made single enqueues slower as the table grew)."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    sql = queue.sql(INSERT_RECORDED)
    await conn.execute(f"PREPARE recorded AS {sql}")
    text, real, jsonb = "ARRAY[NULL]::text[]", "ARRAY[1.0]::float8[]", "ARRAY['{}']::jsonb[]"
    args = ", ".join(
        [
            "ARRAY['t']",
            "ARRAY['q']",
            "ARRAY['n']",
            "ARRAY[0]::int2[]",
            text,
            "ARRAY[NULL]::float8[]",
            "ARRAY[NULL]::float8[]",
            real,
            "ARRAY[0]",
            "ARRAY[1]",
            real,
            real,
            text,
            "ARRAY[NULL]::jsonb[]",
            "ARRAY['\\x00']::bytea[]",
            "ARRAY['e']",
            "ARRAY['t']",
            "ARRAY['q']",
            "ARRAY['enqueued']",
            real,
            text,
            jsonb,
        ]
    )
    plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN EXECUTE recorded({args})"))
    assert "Index Scan using tasks_pkey on tasks" in plan, plan
    assert "Seq Scan on tasks" not in plan, plan


async def _insert_tasks(conn: asyncpg.Connection, schema: str, state: str, ids: range) -> None:
    """Rows straight into the tasks table (a plan test needs states in bulk, not a worker);
    a running task ``<state>-<n>`` holds the lease token ``token-<n>``."""
    running = state == "running"
    await conn.execute(
        f"""INSERT INTO "{schema}".tasks (id, queue, name, state, created_at, max_attempts,
            result_ttl, dead_ttl, data, lease_owner, lease_token, lease_deadline)
        SELECT $1 || '-' || g, 'q', 'n', $1, 0, 1, 60, 60, '\\x00',
            CASE WHEN $2 THEN 'w' END, CASE WHEN $2 THEN 'token-' || g END,
            CASE WHEN $2 THEN 1e12 END
        FROM generate_series($3::int, $4::int) g""",
        state,
        running,
        ids.start,
        ids.stop - 1,
    )


async def _entries_read(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    """Index entries each index of the tasks table returned, as counted by this backend
    since it last reported its statistics (never inside a transaction)."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_stat_get_xact_tuples_returned(c.oid) AS n FROM pg_index x"
        " JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = $1::regclass",
        f'"{schema}".tasks',
    )
    return {r["relname"]: r["n"] for r in rows if r["n"]}


async def test_complete_many_probes_the_primary_key_whatever_the_statistics(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_schema: str
) -> None:
    """A connection plans complete_many() once (generic plan) and keeps the plan until the
    next ANALYZE: made over a few hundred tasks, it must still read one primary-key entry
    per id, not every running task per id (the plan once read the running tasks from
    tasks_queue_state, materialized, and kept doing so as the table grew)."""
    await _small_analyzed_table(conn, pg_schema)
    complete = await conn.prepare(queue.sql(COMPLETE_MANY))

    async def finish(numbers: range, stale: int) -> tuple[list[str], dict[str, int]]:
        ids, tokens = _leases(numbers, stale)
        rows, read, _ = await _reads(
            conn,
            pg_schema,
            complete.fetch(
                *map(text_array, (ids, tokens, ["succeeded"] * len(ids), [None] * len(ids)))
            ),
        )
        return [r[0] for r in rows], read

    # A late attempt (another token) is refused; the other 99 complete, by key.
    done, read = await finish(range(1, 101), stale=7)
    assert sorted(done) == sorted(f"running-{n}" for n in range(1, 101) if n != 7)
    assert read == {"tasks_pkey": 100}, read
    # The same connection's plan after the table grew, statistics untouched.
    await _insert_tasks(conn, pg_schema, "running", range(101, 5101))
    done, read = await finish(range(5001, 5101), stale=0)
    assert len(done) == 100
    assert read == {"tasks_pkey": 100}, read


async def test_a_heartbeat_probes_the_primary_key_whatever_the_statistics(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_schema: str
) -> None:
    """A heartbeat's plan is made once per connection too: planned over a few hundred
    tasks it must still renew each lease through the primary key, not scan the table
    (a plan it would keep as the table grew, for every heartbeat of every worker)."""
    await _small_analyzed_table(conn, pg_schema)
    heartbeat = await conn.prepare(queue.sql(HEARTBEAT))

    async def renew(numbers: range, stale: int) -> tuple[list[str], dict[str, int], int]:
        rows, read, scanned = await _reads(
            conn, pg_schema, heartbeat.fetch(*_leases(numbers, stale), 30.0)
        )
        return [r[0] for r in rows], read, scanned

    # A lease held under another token is not renewed; the other 9 are, by key.
    done, read, scanned = await renew(range(1, 11), stale=3)
    assert sorted(done) == sorted(f"running-{n}" for n in range(1, 11) if n != 3)
    assert (read, scanned) == ({"tasks_pkey": 10}, 0), (read, scanned)
    # The same connection's plan after the table grew, statistics untouched.
    await _insert_tasks(conn, pg_schema, "running", range(101, 5101))
    done, read, scanned = await renew(range(5001, 5011), stale=0)
    assert len(done) == 10
    assert (read, scanned) == ({"tasks_pkey": 10}, 0), (read, scanned)


async def _table_rows_read(conn: asyncpg.Connection, schema: str) -> int:
    """Rows of the tasks table this backend read by sequential scans (counted as for
    :func:`_entries_read`)."""
    n = await conn.fetchval(
        "SELECT pg_stat_get_xact_tuples_returned($1::regclass)", f'"{schema}".tasks'
    )
    return int(n or 0)


async def _small_analyzed_table(conn: asyncpg.Connection, schema: str) -> None:
    """350 tasks, 100 of them running, with fresh statistics, and generic plans from now
    on: the table a worker's connection may make its plans over and then keep."""
    for state in ("succeeded", "failed", "pending", "dead", "cancelled"):
        await _insert_tasks(conn, schema, state, range(1, 51))
    await _insert_tasks(conn, schema, "running", range(1, 101))
    await conn.execute(f'ANALYZE "{schema}".tasks')
    await conn.execute("SET plan_cache_mode = force_generic_plan")


def _leases(numbers: range, stale: int) -> tuple[list[str], list[str]]:
    """The ids and lease tokens of running tasks ``numbers`` (see :func:`_insert_tasks`),
    task ``stale``'s token replaced by a late attempt's."""
    ids = [f"running-{n}" for n in numbers]
    return ids, [f"token-{n}" if n != stale else "late" for n in numbers]


async def _reads(
    conn: asyncpg.Connection, schema: str, statement: Awaitable[T]
) -> tuple[T, dict[str, int], int]:
    """What ``statement`` returned, the entries it read per index of the tasks table, and
    the table's rows it read by sequential scans."""
    async with conn.transaction():  # counts are reported only between transactions
        before = await _entries_read(conn, schema)
        scans = await _table_rows_read(conn, schema)
        result = await statement
        scans = await _table_rows_read(conn, schema) - scans
        after = await _entries_read(conn, schema)
    read = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    return result, read, scans


async def test_wait_for_work_wakes_on_enqueue_from_another_process_view(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str
) -> None:
    loop = asyncio.get_running_loop()
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as other:
        waiting = asyncio.ensure_future(queue.wait_for_work(["jobs"], LONG))
        await eventually(lambda: _true(queue.listening), "the queue never started listening")
        started = loop.time()
        await other.enqueue(make_task(queue="jobs"))
        await asyncio.wait_for(waiting, LONG / 2)
    assert loop.time() - started < LONG / 2


async def test_wait_for_work_ignores_other_queues_and_uncommitted_work(
    queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    waiting = asyncio.ensure_future(queue.wait_for_work(["jobs"], LONG))
    await eventually(lambda: _true(queue.listening), "the queue never started listening")
    await queue.enqueue(make_task(queue="other"))
    async with conn.transaction():
        await queue.enqueue(make_task(queue="jobs"), connection=conn)
        await asyncio.sleep(0.2)
        assert not waiting.done(), "woke for another queue or before the commit"
    await asyncio.wait_for(waiting, LONG / 2)


async def test_wait_for_work_wakes_at_the_next_eta(queue: PostgresTaskQueue) -> None:
    eta = await queue.now() + 0.3
    await queue.enqueue(make_task(eta=eta))
    await asyncio.wait_for(queue.wait_for_work(["default"], LONG), LONG / 2)
    assert await queue.now() >= eta - 0.05
    assert await queue.reserve(["default"], "w", 30)


async def test_result_wait_wakes_on_write_from_another_store(pg_url: str, pg_schema: str) -> None:
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        result = make_result()
        waiting = asyncio.ensure_future(waiter.wait(result.task_id, LONG))
        await eventually(
            lambda: _true(waiter.listening), "the result store never started listening"
        )
        await writer.set(result)
        assert await asyncio.wait_for(waiting, LONG / 2) == result


async def _true(value: bool) -> bool:
    return value


def _count_reads(store: PostgresResultStorage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task ids ``store`` reads from the results table, in order."""
    reads: list[str] = []
    read = store._get_many

    async def counted(task_ids: Sequence[str]) -> dict[str, TaskResult]:
        reads.extend(task_ids)
        return await read(task_ids)

    monkeypatch.setattr(store, "_get_many", counted)
    return reads


async def _payloads(conn: asyncpg.Connection, schema: str) -> list[str]:
    """The payloads of the results channel's notifications, as they arrive on ``conn``."""
    seen: list[str] = []
    await conn.add_listener(f"omniq_{schema}_results", lambda *args: seen.append(args[3]))
    return seen


async def _woken_by(
    waiter: PostgresResultStorage, reads: list[str], result: TaskResult, write: Any
) -> TaskResult | None:
    """Start ``waiter.wait``, let it make its first read (None: not written yet), run
    ``write()``, and return what the wait returned."""
    waiting = asyncio.ensure_future(waiter.wait(result.task_id, LONG))
    await eventually(lambda: _true(waiter.listening and reads == [result.task_id]), "no first read")
    await write()
    return await asyncio.wait_for(waiting, LONG / 2)


async def test_a_small_result_rides_in_its_notify_and_is_read_without_a_query(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        payloads = await _payloads(conn, pg_schema)
        reads = _count_reads(waiter, monkeypatch)
        result = make_result()
        assert await _woken_by(waiter, reads, result, lambda: writer.set(result)) == result
        assert reads == [result.task_id], "the result was read back, not taken from the NOTIFY"
        await eventually(lambda: _true(bool(payloads)), "no NOTIFY seen")
        task_id, carried = payloads[0].split(" ")
        assert task_id == result.task_id and len(carried) > len(task_id)


async def test_a_large_result_is_announced_by_its_id_and_read_back(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        payloads = await _payloads(conn, pg_schema)
        reads = _count_reads(waiter, monkeypatch)
        result = make_result(value=bytes(range(256)) * (CARRIED_MAX // 256 + 1))
        assert await _woken_by(waiter, reads, result, lambda: writer.set(result)) == result
        assert reads == [result.task_id] * 2
        await eventually(lambda: _true(bool(payloads)), "no NOTIFY seen")
        assert payloads == [result.task_id]


async def test_a_notify_with_the_bare_id_of_an_older_writer_still_wakes_the_wait(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter:
        reads = _count_reads(waiter, monkeypatch)
        result = make_result()

        async def write_as_before() -> None:
            async with conn.transaction():
                await conn.execute(
                    f'INSERT INTO "{pg_schema}".results (task_id, state, finished_at, data) '
                    "VALUES ($1, 'succeeded', $2, $3)",
                    result.task_id,
                    result.finished_at,
                    encoder.encode(result),
                )
                await conn.execute(
                    "SELECT pg_notify($1, $2)", f"omniq_{pg_schema}_results", result.task_id
                )

        assert await _woken_by(waiter, reads, result, write_as_before) == result
        assert reads == [result.task_id] * 2


async def _listening(store: PostgresResultStorage) -> None:
    """Bring ``store``'s listener up, as a producer's earlier ``get_result`` did."""
    await store.wait("warm-up", 0)
    assert store.listening


async def _written_without_notify(
    conn: asyncpg.Connection, schema: str, result: TaskResult
) -> None:
    await conn.execute(
        f'INSERT INTO "{schema}".results (task_id, state, finished_at, data) '
        "VALUES ($1, 'succeeded', $2, $3)",
        result.task_id,
        result.finished_at,
        encoder.encode(result),
    )


async def _heard(store: PostgresResultStorage, conn: asyncpg.Connection, schema: str) -> None:
    """Return once ``store``'s listener has heard a NOTIFY sent now: one committed before
    it (delivered in commit order) has been heard too."""
    seen = store._seen()
    assert seen is not None
    key = f"sentinel-{uuid.uuid4().hex}"
    await conn.execute("SELECT pg_notify($1, $2)", f"omniq_{schema}_results", key)
    await eventually(lambda: _true(store._heard_since([key], seen)), "the NOTIFY never came")


async def test_an_expected_result_is_waited_for_with_no_read(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task the app told the store of (``expect``, before its enqueue) while the
    listener was up: its wait skips the first read and takes the NOTIFY's result."""
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        await _listening(waiter)
        reads = _count_reads(waiter, monkeypatch)
        result = make_result()
        waiter.expect(result.task_id)
        waiting = asyncio.ensure_future(waiter.wait(result.task_id, LONG))
        await eventually(
            lambda: _true(result.task_id in waiter._listener._waiters),  # type: ignore[union-attr]
            "the wait never started watching",
        )
        assert reads == []
        await writer.set(result)
        assert await asyncio.wait_for(waiting, LONG / 2) == result
        assert reads == [], "an expected result was read, not taken from its NOTIFY"
        assert not waiter._expected, "the note outlived its wait"


async def test_an_expected_result_heard_before_its_wait_is_read(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        await _listening(waiter)
        reads = _count_reads(waiter, monkeypatch)
        result = make_result()
        waiter.expect(result.task_id)
        await writer.set(result)
        await _heard(waiter, conn, pg_schema)
        assert await asyncio.wait_for(waiter.wait(result.task_id, LONG), LONG / 2) == result
        assert reads == [result.task_id]


async def test_an_expected_wait_that_hears_nothing_reads_before_giving_up(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result written with no NOTIFY (an older writer, or one still in flight) is still
    found by the read that ends a wait, even one of timeout 0."""
    async with PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter:
        await _listening(waiter)
        reads = _count_reads(waiter, monkeypatch)
        for timeout in (0.0, 0.05):
            result = make_result()
            waiter.expect(result.task_id)
            await _written_without_notify(conn, pg_schema, result)
            assert await waiter.wait(result.task_id, timeout) == result
            assert reads[-1] == result.task_id
        absent = make_result()
        waiter.expect(absent.task_id)
        assert await waiter.wait(absent.task_id, 0) is None
        assert reads[-1] == absent.task_id


async def test_an_expected_wait_reads_after_the_listener_dropped(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop (or a new listening connection) between the note and the wait may have
    lost the NOTIFY: the wait reads first."""
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as writer,
    ):
        await _listening(waiter)
        reads = _count_reads(waiter, monkeypatch)
        result = make_result()
        waiter.expect(result.task_id)
        listening = waiter._listener._conn  # type: ignore[union-attr]
        assert listening is not None
        await conn.execute("SELECT pg_terminate_backend($1)", listening.get_server_pid())
        await eventually(lambda: _true(not waiter.listening), "the listener never dropped")
        await writer.set(result)  # its NOTIFY reaches no one
        assert await asyncio.wait_for(waiter.wait(result.task_id, LONG), LONG / 2) == result
        assert reads == [result.task_id]


def test_a_new_listening_connection_reads_as_heard_and_notes_are_bounded() -> None:
    listener = Listener(None, "c")  # type: ignore[arg-type]
    seen = listener.seen
    listener._forget()  # what _ensure does with each new connection
    assert listener.heard_since(["any"], seen)
    store = PostgresResultStorage.from_url("postgresql://127.0.0.1/x")
    store._listener = listener
    listener._conn = _Up()  # type: ignore[assignment]
    for i in range(EXPECTED_MAX + 5):
        store.expect(f"t{i}")
    assert 0 < len(store._expected) <= EXPECTED_MAX
    store._listener = None
    store._expected.clear()
    store.expect("t")
    assert not store._expected, "noted while not listening"


class _Up:
    def is_closed(self) -> bool:
        return False


async def test_a_fenced_late_result_never_reaches_a_waiting_producer(
    pg_url: str, pg_schema: str, queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    """A worker that lost its lease finishes late: its result is refused with its
    completion, so no NOTIFY carries it and the waiting producer (no first read) gets
    the result of the attempt that holds the lease."""
    async with (
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as waiter,
        PostgresResultStorage.from_url(pg_url, schema=pg_schema, max_size=2) as results,
    ):
        await _listening(waiter)
        task = make_task()
        waiter.expect(task.id)
        await queue.enqueue(task)
        waiting = asyncio.ensure_future(waiter.wait(task.id, LONG))
        [late] = await queue.reserve(["default"], "paused", 30)
        assert await queue.release(task.id, late.lease_token or "")  # its lease is lost
        [current] = await queue.reserve(["default"], "current", 30)
        late_result = make_result(task_id=task.id, value=b"late")
        accepted = await queue.finish_many(
            [(task.id, late.lease_token or "", TaskState.SUCCEEDED, None)],
            [late_result],
            [],
            results,
            None,
        )
        assert accepted == [False]
        await _heard(waiter, conn, pg_schema)
        assert not waiting.done(), f"the late result reached the producer: {waiting}"
        assert await results.get(task.id) is None
        good = make_result(task_id=task.id, value=b"current")
        accepted = await queue.finish_many(
            [(task.id, current.lease_token or "", TaskState.SUCCEEDED, None)],
            [good],
            [],
            results,
            None,
        )
        assert accepted == [True]
        assert await asyncio.wait_for(waiting, LONG / 2) == good


def _count_next_ready(queue: PostgresTaskQueue, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements ``queue.fetchval`` runs that ask ``next_ready()``."""
    asked: list[str] = []
    fetchval = queue.fetchval

    async def counted(template: str, *args: Any) -> Any:
        if template == NEXT_READY:
            asked.append(template)
        return await fetchval(template, *args)

    monkeypatch.setattr(queue, "fetchval", counted)
    return asked


async def test_a_delayed_task_is_delivered_when_short_waits_skip_next_ready(
    queue: PostgresTaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the worker does after a reserve that drained the queue: short waits, which
    skip ``next_ready()``, still deliver a delayed task once it falls due."""
    monkeypatch.setattr(listener_module, "LINGER", LONG)  # the interest held throughout
    asked = _count_next_ready(queue, monkeypatch)
    eta = await queue.now() + 0.3
    task = make_task(eta=eta)
    await queue.enqueue(task)
    got: list[Task] = []

    async def reserve() -> bool:
        got.extend(await queue.reserve(["default"], "w", 30, limit=5))
        if not got:
            await queue.wait_for_work(["default"], DRAINED_WAIT)
        return bool(got)

    await eventually(reserve, "the delayed task was never delivered", interval=0)
    assert [t.id for t in got] == [task.id]
    assert await queue.now() >= eta
    # only the first wait, made before the listener was up, asked next_ready()
    assert len(asked) == 1


async def test_a_wake_up_since_a_draining_reserve_is_not_skipped(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NOTIFY for the queue that arrives between a reserve that drained it and the next
    wait makes that wait return at once (no ``next_ready()``: the reserve that follows
    is the check), and that reserve finds the task."""
    monkeypatch.setattr(listener_module, "LINGER", LONG)  # the interest held throughout
    await queue.wait_for_work(["default"], 0)  # the listener is up from here on
    assert await queue.reserve(["default"], "w", 30, limit=5) == []
    asked = _count_next_ready(queue, monkeypatch)
    seen = queue._seen()
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as other:
        await other.enqueue(make_task())
    await eventually(lambda: _true(queue._seen() != seen), "the NOTIFY never arrived")
    started = time.monotonic()
    await queue.wait_for_work(["default"], DRAINED_WAIT)
    assert time.monotonic() - started < DRAINED_WAIT
    assert asked == []
    assert len(await queue.reserve(["default"], "w", 30, limit=5)) == 1


async def _interested(conn: asyncpg.Connection, schema: str, queue: str) -> None:
    """Hold ``queue``'s interest lock on ``conn`` as a waiting worker's listener does."""
    await conn.execute(
        "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))", f"omniq_{schema}_tasks:{queue}"
    )


async def test_a_wake_up_for_another_queue_keeps_the_short_wait(
    queue: PostgresTaskQueue,
    pg_url: str,
    pg_schema: str,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Work announced for another queue since a draining reserve neither ends the short
    wait nor costs a ``next_ready()``: a worker of a quiet queue on a busy schema does
    not turn other queues' notifications into reserves."""
    monkeypatch.setattr(listener_module, "LINGER", LONG)  # the interest held throughout
    await queue.wait_for_work(["default"], 0)
    assert await queue.reserve(["default"], "w", 30, limit=5) == []
    asked = _count_next_ready(queue, monkeypatch)
    seen = queue._seen()
    await _interested(conn, pg_schema, "elsewhere")  # a worker waits there: it is notified
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as other:
        await other.enqueue(make_task(queue="elsewhere"))
    await eventually(lambda: _true(queue._seen() != seen), "the NOTIFY never arrived")
    started = time.monotonic()
    await queue.wait_for_work(["default"], DRAINED_WAIT)
    assert time.monotonic() - started >= DRAINED_WAIT * 0.9
    assert asked == []


async def test_an_enqueue_notifies_only_while_a_worker_may_be_waiting(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """No listener holds the queue's interest: the enqueue sends no NOTIFY (a marker sent
    after it arrives alone, NOTIFYs arriving in commit order); while a worker waits on
    the queue, an enqueue notifies and wakes it."""
    heard: list[str] = []
    channel = f"omniq_{pg_schema}_tasks"
    await conn.add_listener(channel, lambda *args: heard.append(args[3]))
    async with (
        PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as producer,
        PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as worker,
    ):
        await producer.enqueue(make_task(queue="jobs"))
        await producer.execute("SELECT pg_notify($1, 'marker')", channel)
        await eventually(lambda: _true("marker" in heard), "the marker never arrived")
        assert heard == ["marker"]
        assert len(await worker.reserve(["jobs"], "w", 30, limit=5)) == 1
        waiting = asyncio.ensure_future(worker.wait_for_work(["jobs"], LONG))
        await eventually(lambda: _true(_holds(worker, "jobs")), "the wait never began")
        assert not waiting.done()
        await producer.enqueue(make_task(queue="jobs"))
        await asyncio.wait_for(waiting, LONG / 2)
        await eventually(lambda: _true(heard == ["marker", "jobs"]), "no NOTIFY for the wait")


async def test_a_bulk_by_copy_notifies_only_while_a_worker_may_be_waiting(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """The ``COPY`` bulk's NOTIFY keeps the one-task statement's rule: none while no
    listener holds the queue's interest (a marker sent after it arrives alone)."""
    heard: list[str] = []
    channel = f"omniq_{pg_schema}_tasks"
    await conn.add_listener(channel, lambda *args: heard.append(args[3]))
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as producer:
        await producer.enqueue_batches(iter([(copied_bulk("jobs"), [])]), None)
        await producer.execute("SELECT pg_notify($1, 'marker')", channel)
        await eventually(lambda: _true("marker" in heard), "the marker never arrived")
        assert heard == ["marker"]


def _holds(store: PostgresTaskQueue, key: str) -> bool:
    listener = store._listener
    return listener is not None and listener._held.get(key, False) is None


async def test_a_worker_waiting_on_an_open_enqueue_polls_until_it_commits(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """An enqueue in a caller's open transaction holds its queue's interest lock to its
    commit: a worker that cannot take the lock does not sleep its whole timeout (the
    enqueue will not NOTIFY it) but polls, and gets the task once it is committed."""
    async with conn.transaction():
        await queue.enqueue(make_task(queue="jobs"), connection=conn)
        await asyncio.wait_for(queue.wait_for_work(["jobs"], 600), LONG)
        assert not _holds(queue, "jobs")
        assert await queue.reserve(["jobs"], "w", 30, limit=1) == []
    await asyncio.wait_for(queue.wait_for_work(["jobs"], 600), LONG)
    assert len(await queue.reserve(["jobs"], "w", 30, limit=1)) == 1


async def test_a_lapsed_interest_is_taken_again_before_the_check(
    queue: PostgresTaskQueue, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once no waiter has watched a queue for LINGER, its lock is let go and enqueues stop
    notifying; the next wait takes the lock again before it looks for ready work, so a
    task enqueued in between wakes it at once, and a drained reserve's short wait does
    not skip that look."""
    monkeypatch.setattr(listener_module, "LINGER", 0.0)
    await queue.wait_for_work(["jobs"], 0)
    assert await queue.reserve(["jobs"], "w", 30, limit=5) == []
    held = queue._listener._held  # type: ignore[union-attr]
    await eventually(lambda: _true("jobs" not in held), "the interest was never let go")
    async with PostgresTaskQueue.from_url(pg_url, schema=pg_schema, max_size=1) as producer:
        await producer.enqueue(make_task(queue="jobs"))
    await asyncio.wait_for(queue.wait_for_work(["jobs"], LONG), LONG / 2)
    assert len(await queue.reserve(["jobs"], "w", 30, limit=1)) == 1


def test_the_listener_remembers_which_keys_were_heard_and_errs_towards_yes() -> None:
    """``heard_since`` is exact for recent keys; once it has forgotten (too many keys, a
    drop) it answers True, which costs a check, never a missed wake-up."""
    listener = Listener(None, "c")  # type: ignore[arg-type]
    seen = listener.seen
    listener._notified(None, 0, "c", "other")
    assert not listener.heard_since(["default"], seen)
    listener._notified(None, 0, "c", "default")
    assert listener.heard_since(["default"], seen)
    assert not listener.heard_since(["default"], listener.seen)
    seen = listener.seen
    for i in range(HEARD_MAX):
        listener._notified(None, 0, "c", f"q{i} carried")
    assert listener.heard_since(["default"], seen)
    seen = listener.seen
    listener._lost(None)
    assert listener.heard_since(["default"], seen)


async def test_a_reserve_of_its_own_commits_without_waiting_for_the_flush(
    queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    """The worker's reserve commits asynchronously (a lost lease is redelivered), for its
    own transaction only: a reserve in a caller's transaction leaves its commit alone."""
    statements: list[str] = []
    fetch = queue.fetch

    async def seen(template: str, *args: Any) -> Any:
        statements.append(template)
        return await fetch(template, *args)

    queue.fetch = seen  # type: ignore[method-assign]
    await queue.enqueue(make_task())
    [leased] = await queue.reserve(["default"], "w", 30)
    assert [s for s in statements if ".reserve(" in s] == [RESERVE_ALONE]
    await queue.enqueue(make_task())
    async with conn.transaction():
        view = queue.using(conn)
        view.fetch = seen  # type: ignore[method-assign]
        assert len(await view.reserve(["default"], "w", 30)) == 1
        assert [s for s in statements if ".reserve(" in s] == [RESERVE_ALONE, RESERVE]
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        await conn.fetch(queue.sql(RESERVE_ALONE), ["default"], 1, "w", 30.0)
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    assert await conn.fetchval("SHOW synchronous_commit") == "on"
    assert leased.lease_token is not None


# -- SQL over events -----------------------------------------------------------------


def documented_queries() -> list[str]:
    queries = re.findall(r"```sql\n(.*?)```", DOCS.read_text("utf-8"), flags=re.S)
    assert len(queries) >= 3, f"expected the three example queries in {DOCS}"
    return queries


async def test_documented_event_queries_run(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    async with PostgresEventStorage.from_url(pg_url, schema=pg_schema, max_size=2) as events:
        now = await events.now()
        task_id = "18f3a9c2b1d4e5f6-4b1c2d3e4f5a6b7c"  # the id the docs use

        def event(type_: EventType, at: float, **detail: Any) -> Any:
            return make_event(
                task_id=task_id,
                type=type_,
                timestamp=at,
                worker_id="w1",
                detail={"name": "app.tasks:send", **detail},
            )

        await events.append_many(
            [
                event(EventType.ENQUEUED, now - 60),
                event(EventType.STARTED, now - 50, attempt=1),
                event(EventType.FAILED, now - 49, attempt=1, duration=1.0, error="ValueError: x"),
                event(EventType.STARTED, now - 30, attempt=2),
                event(EventType.SUCCEEDED, now - 28, duration=2.0),
            ]
        )
    failures, p95, timeline = [
        await conn.fetch(q.replace("omniq.", f'"{pg_schema}".')) for q in documented_queries()[:3]
    ]
    assert [tuple(r) for r in failures] == [("app.tasks:send", 1)]
    assert p95[0]["task_name"] == "app.tasks:send" and p95[0]["runs"] == 2
    assert p95[0]["p95_seconds"] == pytest.approx(1.95)
    assert [r["type"] for r in timeline] == [
        "enqueued",
        "started",
        "failed",
        "started",
        "succeeded",
    ]
    # Each query bounds its read of events by an index condition (a time range or a
    # task), not a filter over the whole history.
    # (Sequential scans priced out: a five-row table would rightly be read whole.)
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for query in documented_queries()[:3]:
            plan = "\n".join(
                r[0]
                for r in await conn.fetch("EXPLAIN " + query.replace("omniq.", f'"{pg_schema}".'))
            )
            assert re.search(r"Index Cond: \((ts|task_id) ", plan), plan


# -- hostile input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema", ['x"; DROP SCHEMA public; --', "pg_catalog", "a b", "", "é", "s" * 41, 7]
)
def test_hostile_schema_names_are_refused(pg_url: str, schema: Any) -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresTaskQueue.from_url(pg_url, schema=schema)


async def test_hostile_queue_names_and_ids_are_plain_data(
    queue: PostgresTaskQueue, conn: asyncpg.Connection, pg_schema: str
) -> None:
    names = [
        "'; DROP TABLE tasks; --",
        'q"uote',
        "$1",
        "%s",
        "a\\b",
        "ü\u202e",
        "*",
        "omniq_x_tasks",
    ]
    for name in names:
        await queue.enqueue(make_task(id=f"{name}-id", queue=name))
    assert set(await queue.stats()) == set(names)
    for name in names:
        [task] = await queue.reserve([name], "w", 30)
        assert (task.id, task.queue) == (f"{name}-id", name)
        assert await queue.complete(task.id, task.lease_token, TaskState.SUCCEEDED)
    assert await queue.purge(queue=names[0]) == 1
    assert await count_tasks(conn, pg_schema) == len(names) - 1


async def test_omniq_sessions_plan_generically_a_users_connection_keeps_its_settings(
    queue: PostgresTaskQueue, conn: asyncpg.Connection
) -> None:
    assert await queue.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    assert await queue.using(conn).fetchval("SHOW plan_cache_mode") == "auto"


# -- faults --------------------------------------------------------------------------


async def test_a_server_older_than_13_is_refused_by_name(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL 12 lacks the built-in gen_random_uuid() that reserve uses, and 11 the
    plan_cache_mode each session sets: say so instead of "cannot connect"."""
    old = ServerVersion(12, 17, 0, "final", 0)
    monkeypatch.setattr(asyncpg.Connection, "get_server_version", lambda self: old)
    store = PostgresTaskQueue.from_url(pg_url, schema=pg_schema)
    with pytest.raises(ConfigError, match=r"version 12\.17; OmniQ needs 13 or newer") as info:
        await store.open()
    assert not isinstance(info.value, PostgresUnavailableError)
    assert "127.0.0.1" in str(info.value)


async def test_pool_recovers_from_terminated_connections(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    app_name = f"omniq-test-{uuid.uuid4().hex[:8]}"
    async with PostgresTaskQueue.from_url(
        pg_url, schema=pg_schema, min_size=3, max_size=3, application_name=app_name
    ) as store:
        await store.enqueue_many([make_task(id=f"t{i}") for i in range(10)])
        await store.wait_for_work(["default"], 0)  # opens the LISTEN connection too
        assert store.listening
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            app_name,
        )
        assert killed >= 1
        leased = await store.reserve(["default"], "w", 30, limit=10)
        assert sorted(t.id for t in leased) == sorted(f"t{i}" for i in range(10))
        done = await store.complete_many(
            [(t.id, t.lease_token, TaskState.SUCCEEDED, None) for t in leased]
        )
        assert all(done)

        async def listening_again() -> bool:
            await store.wait_for_work(["default"], 0.01)
            return store.listening

        await eventually(listening_again, "the LISTEN connection was not re-opened")
    assert await count_tasks(conn, pg_schema) == 10


async def test_held_connection_closed_between_statements_is_replaced(
    pg_url: str, pg_schema: str, conn: asyncpg.Connection
) -> None:
    """asyncpg itself releases a pool connection the server closed (its proxy then
    refuses every call); the next statement must take another, not fail."""
    app_name = f"omniq-test-{uuid.uuid4().hex[:8]}"
    async with PostgresTaskQueue.from_url(
        pg_url, schema=pg_schema, min_size=1, max_size=3, application_name=app_name
    ) as store:
        await store.enqueue(make_task(id="a"))
        held = store._hot
        assert held is not None  # statements one after another run on it
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app_name,
        )
        await eventually(lambda: _true(not hot_alive(held)), "asyncpg never saw the close")
        await store.enqueue(make_task(id="b"))
        await store.enqueue(make_task(id="c"))
    assert await count_tasks(conn, pg_schema) == 3


async def test_server_down_names_host_and_database_not_password(pg_schema: str) -> None:
    store = PostgresTaskQueue.from_url(
        "postgresql://omniq:s3cr3t-pw@127.0.0.1:1/orders", schema=pg_schema, connect_timeout=2
    )
    with pytest.raises(PostgresUnavailableError) as info:
        await store.open()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "'orders'" in message and "s3cr3t-pw" not in message
    assert "s3cr3t-pw" not in repr(store)


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_bad_port_names_the_store_and_the_masked_url(port: str) -> None:
    from omniq.registry import registry

    with pytest.raises(ConfigError) as info:
        registry.resolve("event_storage", f"postgresql://u:s3cr3t-pw@127.0.0.1:{port}/test")
    text = str(info.value)
    assert "postgres event storage" in text and f"port {port!r}" in text, text
    assert f"'postgresql://u:***@127.0.0.1:{port}/test'" in text and "s3cr3t-pw" not in text
    assert "1 to 65535" in text


def test_options_in_the_url_and_unknown_ones(pg_url: str) -> None:
    settings = PostgresSettings.from_url(f"{pg_url}?schema=jobs&max_size=3&sslmode=disable")
    assert (settings.schema, settings.max_size) == ("jobs", 3)
    assert settings.dsn.endswith("?sslmode=disable")
    with pytest.raises(ConfigError, match="min_size=5 is larger than max_size=2"):
        PostgresSettings.from_url(pg_url, min_size=5, max_size=2)
    with pytest.raises(ConfigError, match="'pool'"):
        PostgresSettings.from_url(pg_url, pool=3)


async def _advisory_locks(conn: asyncpg.Connection, pid: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND granted",
            pid,
        )
    )


async def test_an_interest_is_released_when_a_wait_that_never_held_it_leaves(
    queue: PostgresTaskQueue,
    pg_schema: str,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queue's interest whose release falls due while a wait of several queues is
    registered on it, but gave up before reaching it (an earlier queue's lock not had
    within ``lock_timeout``), is still released once that wait leaves: else the session
    holds it for good and every enqueue of that queue NOTIFYs."""
    monkeypatch.setattr(listener_module, "LINGER", 0.05)  # falls due during the wait below
    await conn.execute(  # "a" taken as an open enqueue would: the wait cannot hold it
        "SELECT pg_advisory_lock(hashtextextended($1, 0))", f"omniq_{pg_schema}_tasks:a"
    )
    await queue.wait_for_work(["b"], 0)  # "b" held, its release due in LINGER
    listener = queue._listener
    assert listener is not None and listener._conn is not None
    pid = listener._conn.get_server_pid()
    await asyncio.wait_for(queue.wait_for_work(["a", "b"], LONG), LONG / 2)  # polls
    await eventually(
        lambda: _true("b" not in listener._held), "the interest in b was never released"
    )
    await eventually(
        lambda: _true_async(_advisory_locks(conn, pid), 0), "the session still holds a lock"
    )


async def _true_async(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_wait_cancelled_while_its_interest_lock_is_granted_leaves_no_lock(
    queue: PostgresTaskQueue,
    pg_schema: str,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wait cancelled while its listener's lock request is on the server (granted as
    the cancel goes out) must not leave that lock held unknown to the listener: it would
    never be released, and every enqueue of the queue would NOTIFY for good."""
    key = f"omniq_{pg_schema}_tasks:jobs"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
    monkeypatch.setattr(listener_module, "INTEREST_TIMEOUT", "60s")  # it waits for the lock
    monkeypatch.setattr(listener_module, "HOLD_TIMEOUT", LONG)
    await queue.wait_for_work(["other"], 0)  # the listener is up
    listener = queue._listener
    assert listener is not None and listener._conn is not None
    pid = listener._conn.get_server_pid()
    waiting = asyncio.ensure_future(queue.wait_for_work(["jobs"], LONG))
    await eventually(
        lambda: _true_async(
            conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
                " AND NOT granted",
                pid,
            ),
            1,
        ),
        "the listener never asked for the lock",
    )
    waiting.cancel()  # its cancel request goes out on a new connection, after this:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def known() -> bool:  # no lock of the session that the listener does not know of
        return "jobs" in listener._held or not await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            " AND granted AND mode = 'ShareLock'",
            pid,
        )

    await eventually(known, "the listener's session holds a lock it does not know of")


@pytest.fixture
def forwarder(pg_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A TCP forwarder process to the server: a URL through it, and the process."""
    parts = urlsplit(pg_url)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "omniq.testing.tcp_proxy", "127.0.0.1", str(parts.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        port = int(proxy.stdout.readline())
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        yield urlunsplit(parts._replace(netloc=netloc)), proxy
    finally:
        proxy.kill()
        proxy.wait()


async def test_a_wait_is_not_held_by_a_listening_connection_that_stopped_answering(
    queue: PostgresTaskQueue, forwarder: tuple[str, subprocess.Popen[str]]
) -> None:
    """The listening connection goes silent (its forwarder stopped, as a NAT that forgot
    an idle connection leaves it: no reset, no answer): a wait whose queue's interest
    must be asked for over it still ends about its timeout, not after TCP gives up."""
    proxied, proxy = forwarder
    listener = queue._listener
    assert listener is not None
    listener._connect = lambda: asyncpg.connect(proxied)  # the listener's alone
    await queue.wait_for_work(["a"], 0)  # listening through the forwarder
    assert listener.connected
    os.kill(proxy.pid, signal.SIGSTOP)
    try:
        await asyncio.wait_for(queue.wait_for_work(["b"], 0.1), LONG / 2)
    finally:
        os.kill(proxy.pid, signal.SIGCONT)


async def test_a_server_that_stops_answering_new_connections_is_an_outage(
    pg_url: str, pg_schema: str, forwarder: tuple[str, subprocess.Popen[str]]
) -> None:
    """The server goes silent (a stalled host, a partition: a connection is accepted and
    never answered) after the store's connections were lost: a new connection times out
    with a bare ``TimeoutError``, which reached the caller as it was (a worker's reserve,
    the CLI) instead of being retried until ``outage_timeout`` and then raised as the
    outage it is, naming the server."""
    import socket

    proxied, proxy = forwarder
    port = urlsplit(proxied).port
    store = PostgresTaskQueue.from_url(
        proxied, schema=pg_schema, max_size=2, connect_timeout=0.5, outage_timeout=1
    )
    async with store:
        await store.enqueue(make_task())
        proxy.kill()  # its connections reset; then a listener that accepts, silent
        proxy.wait()
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", port))
        silent.listen(16)
        try:
            with pytest.raises(PostgresUnavailableError, match="cannot connect to PostgreSQL"):
                await asyncio.wait_for(store.stats(), LONG)
        finally:
            silent.close()
