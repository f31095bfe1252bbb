"""What only the SQLite backend has: URL forms, the file's schema and pragmas, plain-SQL
access to events, corrupt rows, and several OS processes sharing one file."""

from __future__ import annotations

import multiprocessing
import queue
import runpy
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from omniq.errors import ConfigError
from omniq.models import EventType, Task, TaskState
from omniq.registry import registry
from omniq.testing import make_event, make_task
from omniq_backend_sqlite import (
    SCHEMA_VERSION,
    SchemaVersionError,
    SqliteEventStorage,
    SqliteTaskQueue,
)
from omniq_backend_sqlite._db import parse_settings

pytestmark = pytest.mark.anyio

RESERVER = str(Path(__file__).with_name("_reserver.py"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def queue_at(url: str) -> SqliteTaskQueue:
    store = registry.resolve("task_queue", url)
    assert isinstance(store, SqliteTaskQueue)
    return store


def events_at(url: str) -> SqliteEventStorage:
    store = registry.resolve("event_storage", url)
    assert isinstance(store, SqliteEventStorage)
    return store


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/omniq.db"


def test_url_forms() -> None:
    assert parse_settings("sqlite:///data/o.db", {}).path == "data/o.db"
    assert parse_settings("sqlite:////abs/o.db", {}).path == "/abs/o.db"
    assert parse_settings("sqlite:///:memory:", {}).memory
    assert parse_settings("sqlite://", {}).path == "omniq.db"  # what a bare `sqlite` resolves to
    settings = parse_settings("sqlite:///o.db?busy_timeout=2&synchronous=full", {"busy_timeout": 3})
    assert (settings.busy_timeout, settings.synchronous) == (3.0, "FULL")


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("sqlite://o.db", "three slashes"),
        ("sqlite:///o.db?busy_timeout=0", "busy_timeout"),
        ("sqlite:///o.db?synchronous=OFF", "synchronous"),
        ("sqlite:///o.db?nope=1", "'nope'"),
    ],
)
def test_bad_urls_are_refused_by_name(bad: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        registry.resolve("task_queue", bad)


async def test_three_stores_share_one_file_in_wal_mode(url: str, tmp_path: Path) -> None:
    q, events = queue_at(url), events_at(url)
    stores = [q, registry.resolve("result_storage", url), events]
    for store in stores:
        await store.open()
    try:
        await q.enqueue(make_task(id="t1"))
        await events.append(make_event(task_id="t1"))
        with sqlite3.connect(tmp_path / "omniq.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            version = db.execute(
                "SELECT value FROM omniq_meta WHERE key = 'schema_version'"
            ).fetchone()[0]
    finally:
        for store in stores:
            await store.close()
    assert {
        "omniq_meta",
        "omniq_tasks",
        "omniq_task_deps",
        "omniq_schedules",
        "omniq_results",
        "omniq_events",
    } <= tables
    assert int(version) == SCHEMA_VERSION


async def test_a_version_1_file_gains_the_headers_column(url: str, tmp_path: Path) -> None:
    """A file written before task headers existed keeps its tasks and takes headers."""
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="old"))
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        db.execute("ALTER TABLE omniq_tasks DROP COLUMN headers")
        db.execute("UPDATE omniq_meta SET value = '1' WHERE key = 'schema_version'")
    async with queue_at(url) as q:
        old = await q.get("old")
        assert old is not None and old.headers == {}
        await q.enqueue(make_task(id="new", headers={"a": "b"}))
        new = await q.get("new")
        assert new is not None and new.headers == {"a": "b"}
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        version = db.execute(
            "SELECT value FROM omniq_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
    assert int(version) == SCHEMA_VERSION


async def test_a_version_2_file_gains_the_fan_in_columns(url: str, tmp_path: Path) -> None:
    """A file written before fan-in keeps its tasks (they cancel on a parent's failure
    and get no results) and stores the new fields from then on."""
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="old"))
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        db.execute("ALTER TABLE omniq_tasks DROP COLUMN on_parent_failure")
        db.execute("ALTER TABLE omniq_tasks DROP COLUMN pass_results")
        db.execute("UPDATE omniq_meta SET value = '2' WHERE key = 'schema_version'")
    async with queue_at(url) as q:
        old = await q.get("old")
        assert old is not None and (old.on_parent_failure, old.pass_results) == ("cancel", False)
        await q.enqueue(
            make_task(id="new", depends_on=("old",), on_parent_failure="run", pass_results=True)
        )
        new = await q.get("new")
        assert new is not None and (new.on_parent_failure, new.pass_results) == ("run", True)
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        version = db.execute(
            "SELECT value FROM omniq_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
    assert int(version) == SCHEMA_VERSION == 3


def _index_sql(path: Path, name: str) -> str:
    with sqlite3.connect(path) as db:
        return str(
            db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        )


async def test_old_task_indexes_are_rebuilt(url: str, tmp_path: Path) -> None:
    """A file whose expiry index lists every unstarted task, and whose ready index has
    an ``IN`` condition, gets the present ones (narrow, OR'ed equalities); expiry and
    reserve still find the tasks written before."""
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="keeps"))
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        db.execute("DROP INDEX omniq_tasks_expiry")
        db.execute(
            "CREATE INDEX omniq_tasks_expiry ON omniq_tasks (expires_at) WHERE state IN "
            "('pending', 'scheduled', 'retrying', 'waiting')"
        )
        db.execute("DROP INDEX omniq_tasks_ready")
        db.execute(
            "CREATE INDEX omniq_tasks_ready ON omniq_tasks (queue, priority DESC) "
            "WHERE state IN ('pending', 'scheduled', 'retrying')"
        )
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="expires", expires_at=time.time() - 1))
        assert [t.id for t in await q.cleanup()] == ["expires"]
        assert [t.id for t in await q.reserve(["default"], "w", lease=30)] == ["keeps"]
    expiry = _index_sql(tmp_path / "omniq.db", "omniq_tasks_expiry")
    assert "expires_at IS NOT NULL" in expiry and " IN " not in expiry
    assert " IN " not in _index_sql(tmp_path / "omniq.db", "omniq_tasks_ready")


