"""Retries chosen by the task, end to end: a real worker on SQLite files decides, the
store keeps the eta, and the events say why and how long."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Union

import pytest

from omniq import AsyncOmniQ, Retry
from omniq.models import EventType, Task, TaskState
from omniq.testing import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def aapp(tmp_path: Path):
    async with AsyncOmniQ(
        task_queue=f"sqlite:///{tmp_path}/tasks.db",
        result_storage=f"sqlite:///{tmp_path}/results.db",
        event_storage=f"sqlite:///{tmp_path}/events.db",
    ) as app:
        yield app


async def test_an_exception_outside_retry_on_fails_at_once(aapp: AsyncOmniQ) -> None:
    @aapp.task(retries=3, retry_backoff=0, retry_on=(ConnectionError,))
    def parse(text: str) -> int:
        return int(text)

    ref = await parse.delay("forty-two")
    await aapp.run_worker(burst=True)
    task = await aapp.get_task(ref.id)
    assert (task.state, task.attempts) == (TaskState.DEAD, 1)
    events = await aapp.events(task_id=ref.id)
    assert EventType.RETRYING not in [e.type for e in events]
    [dead] = [e for e in events if e.type is EventType.DEAD]
    assert dead.detail["reason"] == "ValueError is not in retry_on"


async def test_dont_retry_on_wins_and_retry_on_retries(aapp: AsyncOmniQ, tmp_path: Path) -> None:
    marker = tmp_path / "calls"

    @aapp.task(
        retries=3,
        retry_backoff=0,
        retry_on=(OSError,),
        dont_retry_on=(PermissionError,),
    )
    def fetch(deny: bool) -> str:
        n = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(n))
        if deny:
            raise PermissionError("no access")
        if n < 3:
            raise ConnectionError(f"attempt {n}")
        return "ok"

    denied = await fetch.delay(True)
    await aapp.run_worker(burst=True)
    assert (await aapp.get_task(denied.id)).attempts == 1
    marker.unlink()
    ok = await fetch.delay(False)
    await aapp.run_worker(burst=True)
    assert await aapp.get_result(ok, timeout=5) == "ok"
    assert (await aapp.get_task(ok.id)).attempts == 3


async def test_retry_raised_by_the_task_records_reason_and_delay(
    aapp: AsyncOmniQ, tmp_path: Path
) -> None:
    marker = tmp_path / "asked"

    @aapp.task(retries=2, retry_on=(ConnectionError,))
    def poll() -> str:
        if not marker.exists():
            marker.write_text("1")
            raise Retry(delay=0, reason="not ready yet")
        return "ready"

    ref = await poll.delay()
    await aapp.run_worker(burst=True)
    assert await aapp.get_result(ref, timeout=5) == "ready"
    events = await aapp.events(task_id=ref.id)
    types = [e.type for e in events]
    assert EventType.FAILED not in types, "asking for a retry is not a failure"
    [retrying] = [e for e in events if e.type is EventType.RETRYING]
    assert retrying.detail["reason"] == "not ready yet"
    assert retrying.detail["delay"] == 0 and retrying.detail["attempt"] == 1
    assert (await aapp.get_task(ref.id)).attempts == 2, "the Retry counted as an attempt"


async def test_the_delay_recorded_is_the_one_the_task_waits(aapp: AsyncOmniQ) -> None:
    @aapp.task(retries=1, retry_schedule=[120])
    def down() -> None:
        raise ConnectionError("refused")

    ref = await down.delay()
    worker = aapp.worker(pool="async")
    running = asyncio.create_task(worker.run(install_signals=False))

    async def retrying() -> Task | None:
        task = await aapp.get_task(ref.id)
        return task if task.state is TaskState.RETRYING else None

    task = await eventually(retrying, "the failed attempt was never set to retry")
    worker.request_stop("test")
    await running
    assert task.eta is not None
    [retrying] = [e for e in await aapp.events(task_id=ref.id) if e.type is EventType.RETRYING]
    assert retrying.detail["delay"] == 120.0
    assert retrying.detail["reason"] == "ConnectionError: refused"
    assert task.eta == pytest.approx(retrying.timestamp + 120.0, abs=0.5)


async def test_retry_used_up_fails_with_the_retry_as_error(aapp: AsyncOmniQ) -> None:
    @aapp.task(retries=1)
    def impatient() -> None:
        raise Retry(delay=0, reason="still busy")

    ref = await impatient.delay()
    await aapp.run_worker(burst=True)
    task = await aapp.get_task(ref.id)
    assert (task.state, task.attempts) == (TaskState.DEAD, 2)
    assert task.error is not None and (task.error.type, task.error.message) == (
        "Retry",
        "still busy",
    )


async def test_get_result_raises_a_used_up_retry_as_retry_like_any_error(
    aapp: AsyncOmniQ,
) -> None:
    """The Retry is rebuilt as its own type (omniq.errors is always imported), with its
    delay and reason (recorded as its arguments) and the task named in its notes, as a
    ValueError would be; its constructor does not take a message, which once made it a
    TaskFailedError."""

    @aapp.task(retries=1)
    def impatient() -> None:
        raise Retry(delay=0, reason="still busy")

    @aapp.task(retries=0)
    def silent() -> None:
        raise Retry(delay=5)

    @aapp.task(retries=0)
    def plain() -> None:
        raise ValueError("bad value")

    refs = [await f.delay() for f in (impatient, silent, plain)]
    await aapp.run_worker(burst=True)
    errors: list[BaseException] = []
    for ref in refs:
        try:
            await aapp.get_result(ref, timeout=5)
        except Exception as exc:  # (each its own type: compared below)
            errors.append(exc)
    assert len(errors) == 3, "a task that failed gave a value"
    asked, bare, other = errors
    assert type(other) is ValueError and str(other) == "bad value"
    assert type(asked) is Retry, f"got {type(asked).__name__}: {asked}"
    assert (str(asked), asked.reason, asked.delay) == ("still busy", "still busy", 0.0)
    assert type(bare) is Retry and (str(bare), bare.delay) == ("retry requested", 5.0)
    for ref, error in zip(refs, errors, strict=True):
        notes = getattr(error, "__notes__", [])
        assert notes and notes[0] == f"raised by task {ref.id} (failed)"
        assert "Traceback" in notes[1]


async def test_a_task_that_lets_a_read_retry_through_fails_as_it_would_on_any_error(
    aapp: AsyncOmniQ,
) -> None:
    """A Retry that ``get_result`` rebuilt is the other task's failure: a task reading it
    and letting it through is not retried for it past its ``retry_on`` (it was: three
    attempts, each taken as its own request, and it ended with that task's Retry). Kept
    through pickling, as a process pool sends it back."""
    import pickle

    attempts: list[int] = []

    @aapp.task(retries=0)
    def gives_up() -> None:
        raise Retry(delay=0, reason="busy")

    @aapp.task(retries=2, retry_backoff=0, retry_on=(ConnectionError,))
    async def reads(task_id: str) -> None:
        attempts.append(1)
        await aapp.get_result(task_id, timeout=5)

    upstream = await gives_up.delay()
    await aapp.run_worker(burst=True)
    ref = await reads.delay(upstream.id)
    await aapp.run_worker(burst=True)
    task = await aapp.get_task(ref.id)
    assert task is not None
    assert (task.state, task.attempts, len(attempts)) == (TaskState.DEAD, 1, 1), (
        f"{len(attempts)} attempts for another task's Retry, ended {task.state}"
    )
    events = await aapp.events(task_id=ref.id)
    assert EventType.RETRYING not in [e.type for e in events]
    with pytest.raises(Retry) as caught:
        await aapp.get_result(upstream, timeout=5)
    assert caught.value.raised_by == upstream.id
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.raised_by, copy.reason, copy.delay) == (upstream.id, "busy", 0.0)


def test_task_options_are_checked_at_registration(tmp_path: Path) -> None:
    app = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/tasks.db")
    with pytest.raises(ValueError, match="retry_on must be an exception class"):
        app.task(retry_on="ConnectionError")(lambda: None)
    with pytest.raises(ValueError, match="not both"):
        app.task(retry_max_delay=5, retry_backoff_max=6)(lambda: None)
    capped = app.task(retry_max_delay=7)(lambda: None)
    assert capped.options.retry_backoff_max == 7.0


@pytest.mark.parametrize("option", ["retry_on", "dont_retry_on"])
def test_exception_filters_take_a_class_union_or_collection(tmp_path: Path, option: str) -> None:
    """Whatever ``isinstance`` would take, and a list or set of classes, normalised to a
    flat tuple; anything else is refused naming the member that is not a class."""
    app = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path}/tasks.db")

    def types(value: object) -> tuple[type[BaseException], ...]:
        fn = app.task(**{option: value})(lambda: None)
        found: tuple[type[BaseException], ...] = getattr(fn.options.retry, option)
        return found

    assert types(OSError) == (OSError,)
    assert types((OSError, KeyError)) == (OSError, KeyError)
    assert types([OSError, KeyError]) == (OSError, KeyError)
    assert types(OSError | KeyError) == (OSError, KeyError)
    assert types(Union[OSError, KeyError]) == (OSError, KeyError)  # noqa: UP007
    assert types((OSError, (KeyError, ValueError | TypeError))) == (
        OSError,
        KeyError,
        ValueError,
        TypeError,
    )
    assert set(types({OSError, KeyError})) == {OSError, KeyError}
    assert types(()) == ()
    for bad, named in [
        ([ValueError, "x"], "'x'"),
        ((ValueError, int), "<class 'int'>"),
        (ValueError("boom"), "ValueError('boom')"),
        ("ValueError", "'ValueError'"),
        ({ValueError: 1}, "{<class 'ValueError'>: 1}"),
        (int | str, "<class 'int'>"),
    ]:
        with pytest.raises(ValueError, match=f"{option} must be") as caught:
            types(bad)
        assert named in str(caught.value), str(caught.value)
