"""The public API end to end on the embedded default (SQLite files in tmp_path)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, Middleware, OmniQ, TaskRef
from omniq.errors import (
    CapabilityError,
    ConfigError,
    ResultTimeoutError,
    SerializationError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from omniq.models import EventType, Task, TaskState
from omniq.testing import eventually
from omniq.worker.pools import AsyncPool, is_coroutine_function
from omniq.worker.runtime import CLEANUP_EVERY, first_cleanup_delay

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def urls(tmp_path: Path) -> dict[str, str]:
    return {
        "task_queue": f"sqlite:///{tmp_path}/tasks.db",
        "result_storage": f"sqlite:///{tmp_path}/results.db",
        "event_storage": f"sqlite:///{tmp_path}/events.db",
    }


@pytest.fixture
def app(tmp_path):
    with OmniQ(**urls(tmp_path)) as app:
        yield app


@pytest.fixture
async def aapp(tmp_path):
    async with AsyncOmniQ(**urls(tmp_path)) as app:
        yield app


def types_of(events):
    return [e.type for e in events]


def test_sync_round_trip_with_events(app):
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    ref = add.delay(2, 3)
    assert app.run_worker(pool="thread", concurrency=2, burst=True) == "burst"
    assert app.get_result(ref, timeout=5) == 5
    assert app.get_result(ref.id, timeout=5) == 5
    assert types_of(app.events(task_id=ref.id)) == [
        EventType.ENQUEUED,
        EventType.STARTED,
        EventType.SUCCEEDED,
    ]
    assert app.get_task(ref.id).state is TaskState.SUCCEEDED


async def test_bulk_refs_and_events_say_what_was_stored(aapp):
    """A bulk's refs are values (equal and hashable by what they say), and each task's
    enqueued event names it and its state, also when the events share their detail."""

    @aapp.task
    async def noop(i: int) -> None:
        return None

    refs = await aapp.enqueue_many(noop, [(i,) for i in range(3)], delay=60)
    first = refs[0]
    assert len(set(refs)) == 3 and TaskRef(first.id, first.name, first.queue, first.state) == first
    assert {ref.state for ref in refs} == {TaskState.SCHEDULED}
    for ref in refs:
        [event] = await aapp.events(task_id=ref.id)
        assert (event.type, event.detail) == (
            EventType.ENQUEUED,
            {"name": ref.name, "state": "scheduled"},
        )


async def test_each_delay_gets_its_own_id_times_and_call(aapp):
    """delay() builds a task's fixed part once: each call still gets its own id,
    creation time, expiry (its ttl from then) and arguments."""

    @aapp.task(ttl=60, priority=3)
    async def echo(x: int) -> int:
        return x

    first = await aapp.get_task((await echo.delay(1)).id)
    second = await aapp.get_task((await echo.delay(2)).id)
    assert first is not None and second is not None and first.id != second.id
    assert first.created_at < second.created_at
    for task in (first, second):
        assert task.expires_at == task.created_at + 60 and task.priority == 3
    assert first.payload != second.payload


async def test_result_storage_is_told_of_made_ids_before_their_enqueue(aapp, monkeypatch):
    """``expect`` comes before the enqueue is sent, for ids the app made only: a given
    task_id may already have a result, which its wait must read. The enqueue says which
    ids are fresh (``fresh=True``: the backend need not first find out whether they exist)."""
    order: list[str] = []
    enqueue = aapp.task_queue.enqueue_recorded

    async def recorded(tasks, *args, fresh=False):
        order.extend(f"enqueue {t.id}{' fresh' if fresh else ''}" for t in tasks)
        return await enqueue(tasks, *args, fresh=fresh)

    monkeypatch.setattr(aapp.result_storage, "expect", lambda i: order.append(f"expect {i}"))
    monkeypatch.setattr(aapp.task_queue, "enqueue_recorded", recorded)

    @aapp.task
    async def echo(x: int) -> int:
        return x

    made = await echo.delay(1)
    given = await echo.apply((2,), task_id="given-id")
    applied = await echo.apply((3,), priority=2)
    assert order == [
        f"expect {made.id}",
        f"enqueue {made.id} fresh",
        f"enqueue {given.id}",
        f"expect {applied.id}",
        f"enqueue {applied.id} fresh",
    ]


async def test_a_fresh_enqueue_reaches_the_hook_only_of_a_backend_that_has_one(aapp, monkeypatch):
    """``fresh=True`` goes to ``_enqueue_fresh`` where a backend overrides it; elsewhere
    straight to ``_enqueue_recorded`` (the default hook would only add a coroutine)."""
    queue = aapp.task_queue
    assert not type(queue)._fresh_hook
    calls: list[str] = []
    recorded = queue._enqueue_recorded

    async def fresh_hook(self, tasks, events, event_storage):
        calls.append("fresh")
        return await recorded(tasks, events, event_storage)

    @aapp.task
    async def echo(x: int) -> int:
        return x

    await echo.delay(1)
    subclass = type("FreshQueue", (type(queue),), {"_enqueue_fresh": fresh_hook})
    assert subclass._fresh_hook and not type(queue)._fresh_hook
    monkeypatch.setattr(queue, "__class__", subclass)
    ref = await echo.delay(2)
    assert calls == ["fresh"]
    assert (await aapp.get_task(ref.id)).state is TaskState.PENDING


async def test_an_id_a_middleware_sets_is_not_fresh(aapp, monkeypatch):
    """A middleware may set the id (maybe one that exists): then the enqueue is not told
    the id is fresh, and the backend checks it as for a given id."""
    seen: list[bool] = []
    enqueue = aapp.task_queue.enqueue_recorded

    async def recorded(tasks, *args, fresh=False):
        seen.append(fresh)
        return await enqueue(tasks, *args, fresh=fresh)

    class Renamer(Middleware):
        async def before_enqueue(self, task):
            task.id = "chosen-" + task.id

    monkeypatch.setattr(aapp.task_queue, "enqueue_recorded", recorded)
    aapp.add_middleware(Renamer())

    @aapp.task
    async def echo(x: int) -> int:
        return x

    ref = await echo.delay(1)
    assert ref.id.startswith("chosen-") and seen == [False]


async def test_async_pool_runs_coroutines_and_plain_functions(aapp):
    @aapp.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @aapp.task
    def shout(s: str) -> str:
        return s.upper()

    a, b = await double.delay(21), await shout.delay("hi")
    await aapp.run_worker(pool="async", burst=True)
    assert await aapp.get_result(a, timeout=5) == 42
    assert await aapp.get_result(b, timeout=5) == "HI"


class _Methods:
    async def coro(self, x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    def plain(self, x: int) -> tuple[int, int]:
        return x, threading.get_ident()


async def _coro(x: int) -> tuple[int, int]:
    return x, threading.get_ident()


async def test_async_pool_tells_coroutine_functions_and_times_only_what_has_a_timeout():
    """Coroutine functions (by their code's flag, or as inspect tells the others: bound
    methods, partials) run on the loop; plain callables in a thread; a task's own
    TimeoutError is not a timeout; a timeout that expires is."""
    pool = AsyncPool(2)
    await pool.start()
    loop_thread = threading.get_ident()
    try:
        for func in (_coro, _Methods().coro, functools.partial(_coro)):
            assert is_coroutine_function(func)
            assert await pool.run(func, (1,), {}, None) == (1, loop_thread)
            assert await pool.run(func, (2,), {}, 5.0) == (2, loop_thread)
        assert not is_coroutine_function(_Methods().plain)
        assert not is_coroutine_function(lambda: None)
        value, thread = await pool.run(_Methods().plain, (3,), {}, None)
        assert value == 3 and thread != loop_thread

        async def own_timeout() -> None:
            raise TimeoutError("mine")

        with pytest.raises(TimeoutError, match="mine") as caught:
            await pool.run(own_timeout, (), {}, None)
        assert not isinstance(caught.value, TaskTimeoutError)
        with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.05 s"):
            await pool.run(asyncio.sleep, (5,), {}, 0.05)
    finally:
        await pool.stop()


async def test_retries_with_backoff_then_success(aapp, tmp_path):
    marker = tmp_path / "attempts"

    @aapp.task(retries=3, retry_backoff=0.01)
    def flaky() -> str:
        n = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(n))
        if n < 3:
            raise RuntimeError(f"attempt {n} failed")
        return "ok"

    ref = await flaky.delay()
    await aapp.run_worker(burst=True)
    assert await aapp.get_result(ref, timeout=5) == "ok"
    events = types_of(await aapp.events(task_id=ref.id))
    assert events.count(EventType.FAILED) == 2 and events.count(EventType.RETRYING) == 2
    assert (await aapp.get_task(ref.id)).attempts == 3


async def test_exhausted_retries_dead_letter_and_raise_the_task_error(aapp):
    @aapp.task(retries=1, retry_backoff=0)
    def broken(x: int) -> None:
        raise ValueError(f"bad value {x}")

    ref = await broken.delay(7)
    await aapp.run_worker(burst=True)
    with pytest.raises(ValueError, match="bad value 7"):
        await aapp.get_result(ref, timeout=5)
    task = await aapp.get_task(ref.id)
    assert task.state is TaskState.DEAD and task.error and task.error.type == "ValueError"
    assert EventType.DEAD in types_of(await aapp.events(task_id=ref.id))


async def test_timeout_fails_the_attempt_and_retries(aapp):
    @aapp.task(timeout=0.1, retries=1, retry_backoff=0)
    async def slow() -> None:
        await asyncio.sleep(10)

    ref = await slow.delay()
    await aapp.run_worker(burst=True)
    with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.1 s"):
        await aapp.get_result(ref, timeout=5)
    assert (await aapp.get_task(ref.id)).attempts == 2


async def test_dependencies_wait_run_and_cancel(aapp):
    order: list[str] = []

    @aapp.task
    def step(name: str, fail: bool = False) -> str:
        order.append(name)
        if fail:
            raise RuntimeError(f"{name} failed")
        return name

    parent = await step.delay("parent")
    child = await aapp.enqueue(step, "child", depends_on=[parent.id])
    assert child.state is TaskState.WAITING
    bad = await step.apply(("bad",), {"fail": True})
    orphan = await aapp.enqueue(step, "orphan", depends_on=[bad.id, parent.id])
    await aapp.run_worker(concurrency=1, burst=True)
    assert await aapp.get_result(child, timeout=5) == "child"
    assert order.index("parent") < order.index("child") and "orphan" not in order
    with pytest.raises(TaskFailedError, match="cancelled"):
        await aapp.get_result(orphan, timeout=5)
    with pytest.raises(TaskNotFoundError):
        await aapp.enqueue(step, "x", depends_on=["no-such-task"])


async def test_priority_runs_higher_first(aapp):
    ran: list[int] = []

    @aapp.task
    def record(p: int) -> None:
        ran.append(p)

    for p in (0, 5, 9, 1):
        await aapp.enqueue(record, p, priority=p)
    await aapp.run_worker(concurrency=1, burst=True)
    assert ran == [9, 5, 1, 0]


async def test_cancel_pending_and_unknown_results(aapp):
    @aapp.task
    def noop() -> None:
        return None

    ref = await aapp.enqueue(noop, delay=60)
    assert ref.state is TaskState.SCHEDULED
    assert await aapp.cancel(ref.id) is True
    with pytest.raises(TaskFailedError, match="cancelled"):
        await aapp.get_result(ref, timeout=1)
    with pytest.raises(TaskNotFoundError, match="no task with id 'nope'"):
        await aapp.get_result("nope", timeout=1)
    pending = await noop.delay()
    with pytest.raises(ResultTimeoutError, match=r"no result after 0\.2 s"):
        await aapp.get_result(pending, timeout=0.2)


async def test_unregistered_callables_travel_by_dill_on_local_stores(aapp):
    offset = 40
    ref = await aapp.enqueue(lambda x: x + offset, 2)
    await aapp.run_worker(burst=True)
    assert await aapp.get_result(ref, timeout=5) == 42


async def test_undecodable_and_unknown_tasks_are_dead_lettered_and_the_worker_goes_on(aapp):
    @aapp.task
    def fine() -> str:
        return "fine"

    now = time.time()
    await aapp.task_queue.enqueue(
        Task(id="corrupt-1", name=fine.name, payload=b"\x00garbage", created_at=now)
    )
    stranger = await aapp.enqueue("somewhere.unknown_task")
    ok = await fine.delay()
    await aapp.run_worker(burst=True)
    assert await aapp.get_result(ok, timeout=5) == "fine"
    corrupt = await aapp.get_task("corrupt-1")
    assert corrupt.state is TaskState.DEAD and "not an OmniQ envelope" in corrupt.error.message
    unknown = await aapp.get_task(stranger.id)
    assert unknown.state is TaskState.DEAD and "not registered" in unknown.error.message


async def test_lapsed_lease_of_a_dead_worker_is_recovered(tmp_path):
    async with AsyncOmniQ(**urls(tmp_path), lease=0.3) as app:

        @app.task
        def work() -> str:
            return "done"

        ref = await work.delay()
        # A worker reserves the task and dies without a word.
        [taken] = await app.task_queue.reserve(["default"], "ghost", lease=0.3)
        assert taken.id == ref.id
        await app.run_worker(burst=True)
        assert await app.get_result(ref, timeout=5) == "done"
        events = types_of(await app.events(task_id=ref.id))
        assert EventType.LEASE_LOST in events
        assert (await app.get_task(ref.id)).attempts == 2


def test_only_a_burst_worker_cleans_up_results_and_events_as_it_starts() -> None:
    """A long-running worker's first cleanup of results and events falls at a random
    point of its first interval (workers started together do not scan at once, first
    tasks do not wait behind a scan); a burst worker, which may be gone before then,
    cleans up at once. (The tasks' cleanup runs at start for every worker.)"""
    assert first_cleanup_delay(burst=True) == 0.0
    delays = {first_cleanup_delay(burst=False) for _ in range(50)}
    assert all(0.0 <= d < CLEANUP_EVERY for d in delays)
    assert len(delays) > 1, "spread over the interval, not one fixed delay"


async def test_a_stopping_worker_ends_its_maintenance_when_a_cancel_is_swallowed(aapp, monkeypatch):
    """Python 3.11's ``asyncio.wait_for`` (inside redis-py) returns a result that lands
    with the cancel: the maintenance loop must end on the stop flag, not sleep until the
    stop's next round of cancels (half a second added to every short burst worker)."""
    entered, swallowed = asyncio.Event(), asyncio.Event()
    release = aapp.task_queue.release_expired_leases

    async def swallow_the_cancel():
        entered.set()
        try:
            await asyncio.sleep(3600)  # until the stopping worker cancels it
        except asyncio.CancelledError:
            swallowed.set()
        return await release()

    monkeypatch.setattr(aapp.task_queue, "release_expired_leases", swallow_the_cancel)

    @aapp.task
    async def after_maintenance_began() -> None:
        await asyncio.wait_for(entered.wait(), 10)

    loop = asyncio.get_running_loop()
    created: list[asyncio.Task] = []

    def capture(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    await after_maintenance_began.delay()
    loop.set_task_factory(capture)
    try:
        await aapp.run_worker(burst=True)
    finally:
        loop.set_task_factory(None)
    [maintenance] = [t for t in created if t.get_name() == "omniq-maintenance"]
    assert swallowed.is_set()
    assert maintenance.done() and not maintenance.cancelled()


async def test_schedules_fire_pause_and_fire_once_across_schedulers(tmp_path):
    async with AsyncOmniQ(**urls(tmp_path)) as app, AsyncOmniQ(**urls(tmp_path)) as other:

        @app.task
        def tick() -> str:
            return "tick"

        sid = await app.schedule(tick, interval=0.2, start_at=time.time() - 0.01)
        assert await app.schedule(tick, interval=0.2) == sid  # declared again: same schedule
        fired = await asyncio.gather(app.run_due_schedules(), other.run_due_schedules())
        assert sum(len(f) for f in fired) == 1
        await app.pause_schedule(sid)
        await asyncio.sleep(0.3)
        assert await app.run_due_schedules() == []
        await app.resume_schedule(sid)
        [paused_state] = [s for s in await app.list_schedules() if s.id == sid]
        assert not paused_state.paused and paused_state.next_run > time.time()


async def test_a_signed_schedule_keeps_its_id_and_each_firing_runs(tmp_path):
    """Calls are signed for their task's id; a schedule's firings get ids of their own, so
    each is signed for its id when it fires, and the default schedule id stays stable."""
    async with AsyncOmniQ(**urls(tmp_path), secret_key="k") as app:

        @app.task
        def tick() -> str:
            return "tick"

        sid = await app.schedule(tick, interval=60, start_at=time.time() - 0.01)
        assert await app.schedule(tick, interval=60) == sid
        [fired] = await app.run_due_schedules()
        await app.run_worker(burst=True, poll_interval=0.1)
        assert await app.get_result(fired.id, timeout=5) == "tick"


async def test_bad_input_is_refused_with_the_value_named(aapp):
    @aapp.task
    def noop() -> None:
        return None

    cases = [
        ({"timeout": -1}, "timeout must be seconds > 0 (a number or a timedelta), got -1"),
        ({"ttl": "soon"}, "ttl must be seconds > 0 (a number or a timedelta), got 'soon'"),
        ({"priority": 10}, "priority must be an integer from 0 to 9, got 10"),
        ({"queue": "../etc"}, "invalid queue name '../etc'"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            await aapp.enqueue(noop, **options)
    with pytest.raises(ConfigError, match=r"invalid cron expression 'every minute'"):
        await aapp.schedule(noop, cron="every minute")
    with pytest.raises(ConfigError, match="unknown task option"):
        aapp.task(retrys=3)(lambda: None)
    with pytest.raises(ConfigError, match=r"unknown URL scheme 'sqlit'\. Did you mean 'sqlite'"):
        AsyncOmniQ(task_queue="sqlit:///x.db")
    gen = (i for i in range(3))
    with pytest.raises(SerializationError, match="task arguments cannot be serialized"):
        await aapp.enqueue(noop, gen)
    with pytest.raises(SerializationError, match="task function cannot be serialized"):
        await aapp.enqueue(lambda: next(gen))
    assert await aapp.list_tasks() == []  # nothing half-written


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"eta": float("nan")},
            r"eta must be a time in epoch seconds from 0 up to, not including, 253402300800 .*nan",
        ),
        ({"eta": float("inf")}, r"eta must be a time in epoch seconds .*got inf"),
        ({"eta": -1e300}, r"eta must be a time in epoch seconds .*got -1e\+300"),
        ({"eta": 1e300}, r"eta must be a time in epoch seconds .*got 1e\+300"),
        ({"delay": 1e300}, r"delay=1e\+300 s puts the task past the last valid time"),
        ({"queue": ""}, r"invalid queue name ''"),
        ({"task_id": ""}, r"invalid task id ''"),
    ],
)
async def test_hostile_enqueue_options_are_refused_and_nothing_is_written(aapp, options, message):
    @aapp.task
    def noop() -> None:
        return None

    with pytest.raises(ConfigError, match=message):
        await aapp.enqueue(noop, **options)
    with pytest.raises(ConfigError, match=message):
        await aapp.enqueue_many(noop, [(), ()], **options)
    assert await aapp.list_tasks() == []