async def test_an_old_purge_at_column_is_rewritten(url: str, tmp_path: Path) -> None:
    """A file whose ``purge_at`` is computed with ``IN`` a list gets the present
    expression; finished tasks written before are still purged, unfinished ones kept."""
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="done", result_ttl=1.0))
        await q.enqueue(make_task(id="waits"))
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        db.execute("DROP INDEX omniq_tasks_purge")
        db.execute("ALTER TABLE omniq_tasks DROP COLUMN purge_at")
        db.execute(
            "ALTER TABLE omniq_tasks ADD COLUMN purge_at REAL GENERATED ALWAYS AS ("
            "CASE WHEN state = 'dead' THEN finished_at + dead_ttl WHEN state IN "
            "('succeeded', 'failed', 'cancelled', 'expired', 'dead') "
            "THEN finished_at + result_ttl END) VIRTUAL"
        )
        db.execute("CREATE INDEX omniq_tasks_purge ON omniq_tasks (purge_at)")
        db.execute(
            "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ? WHERE id = 'done'",
            (time.time() - 10,),
        )
    async with queue_at(url) as q:
        await q.cleanup()
        assert await q.get("done") is None
        assert await q.get("waits") is not None
    table = _index_sql(tmp_path / "omniq.db", "omniq_tasks")
    assert "WHEN state IN" not in table and "state = 'expired'" in table
    assert "purge_at IS NOT NULL" in _index_sql(tmp_path / "omniq.db", "omniq_tasks_purge")


async def test_the_event_type_index_leaves_out_common_types(url: str, tmp_path: Path) -> None:
    """A new file's type index holds only the rarer types (each enqueue writes one
    entry fewer); an old file's full index is rebuilt narrow on open, and queries by
    type, rare or common, still find every event, old ones included."""
    path = tmp_path / "omniq.db"
    async with events_at(url) as events:
        await events.append(make_event(id="old-failed", type=EventType.FAILED))
        await events.append(make_event(id="old-enqueued"))
    assert "type <> 'enqueued' AND type <> 'started' AND type <> 'succeeded'" in _index_sql(
        path, "omniq_events_type"
    )
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX omniq_events_type")
        db.execute("CREATE INDEX omniq_events_type ON omniq_events (type, timestamp)")
    async with events_at(url) as events:
        await events.append(make_event(id="new-failed", type=EventType.FAILED))
        assert [e.id for e in await events.query(types=["failed"])] == [
            "old-failed",
            "new-failed",
        ]
        assert [e.id for e in await events.query(types=["enqueued"])] == ["old-enqueued"]
    assert "<> 'succeeded'" in _index_sql(path, "omniq_events_type")


