"""Per-task middleware: one ordered chain, from plugins and the app, around enqueue and
every attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, Middleware, OmniQ, Task, current_task, hookimpl, register_plugin
from omniq.registry import registry
from omniq.worker.runtime import Worker


class Recorder(Middleware):
    """Records each call as (its tag, the point, task name, detail)."""

    def __init__(self, tag: str, calls: list[tuple[Any, ...]]) -> None:
        self.tag = tag
        self.calls = calls

    async def before_enqueue(self, task: Task) -> None:
        task.headers[f"x-{self.tag}"] = "1"
        self.calls.append((self.tag, "before_enqueue", task.name))

    async def before_run(self, task: Task) -> None:
        running = current_task()
        assert running is not None and running.id == task.id  # in the task's context
        self.calls.append((self.tag, "before_run", task.name, dict(task.headers)))

    async def after_success(self, task: Task, value: Any) -> None:
        self.calls.append((self.tag, "after_success", task.name, value))

    def after_completion(self, task: Task, *, accepted: bool) -> None:
        self.calls.append((self.tag, "after_completion", task.name, accepted))

    async def on_failure(self, task: Task, exc: BaseException, *, will_retry: bool) -> None:
        self.calls.append((self.tag, "on_failure", task.name, type(exc).__name__, will_retry))

    def after_failure_completion(
        self, task: Task, exc: BaseException, *, will_retry: bool, accepted: bool
    ) -> None:
        self.calls.append(
            (
                self.tag,
                "after_failure_completion",
                task.name,
                type(exc).__name__,
                will_retry,
                accepted,
            )
        )


#: First-party plugins that add middleware to every app of the development environment;
#: these tests count the chain's members, so they leave those out (their own tests cover
#: them).
OBSERVABILITY = ("omniq_prometheus", "omniq_opentelemetry")


@pytest.fixture(autouse=True)
def _only_this_tests_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    import omniq.app
    from omniq.middleware import plugin_middleware

    def without_observability(app: AsyncOmniQ) -> list[Middleware]:
        return [
            m for m in plugin_middleware(app) if not type(m).__module__.startswith(OBSERVABILITY)
        ]

    monkeypatch.setattr(omniq.app, "plugin_middleware", without_observability)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[OmniQ]:
    app = OmniQ(task_queue=f"sqlite:///{tmp_path / 'omniq.db'}")
    yield app
    app.close()


def test_chain_runs_in_order_around_every_point(app: OmniQ) -> None:
    calls: list[tuple[Any, ...]] = []
    app.add_middleware(Recorder("a", calls))
    app.add_middleware(Recorder("b", calls))

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(retries=1, retry_backoff=0)
    def boom() -> None:
        raise ValueError("no")

    ok = add.delay(1, 2)
    add_name, boom_name = add.name, boom.name
    app.run_worker(burst=True)
    assert app.get_task(ok.id).headers == {"x-a": "1", "x-b": "1"}
    boom.delay()
    app.run_worker(burst=True)
    headers = {"x-a": "1", "x-b": "1"}
    assert calls == [
        ("a", "before_enqueue", add_name),
        ("b", "before_enqueue", add_name),
        ("a", "before_run", add_name, headers),
        ("b", "before_run", add_name, headers),
        ("b", "after_success", add_name, 3),
        ("a", "after_success", add_name, 3),
        ("b", "after_completion", add_name, True),  # (the store accepted it)
        ("a", "after_completion", add_name, True),
        ("a", "before_enqueue", boom_name),
        ("b", "before_enqueue", boom_name),
        ("a", "before_run", boom_name, headers),
        ("b", "before_run", boom_name, headers),
        ("b", "on_failure", boom_name, "ValueError", True),
        ("a", "on_failure", boom_name, "ValueError", True),
        # (the store accepted the retry)
        ("b", "after_failure_completion", boom_name, "ValueError", True, True),
        ("a", "after_failure_completion", boom_name, "ValueError", True, True),
        ("a", "before_run", boom_name, headers),
        ("b", "before_run", boom_name, headers),
        ("b", "on_failure", boom_name, "ValueError", False),
        ("a", "on_failure", boom_name, "ValueError", False),
        ("b", "after_failure_completion", boom_name, "ValueError", False, True),
        ("a", "after_failure_completion", boom_name, "ValueError", False, True),
    ]


def test_enqueue_many_gives_each_task_its_own_headers(app: OmniQ) -> None:
    class Numbered(Middleware):
        n = 0

        async def before_enqueue(self, task: Task) -> None:
            self.n += 1
            task.headers["n"] = str(self.n)

    app.add_middleware(Numbered())

    @app.task
    def echo(x: int) -> int:
        return x

    refs = app.enqueue_many(echo, [(1,), (2,), (3,)])
    assert [app.get_task(r.id).headers for r in refs] == [{"n": "1"}, {"n": "2"}, {"n": "3"}]


def test_before_run_raising_fails_the_attempt(app: OmniQ) -> None:
    class Refuse(Middleware):
        async def before_run(self, task: Task) -> None:
            raise PermissionError("not today")

    app.add_middleware(Refuse())
    ran = []

    @app.task
    def work() -> None:
        ran.append(1)

    ref = work.delay()
    app.run_worker(burst=True)
    assert not ran
    result = app.get_task_result(ref.id)
    assert result is not None and result.error is not None
    assert result.error.type == "PermissionError"


def test_before_enqueue_raising_refuses_the_enqueue(app: OmniQ) -> None:
    class Refuse(Middleware):
        async def before_enqueue(self, task: Task) -> None:
            raise PermissionError("no tenant")

    app.add_middleware(Refuse())

    @app.task
    def work() -> None:
        pass

    with pytest.raises(PermissionError):
        work.delay()
    assert app.list_tasks() == []


def test_after_success_raising_is_logged_not_fatal(
    app: OmniQ, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Middleware):
        async def after_success(self, task: Task, value: Any) -> None:
            raise RuntimeError("exporter down")

    app.add_middleware(Broken())

    @app.task
    def work() -> int:
        return 7

    ref = work.delay()
    app.run_worker(burst=True)
    assert app.get_result(ref, timeout=0) == 7
    assert "exporter down" in caplog.text


def test_after_completion_raising_is_logged_not_fatal(
    app: OmniQ, caplog: pytest.LogCaptureFixture
) -> None:
    """It runs in the worker's writer: the batch is written, the worker carries on."""

    class Broken(Middleware):
        def after_completion(self, task: Task, *, accepted: bool) -> None:
            raise RuntimeError("counter down")

    app.add_middleware(Broken())

    @app.task
    def work(n: int) -> int:
        return n

    refs = [work.delay(n) for n in range(3)]
    app.run_worker(burst=True)
    assert [app.get_result(r, timeout=0) for r in refs] == [0, 1, 2]
    assert caplog.text.count("failed in after_completion") == 3  # (one per task)