async def test_time_filters_and_schedule_starts_are_checked_like_eta(aapp):
    with pytest.raises(ConfigError, match=r"since must be a time in epoch seconds .*got nan"):
        await aapp.events(since=float("nan"))
    with pytest.raises(ConfigError, match=r"start_at must be a time in epoch seconds .*got inf"):
        await aapp.schedule("some.task", interval=60, start_at=float("inf"))
    with pytest.raises(ConfigError, match=r"interval=1e\+300 puts the first firing past the last"):
        await aapp.schedule("some.task", interval=1e300)
    assert await aapp.list_schedules() == []


@pytest.mark.parametrize("cron", ["* * * * * *", "0 0 * * * 0 2030"])
async def test_cron_with_seconds_or_year_fields_is_refused(aapp, cron):
    fields = len(cron.split())
    with pytest.raises(
        ConfigError,
        match=rf"invalid cron expression .*\(it has {fields} fields\): "
        r"expected 5 fields",
    ):
        await aapp.schedule("some.task", cron=cron)
    assert await aapp.list_schedules() == []


async def test_enqueue_many_refuses_one_task_id_for_several_calls(aapp):
    @aapp.task
    def echo(x: int) -> int:
        return x

    refused = r"enqueue_many got task_id='order-1' for 3 calls; a task id names one task.*Nothing"
    with pytest.raises(ConfigError, match=refused):
        await aapp.enqueue_many(echo, [(1,), (2,), (3,)], task_id="order-1")
    assert await aapp.list_tasks() == []
    [ref] = await aapp.enqueue_many(echo, [(1,)], task_id="order-1")  # one call: its id
    assert ref.id == "order-1"