async def test_events_have_no_time_index_and_queries_by_time_read_the_queue_index(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event writes one b-tree fewer: an old file's index by time alone is dropped
    on open; queries by time (one arm per queue, or the whole table past the most arms)
    and cleanup still see every queue's events, in time order."""
    path = tmp_path / "omniq.db"
    stamps = [(f"e{i}", f"q{i % 3}", 100.0 + (i * 7) % 10) for i in range(10)]
    async with events_at(url) as events:
        await events.append_many([make_event(id=i, queue=q, timestamp=t) for i, q, t in stamps])
    with sqlite3.connect(path) as db:
        db.execute("CREATE INDEX omniq_events_time ON omniq_events (timestamp)")
    newest = [i for i, _, _ in sorted(stamps, key=lambda s: s[2], reverse=True)]
    async with events_at(url) as events:
        with sqlite3.connect(path) as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            plan = " ".join(
                r[3]
                for r in db.execute(
                    "EXPLAIN QUERY PLAN SELECT * FROM omniq_events WHERE queue = 'q1'"
                    " AND timestamp >= 1 ORDER BY timestamp DESC, seq DESC"
                )
            )
        assert "omniq_events_time" not in names
        assert "omniq_events_queue" in plan
        assert [e.id for e in await events.query(order="desc", limit=4)] == newest[:4]
        for limit in (None, 10):
            got = await events.query(since=102, until=105, limit=limit)
            assert [e.id for e in got] == newest[7:4:-1]
        monkeypatch.setattr("omniq_backend_sqlite.events._MAX_ARMS", 2)
        assert [e.id for e in await events.query(order="desc", limit=4)] == newest[:4]
        assert await events.cleanup(older_than=105) == 5
        assert sorted(e.id for e in await events.query()) == sorted(
            i for i, _, t in stamps if t >= 105
        )


async def test_a_task_inserted_without_its_null_columns_round_trips(url: str) -> None:
    """A one-task enqueue names only the columns that are not NULL: the left-out ones
    read back as None, and a task with every optional field set keeps them all."""
    now = time.time()
    bare = make_task(id="bare")
    full = make_task(
        id="full",
        queue="q",
        priority=7,
        eta=now + 3600,
        expires_at=now + 7200,
        timeout=12.5,
        max_retries=5,
        retry_backoff=2.0,
        retry_backoff_max=60.0,
        max_deliveries=9,
        schedule_id="nightly",
        result_ttl=11.0,
        dead_ttl=22.0,
        headers={"trace": "abc"},
        on_parent_failure="run",
        pass_results=True,
    )
    async with queue_at(url) as q:
        for given in (bare, full, bare):  # the last one: an existing id, read back
            stored = await q.enqueue(given)
            assert await q.get(given.id) == stored
            assert stored == msgspec.structs.replace(
                given, state=stored.state, created_at=stored.created_at
            )
        states = {t.id: t.state for t in await q.list()}
    assert states == {"bare": TaskState.PENDING, "full": TaskState.SCHEDULED}


async def test_an_enqueue_waits_for_another_writer(url: str, tmp_path: Path) -> None:
    """The loop's own connection never waits for the write lock: while another
    connection holds it, an enqueue goes to the connection's thread and waits there
    (busy_timeout), then commits once the lock is free."""
    async with queue_at(url) as q:
        await q.enqueue(make_task(id="first"))
        other = sqlite3.connect(tmp_path / "omniq.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def enqueue() -> None:
                    await q.enqueue(make_task(id="second"))
                    done.set()

                tg.start_soon(enqueue)
                await anyio.sleep(0.05)
                assert not done.is_set()  # the lock is held: it cannot have committed
                other.execute("ROLLBACK")
                with anyio.fail_after(10):
                    await done.wait()
        finally:
            other.close()
        assert await q.get("second") is not None


async def test_a_waiting_worker_sees_a_task_from_another_process_connection(url: str) -> None:
    """wait_for_work returns once another connection commits a ready task (woken by
    the WAL write, or by its periodic check where there is no watch)."""
    async with queue_at(url) as q, queue_at(url) as producer:
        async with anyio.create_task_group() as tg:
            woke = anyio.Event()

            async def wait() -> None:
                await q.wait_for_work(["default"], 30)
                woke.set()

            tg.start_soon(wait)
            await anyio.sleep(0.01)
            await producer.enqueue(make_task(id="new"))
            with anyio.fail_after(10):
                await woke.wait()
        assert [t.id for t in await q.reserve(["default"], "w", 30)] == ["new"]


async def test_a_wal_watch_wakes_every_waiter_and_closes_safely(url: str, tmp_path: Path) -> None:
    """One commit signal wakes every coroutine waiting on the watch (results gathered
    by one app); closing the watch ends the waits in progress without a signal."""
    from omniq_backend_sqlite._wake import signal_commit, watch_wal

    wal = str(tmp_path / "omniq.db-wal")
    async with queue_at(url):  # the file and its -wal exist while a store is open
        watch = watch_wal(str(tmp_path / "omniq.db"))
        if watch is None:
            pytest.skip("no inotify on this system")
        with anyio.fail_after(10):
            while await watch.wait(0.1):  # (opening a connection as root signals too)
                pass
        for then in ("signal", "close"):
            outcome: list[bool] = []

            async def wait(into: list[bool] = outcome) -> None:
                into.append(await watch.wait(30))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    tg.start_soon(wait)
                    await anyio.sleep(0.01)
                    if then == "signal":
                        signal_commit(wal)
                    else:
                        watch.close()
            assert outcome == ([True, True] if then == "signal" else [False, False])
        assert await watch.wait(30) is False  # closed


async def test_awaited_enqueues_let_the_event_loop_run_other_tasks(url: str) -> None:
    """An enqueue on the loop's own connection does not suspend by itself: enqueues
    still yield to the loop (once per ``YIELD_EVERY``), so a producer enqueueing in a
    loop starves nothing (the store's checkpoints, a server's requests)."""
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await anyio.lowlevel.checkpoint()

    async with queue_at(url) as q, anyio.create_task_group() as tg:
        tg.start_soon(other)
        await anyio.lowlevel.checkpoint()
        for turn in range(3):
            before = ran
            for i in range(20_000):  # (a bound, not a timing: it takes a few enqueues)
                await q.enqueue(make_task(id=f"t{turn}-{i}"))
                if ran != before:
                    break
            assert ran != before
        tg.cancel_scope.cancel()


async def test_a_file_from_a_newer_schema_is_refused(url: str, tmp_path: Path) -> None:
    async with queue_at(url):
        pass
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        db.execute(
            "UPDATE omniq_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    store = registry.resolve("event_storage", url)
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*Upgrade"):
        await store.open()


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match=r"junk\.db"):
        await registry.resolve("task_queue", f"sqlite:///{tmp_path}/junk.db").open()


async def test_events_can_be_queried_with_plain_sql(url: str, tmp_path: Path) -> None:
    async with events_at(url) as events:
        await events.append_many(
            [
                make_event(task_id="t1", type=EventType.ENQUEUED, timestamp=10.0),
                make_event(
                    task_id="t1",
                    type=EventType.STARTED,
                    timestamp=11.0,
                    worker_id="w1",
                    detail={"attempt": 1},
                ),
                make_event(task_id="t2", type=EventType.STARTED, timestamp=12.0, worker_id="w2"),
            ]
        )
    with sqlite3.connect(tmp_path / "omniq.db") as db:
        rows = db.execute(
            """SELECT task_id, worker_id, json_extract(detail, '$.attempt') FROM omniq_events
               WHERE type = 'started' ORDER BY timestamp"""
        ).fetchall()
        plan = " ".join(
            r[3]
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM omniq_events WHERE task_id = 't1'"
            )
        )
    assert rows == [("t1", "w1", 1), ("t2", "w2", None)]
    assert "omniq_events_task" in plan


async def test_a_corrupt_row_is_handed_out_so_the_worker_can_dead_letter_it(
    url: str, tmp_path: Path
) -> None:
    async with queue_at(url) as q:
        await q.enqueue_many([make_task(id="bad"), make_task(id="good")])
        with sqlite3.connect(tmp_path / "omniq.db") as db:
            db.execute(
                "UPDATE omniq_tasks SET error = '{not json', timeout = 'soon' WHERE id = 'bad'"
            )
        got = {t.id: t for t in await q.reserve(["default"], "w1", 30.0, 10)}
        assert set(got) == {"bad", "good"}
        stand_in = got["bad"]
        assert (
            stand_in.payload == b"" and stand_in.state is TaskState.RUNNING and stand_in.lease_token
        )
        assert stand_in.error is not None and stand_in.error.type == "CorruptTaskRecord"
        assert got["good"].payload == make_task().payload
        assert await q.dead_letter("bad", stand_in.lease_token, stand_in.error)
        dead = await q.get("bad")
        assert dead is not None and dead.state is TaskState.DEAD
        assert await q.reserve(["default"], "w1", 30.0, 10) == []


async def test_cancelled_while_waiting_for_the_write_lock_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/omniq.db?busy_timeout=5"
    async with queue_at(url) as q:
        other = sqlite3.connect(tmp_path / "omniq.db", isolation_level=None, timeout=5)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with anyio.move_on_after(0.1):
                await q.enqueue(make_task(id="t1"))  # waits in BEGIN IMMEDIATE, then is cancelled
            other.execute("COMMIT")
            await q.enqueue(make_task(id="t2"))  # the connection is usable again ...
            other.execute("BEGIN IMMEDIATE")  # ... and the file is not left locked
            other.execute("COMMIT")
        finally:
            other.close()
        assert not q.db.conn.in_transaction
        assert await q.get("t1") is None and await q.get("t2") is not None


async def test_hostile_ids_are_bound_not_spliced(url: str) -> None:
    hostile = "x'); DROP TABLE omniq_tasks; --"
    async with queue_at(url) as q:
        await q.enqueue(make_task(id=hostile, queue=hostile))
        stored = await q.get(hostile)
        assert stored is not None and stored.queue == hostile
        assert [t.id for t in await q.reserve([hostile], "w1", 30.0)] == [hostile]


async def test_memory_database_is_private_to_its_store() -> None:
    async with queue_at("sqlite:///:memory:") as one, queue_at("sqlite:///:memory:") as two:
        await one.enqueue(make_task(id="t1"))
        assert await one.get("t1") is not None
        assert await two.get("t1") is None


async def test_enqueue_recorded_commits_tasks_and_events_together(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events for the same file go in the tasks' transaction (the event store is not
    called); in another file, or in memory, they are the event store's to write."""
    written: list[str] = []
    append_many = SqliteEventStorage.append_many

    async def spy(self: SqliteEventStorage, events: Any) -> None:
        written.extend(e.task_id for e in events)
        await append_many(self, events)

    monkeypatch.setattr(SqliteEventStorage, "append_many", spy)
    other = f"sqlite:///{tmp_path}/events.db"
    for events_url, memory in ((url, False), (other, False), ("sqlite:///:memory:", True)):
        queue_url = "sqlite:///:memory:" if memory else url
        async with queue_at(queue_url) as q, events_at(events_url) as events:
            task = make_task(created_at=time.time())
            await q.enqueue_recorded(
                [task], [make_event(task_id=task.id, detail={"state": "pending"})], events
            )
            assert [e.detail["state"] for e in await events.query(task_id=task.id)] == ["pending"]
            assert (task.id in written) is (events_url != url), events_url


async def test_wait_for_work_wakes_on_another_store_s_enqueue(url: str) -> None:
    async with queue_at(url) as waiter, queue_at(url) as producer:
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.wait_for_work, ["default"], 30.0)
            await anyio.sleep(0.05)
            await producer.enqueue(make_task())
        assert anyio.current_time() - started < 10.0


