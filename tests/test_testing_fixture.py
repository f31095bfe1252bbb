"""The pytest fixtures for testing an application's own tasks, used the way a user would
(the plugin is installed with omniq-core through its ``pytest11`` entry point)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from omniq import AsyncOmniQ, OmniQ, Retry
from omniq.errors import DependencyFailedError
from omniq.models import EventType, TaskState
from omniq.testing import JumpClock, run_queued, use_stores

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_five_tasks_run_to_completion_in_the_test(omniq_app: AsyncOmniQ) -> None:
    @omniq_app.task
    async def square(x: int) -> int:
        return x * x

    refs = [await square.delay(i) for i in range(5)]
    counts = await run_queued(omniq_app)
    assert counts["succeeded"] == 5
    assert [await omniq_app.get_result(r, timeout=1) for r in refs] == [0, 1, 4, 9, 16]


async def test_retries_wait_on_the_jumping_clock_not_for_real(
    omniq_app: AsyncOmniQ, omniq_clock: JumpClock
) -> None:
    calls: list[float] = []

    @omniq_app.task(retries=3, retry_backoff=60, retry_jitter=False, retry_on=ConnectionError)
    async def flaky() -> str:
        calls.append(time.time())
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    real_start = time.monotonic()
    ref = await flaky.delay()
    counts = await run_queued(omniq_app, clock=omniq_clock)
    assert await omniq_app.get_result(ref, timeout=1) == "up"
    assert counts == Counter({"retried": 2, "succeeded": 1})
    assert calls[1] - calls[0] >= 60 and calls[2] - calls[1] >= 120, "the backoff was kept"
    assert omniq_clock.offset > 170 and time.monotonic() - real_start < 60, "...on the clock"
    delays = [
        e.detail["delay"]
        for e in await omniq_app.events(task_id=ref.id)
        if e.type is EventType.RETRYING
    ]
    assert delays == [60.0, 120.0]


async def test_errors_and_dependencies_behave_as_on_a_worker(
    omniq_app: AsyncOmniQ, omniq_clock: JumpClock
) -> None:
    @omniq_app.task(retries=2, dont_retry_on=ValueError)
    def parse(text: str) -> int:
        return int(text)

    @omniq_app.task
    def report(n: int) -> str:
        return f"report {n}"

    good = await parse.delay("7")
    after_good = await report.apply((7,), depends_on=[good])
    bad = await parse.delay("seven")
    after_bad = await report.apply((0,), depends_on=[bad])
    later = await report.apply((1,), delay=3600)
    await run_queued(omniq_app, clock=omniq_clock)
    assert await omniq_app.get_result(after_good, timeout=1) == "report 7"
    with pytest.raises(ValueError, match="invalid literal"):
        await omniq_app.get_result(bad, timeout=1)
    assert (await omniq_app.get_task(bad.id)).attempts == 1, "ValueError is not retried"
    cancelled = await omniq_app.get_task(after_bad.id)
    assert cancelled.state is TaskState.CANCELLED and cancelled.error is not None
    assert cancelled.error.type == DependencyFailedError.__name__
    assert await omniq_app.get_result(later, timeout=1) == "report 1", "the delay was jumped"


async def test_a_task_asking_to_retry_forever_is_reported(
    omniq_app: AsyncOmniQ, omniq_clock: JumpClock
) -> None:
    @omniq_app.task(retries=10**6)
    def never() -> None:
        raise Retry(delay=1, reason="not yet")

    await never.delay()
    with pytest.raises(RuntimeError, match="still active after 5 rounds"):
        await run_queued(omniq_app, clock=omniq_clock, max_rounds=5)


async def test_without_a_clock_a_delayed_task_is_reported_not_waited_for(
    omniq_app: AsyncOmniQ,
) -> None:
    @omniq_app.task
    def later() -> None:
        return None

    ref = await later.apply(delay=3600)
    with pytest.raises(RuntimeError, match="without a JumpClock"):
        await run_queued(omniq_app)
    assert (await omniq_app.get_task(ref.id)).state is TaskState.SCHEDULED


def test_a_sync_app_and_a_project_app_handed_over(omniq_store_url: str) -> None:
    project = OmniQ(task_queue="sqlite:////nonexistent/never-opened.db")
    own = project.aio.task_queue

    @project.task
    def greet(name: str) -> str:
        return f"hello {name}"

    with use_stores(project, omniq_store_url) as app, JumpClock() as clock:
        assert app is project
        ref = greet.delay("tests")
        assert run_queued(project, clock=clock)["succeeded"] == 1
        assert project.get_result(ref, timeout=1) == "hello tests"
    assert project.aio.task_queue is own, "the project's stores are back"
    project.close()