async def test_process_pool_runs_elsewhere_and_enforces_hard_timeouts(aapp):
    @aapp.task
    def pid() -> int:
        return os.getpid()

    @aapp.task(timeout=0.5)
    def stuck() -> None:
        time.sleep(30)

    a, b = await pid.delay(), await stuck.delay()
    await aapp.run_worker(pool="process", concurrency=2, burst=True)
    assert await aapp.get_result(a, timeout=5) != os.getpid()
    with pytest.raises(TaskTimeoutError):
        await aapp.get_result(b, timeout=5)


async def test_process_pool_children_recycle_and_report_errors_with_their_traceback(aapp):
    @aapp.task
    def pid() -> int:
        return os.getpid()

    @aapp.task
    def broken() -> None:
        raise KeyError("missing in the child")

    refs = await aapp.enqueue_many(pid, [() for _ in range(5)])
    bad = await broken.delay()
    await aapp.run_worker(pool="process", concurrency=1, max_tasks_per_child=2, burst=True)
    pids = Counter([await aapp.get_result(r, timeout=5) for r in refs])
    assert len(pids) >= 3 and max(pids.values()) <= 2 and os.getpid() not in pids
    result = await aapp.get_task_result(bad.id)
    assert result.error.type == "KeyError" and "missing in the child" in result.error.message
    assert "in broken" in result.error.traceback  # the child's frames, not only ours