@pytest.mark.slow
async def test_processes_enqueueing_and_reserving_never_share_a_task(url: str) -> None:
    """Three spawn processes drain in batches while this one enqueues in batches."""
    total, children, deadline = 600, 3, 90.0
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(children + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=runpy.run_path,
            args=(RESERVER,),
            kwargs={
                "init_globals": {
                    "REF": url,
                    "WORKER": f"w{i}",
                    "TOTAL": total,
                    "DEADLINE": deadline,
                    "BARRIER": barrier,
                    "OUT": out,
                }
            },
        )
        for i in range(children)
    ]
    for proc in procs:
        proc.start()
    reports: list[tuple[str, list[str], str | None]] = []
    try:
        async with queue_at(url) as q:
            await anyio.to_thread.run_sync(barrier.wait, deadline)
            ids = [f"t{i:04d}" for i in range(total)]
            for start in range(0, total, 50):
                await q.enqueue_many(
                    [Task(id=i, name="n", payload=b"p") for i in ids[start : start + 50]]
                )
            give_up = time.monotonic() + deadline
            while len(reports) < children and time.monotonic() < give_up:
                try:
                    reports.append(await anyio.to_thread.run_sync(out.get, True, 0.5))
                except queue.Empty:
                    continue
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    assert len(reports) == children, f"only {len(reports)} of {children} children reported in time"
    errors = [tb for _, _, tb in reports if tb]
    assert not errors, "a child failed:\n" + "\n".join(errors)
    received: Counter[Any] = Counter(i for _, got, _ in reports for i in got)
    assert [i for i, n in received.items() if n > 1] == [], "a task was delivered twice"
    assert set(received) == set(ids)