def test_an_async_after_completion_is_refused_when_added(app: OmniQ) -> None:
    """The writer calls it without awaiting: an ``async def`` one would never run (a
    coroutine dropped, its counts silently missing), so it is refused up front."""

    class Awaiting(Middleware):
        async def after_completion(self, task: Task, *, accepted: bool) -> None:  # type: ignore[override]
            pass

    class AwaitingFailure(Middleware):
        async def after_failure_completion(  # type: ignore[override]
            self, task: Task, exc: BaseException, *, will_retry: bool, accepted: bool
        ) -> None:
            pass

    with pytest.raises(TypeError, match="after_completion must be a plain method"):
        app.add_middleware(Awaiting())
    with pytest.raises(TypeError, match="after_failure_completion must be a plain method"):
        app.add_middleware(AwaitingFailure())


class _Opaque:
    def __reduce__(self) -> Any:
        raise TypeError("an _Opaque does not leave its process")


def test_a_return_value_that_does_not_encode_is_a_failure_to_middleware(app: OmniQ) -> None:
    """Told as what it is (the attempt fails, retried as any error), not as a success
    that is never written."""
    calls: list[tuple[Any, ...]] = []
    app.add_middleware(Recorder("a", calls))

    @app.task(retries=0)
    def opaque() -> Any:
        return _Opaque()

    ref = opaque.delay()
    app.run_worker(burst=True)
    assert app.get_task(ref.id).state.value == "dead"  # (no retry left)
    assert [c[1:] for c in calls[1:]] == [
        ("before_run", opaque.name, {"x-a": "1"}),
        ("on_failure", opaque.name, "SerializationError", False),
        ("after_failure_completion", opaque.name, "SerializationError", False, True),
    ]


def test_a_plugin_contributes_middleware_once_per_app(tmp_path: Path) -> None:
    seen: list[Any] = []
    calls: list[tuple[Any, ...]] = []

    class Plugin:
        @hookimpl
        def omniq_middleware(self, app: Any) -> Middleware:
            seen.append(app)
            return Recorder("plugin", calls)

    register_plugin(Plugin(), "test-middleware-plugin")
    try:
        app = OmniQ(task_queue=f"sqlite:///{tmp_path / 'omniq.db'}")
        app.add_middleware(Recorder("app", calls))

        @app.task
        def work() -> int:
            return 1

        work.delay()
        work.delay()
        app.run_worker(burst=True)
        app.close()
    finally:
        registry.unregister_plugin("test-middleware-plugin")
    assert seen == [app.aio]  # once, at app creation, not per task
    assert [c[:2] for c in calls[:2]] == [("plugin", "before_enqueue"), ("app", "before_enqueue")]
    assert sum(1 for c in calls if c[1] == "after_success") == 4


def test_no_middleware_means_no_chain_in_the_worker(app: OmniQ) -> None:
    assert not app.aio.middleware
    assert Worker(app.aio)._mw is None


def test_each_schedule_firing_passes_before_enqueue(app: OmniQ) -> None:
    calls: list[tuple[Any, ...]] = []
    app.add_middleware(Recorder("a", calls))

    @app.task
    def tick() -> None:
        pass

    app.schedule(tick, interval=3600, start_at=0)  # due at once
    [fired] = app.run_due_schedules()
    assert fired.headers == {"x-a": "1"}
    assert calls == [("a", "before_enqueue", tick.name)]


def test_a_stopped_attempt_ends_with_on_failure(tmp_path: Path) -> None:
    """A body stopped mid-run (here: the worker stops at once) still closes what
    before_run opened: on_failure gets the cancellation, and the task runs again."""
    calls: list[tuple[Any, ...]] = []

    async def scenario() -> None:
        app = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path / 'omniq.db'}")
        app.add_middleware(Recorder("a", calls))
        started = asyncio.Event()

        @app.task
        async def hang() -> None:
            started.set()
            await asyncio.sleep(60)

        await hang.delay()
        worker = app.worker(grace_period=0)
        running = asyncio.create_task(worker.run(install_signals=False))
        await asyncio.wait_for(started.wait(), 10)
        worker.request_stop("test", force=True)
        await asyncio.wait_for(running, 10)
        await app.close()

    asyncio.run(scenario())
    assert [c[1:] for c in calls[1:]] == [
        ("before_run", calls[0][2], {"x-a": "1"}),
        ("on_failure", calls[0][2], "CancelledError", True),
    ]