async def test_worker_recycles_after_max_tasks(aapp):
    @aapp.task
    def noop() -> None:
        return None

    await aapp.enqueue_many(noop, [() for _ in range(10)])
    assert await aapp.run_worker(concurrency=1, max_tasks_per_child=3) == "max-tasks"
    counts = (await aapp.stats())["default"]
    assert counts.get(TaskState.SUCCEEDED, 0) >= 3


def test_capabilities_are_checked_at_configuration_time(tmp_path):
    from omniq.interfaces import Capability

    with OmniQ(**urls(tmp_path)) as app:
        type(app.aio.task_queue).capabilities = app.aio.task_queue.capabilities - {
            Capability.DELAYED
        }
        try:
            with pytest.raises(CapabilityError, match="'delayed' capability"):
                app.enqueue("x.y", delay=5)
        finally:
            type(app.aio.task_queue).capabilities = app.aio.task_queue.capabilities | {
                Capability.DELAYED
            }


@pytest.mark.parametrize(("prefetch", "held"), [(1, 3), (None, 10)])
async def test_a_worker_holds_concurrency_plus_prefetch_tasks(aapp, prefetch, held):
    """Reserved tasks beyond the running ones wait in the worker (default: 4 x concurrency
    more); the rest stay pending for other workers."""
    gate = asyncio.Event()
    started = 0

    @aapp.task
    async def blocked() -> None:
        nonlocal started
        started += 1
        await gate.wait()

    await aapp.enqueue_many(blocked, [() for _ in range(12)])
    worker = aapp.worker(concurrency=2, prefetch=prefetch, burst=True)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:

        async def holding() -> dict[TaskState, int] | None:
            counts = (await aapp.stats())["default"]
            return counts if counts.get(TaskState.RUNNING, 0) >= held and started >= 2 else None

        counts = await eventually(holding, f"the worker holds {held} with 2 started")
        assert started == 2
        assert counts.get(TaskState.RUNNING) == held and counts.get(TaskState.PENDING) == 12 - held
    finally:
        gate.set()
    assert await asyncio.wait_for(run, 20) == "burst"
    assert (await aapp.stats())["default"].get(TaskState.SUCCEEDED) == 12


async def test_an_id_a_middleware_sets_is_not_expected(aapp, monkeypatch):
    """A middleware may name the task (an id that can already hold a result): only the
    id the app made is noted, before the middleware runs, so the named task's wait reads
    first."""
    expected: list[str] = []
    monkeypatch.setattr(aapp.result_storage, "expect", expected.append)

    class Rename(Middleware):
        async def before_enqueue(self, task: Task) -> None:
            expected.append(f"made {task.id}")
            task.id = "renamed"

    aapp.add_middleware(Rename())

    @aapp.task
    async def add(a: int, b: int) -> int:
        return a + b

    ref = await add.delay(1, 2)
    assert ref.id == "renamed" and await aapp.task_queue.get("renamed") is not None
    assert len(expected) == 2 and expected[1] == f"made {expected[0]}"