def test_delay_admits_as_the_general_path() -> None:
    """A delay()'s task (no parents) is admitted by ready_state alone: the same stored
    task as the general path's initial_state gives, copy or not."""
    from omniq_backend_sqlite.queue import _admit, _admit_ready

    at = time.time()
    for task in (
        make_task(created_at=at - 1),  # the usual delay(): returned as is
        make_task(),  # no created_at: filled in
        make_task(created_at=at, eta=at + 60),  # scheduled
        make_task(created_at=at, eta=at - 60),  # eta passed: pending
        make_task(created_at=at, state=TaskState.SCHEDULED),  # said scheduled, is ready
        make_task(created_at=at, on_parent_failure="run"),
    ):
        admitted = _admit_ready(task, at)
        assert admitted == _admit(task, {}, at)
        assert (admitted is task) == (_admit(task, {}, at) is task)


async def test_delay_of_an_existing_id_reads_it_back(url: str) -> None:
    """The one-task insert and its event share a cursor: an id already stored is read
    back as stored (not overwritten), with its event saying so."""
    async with queue_at(url) as q, events_at(url) as ev:
        first = make_task(id="same", created_at=time.time(), queue="a")
        [stored] = await q.enqueue_recorded([first], [_enqueued(first)], ev)
        again = make_task(id="same", created_at=time.time(), queue="b")
        [kept] = await q.enqueue_recorded([again], [_enqueued(again)], ev)
        assert kept == stored and kept.queue == "a"
        events = await ev.query(task_id="same")
        assert [e.queue for e in events] == ["a", "a"]
        assert all(e.detail["state"] == TaskState.PENDING.value for e in events)


def _enqueued(task: Task) -> Any:
    return make_event(
        task_id=task.id, queue=task.queue, detail={"name": task.name, "state": task.state.value}
    )


def test_row_insert_looks_only_at_optional_columns() -> None:
    """RowInsert names every required column and only the non-None optional ones; a
    None in a required column is bound as NULL and refused by SQLite, as when it was
    left out (NOT NULL without a default)."""
    from omniq_backend_sqlite._rows import RowInsert

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT NOT NULL, b TEXT, c TEXT NOT NULL DEFAULT 'x')")
    insert = RowInsert("t", ("a", "b", "c"), required=("a",))
    assert insert(("1", None, None)) == ("INSERT INTO t (a) VALUES (?)", ("1",))
    assert insert(("2", "b", None)) == ("INSERT INTO t (a, b) VALUES (?, ?)", ("2", "b"))
    assert insert(("3", None, "y")) == ("INSERT INTO t (a, c) VALUES (?, ?)", ("3", "y"))
    for row in (("1", None, None), ("2", "b", None), ("3", None, "y")):
        conn.execute(*insert(row))
    assert conn.execute("SELECT a, b, c FROM t ORDER BY a").fetchall() == [
        ("1", None, "x"),
        ("2", "b", "x"),
        ("3", None, "y"),
    ]
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(*insert((None, "b", "z")))
    one = RowInsert("t", ("a", "b"), required=("a",))  # one optional column
    assert one(("4", "q")) == ("INSERT INTO t (a, b) VALUES (?, ?)", ("4", "q"))
    every = RowInsert("t", ("a", "b"))  # none required: all looked at
    assert every(("5", None)) == ("INSERT INTO t (a) VALUES (?)", ("5",))


def test_a_new_tasks_insert_keyed_by_its_fields_is_the_rows() -> None:
    """``new_task_insert`` (a delay()'s task, keyed by its fields) gives the statement
    and values that RowInsert's look at the task's row gives, whichever optional
    fields are set: its key must follow the optional columns, in order."""
    from omniq.testing import make_error
    from omniq_backend_sqlite._rows import TASK_COLUMNS, TASK_REQUIRED, new_task_insert, task_params
    from omniq_backend_sqlite.queue import _INSERT_NEW

    optional = {
        "eta": 5.0,
        "expires_at": 6.0,
        "timeout": 7.0,
        "depends_on": ("p",),
        "schedule_id": "s",
        "lease_owner": "w",
        "lease_token": "t",
        "lease_deadline": 8.0,
        "started_at": 9.0,
        "finished_at": 10.0,
        "error": make_error(),
        "headers": {"h": "v"},
        "on_parent_failure": None,
        "pass_results": True,
    }
    assert list(optional) == [c for c in TASK_COLUMNS if c not in TASK_REQUIRED]
    base = make_task(created_at=1.0)
    tasks = [base, msgspec.structs.replace(base, **optional)]
    tasks += [msgspec.structs.replace(base, **{name: value}) for name, value in optional.items()]
    for task in tasks:
        assert new_task_insert(_INSERT_NEW, task) == _INSERT_NEW(task_params(task))


async def test_a_reserve_after_a_drain_that_finds_nothing_takes_no_write_lock(
    tmp_path: Path,
) -> None:
    """After a reserve that drained the queue, the next one reads first: finding
    nothing, it returns while another connection holds the write lock (it used to wait
    for it, and a producer's enqueue then waited for the reserve). What is there after
    is still reserved."""
    path = tmp_path / "omniq.db"
    async with queue_at(f"sqlite:///{path}?busy_timeout=30") as q:
        await q.enqueue(make_task(id="a"))
        assert [t.id for t in await q.reserve(["default"], "w", 30, limit=5)] == ["a"]
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with anyio.fail_after(5):
                assert await q.reserve(["default"], "w", 30, limit=5) == []
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        await q.enqueue(make_task(id="b"))
        assert [t.id for t in await q.reserve(["default"], "w", 30, limit=5)] == ["b"]


@pytest.mark.parametrize("how", ["open", "worker"])
def test_an_async_app_left_open_lets_asyncio_run_exit_and_keeps_what_it_acknowledged(
    tmp_path: Path, how: str
) -> None:
    """``asyncio.run(main())`` whose app is never closed (kept by a module global, so
    aiosqlite's ``__del__`` never stops its thread; or its worker run to the end of a
    burst) never exited: the connection's thread was not a daemon and the interpreter
    joins those first. Every enqueue awaited before the exit is in the file after it."""
    import subprocess
    import sys
    import textwrap

    db = tmp_path / "left-open.db"
    url = f"sqlite:///{db}"
    script = textwrap.dedent(f"""
        import asyncio
        from omniq import AsyncOmniQ
        app = AsyncOmniQ(task_queue={url!r}, result_storage={url!r}, event_storage={url!r})
        noop = app.task(name="noop")(str)

        async def main():
            for _ in range(20):
                print((await noop.delay()).id, flush=True)
            if {how!r} == "worker":
                await app.run_worker(concurrency=1, burst=True)

        asyncio.run(main())
    """)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the script did not exit: {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr[-3000:]
    acknowledged = done.stdout.split()
    assert len(acknowledged) == 20
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM omniq_tasks")}
    assert stored >= set(acknowledged)
