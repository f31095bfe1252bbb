"""``get_result`` raises a failed task's exception as it was raised: built again from the
arguments the worker recorded (SQLite stores, a real worker), else TaskFailedError with
the type name and the message intact; records without arguments still read."""

from __future__ import annotations

import errno
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, ClassVar

import anyio
import msgspec
import pytest

from omniq import AsyncOmniQ, Retry
from omniq.errors import TaskFailedError, TaskNotFoundError
from omniq.models import ErrorInfo, TaskResult, TaskState
from omniq.retries import asks_retry
from omniq.testing.services import require_service

pytestmark = pytest.mark.anyio

POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


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


class QuotaExceeded(Exception):
    """Two required arguments: ``cls(message)`` cannot build it."""

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(user, limit)
        self.user, self.limit = user, limit


class RateLimited(Retry):
    """A user's Retry: its constructor is Retry's (delay first)."""


class Holder(Exception):
    """Built from an object; its second argument has a default."""

    def __init__(self, thing: object, code: int = 0) -> None:
        super().__init__(thing, code)


class Thing:
    """An object: not a value a store keeps (pickled into the task's call)."""

    def __repr__(self) -> str:
        return "<thing>"


class LegacyErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """ErrorInfo as older releases define it (no ``args``)."""

    type: str
    message: str
    traceback: str = ""
    module: str = ""


def fails(blob: bytes) -> None:
    raise pickle.loads(blob)


async def raised_by_task(app: AsyncOmniQ, exc: BaseException) -> tuple[str, BaseException]:
    """Run a task that raises ``exc`` (pickled into its call); its id and the error that
    ``get_result`` raises."""
    task = app.tasks.get("fails") or app.task(name="fails", retries=0)(fails)
    ref = await task.delay(pickle.dumps(exc))
    await app.run_worker(burst=True)
    return ref.id, await error_of(app, ref.id)


async def error_of(app: AsyncOmniQ, task_id: str) -> Exception:
    """The exception ``get_result`` raises for ``task_id`` (each test checks its type)."""
    try:
        value = await app.get_result(task_id, timeout=5)
    except Exception as exc:
        return exc
    raise AssertionError(f"task {task_id} gave a value: {value!r}")


async def test_a_key_error_says_what_it_said(aapp: AsyncOmniQ) -> None:
    """str(KeyError) quotes its key: built from its message it was quoted twice."""
    original = KeyError("x")
    _, error = await raised_by_task(aapp, original)
    assert type(error) is KeyError
    assert (str(error), error.args) == (str(original), ("x",))


async def test_an_os_error_keeps_its_errno_and_strerror(aapp: AsyncOmniQ) -> None:
    original = FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere")
    _, error = await raised_by_task(aapp, original)
    assert type(error) is FileNotFoundError
    assert isinstance(error, OSError)
    assert (error.errno, error.strerror, error.filename) == (
        errno.ENOENT,
        original.strerror,
        "/nowhere",
    )
    assert str(error) == str(original)


async def test_an_exception_with_two_arguments_is_built_with_both(aapp: AsyncOmniQ) -> None:
    _, error = await raised_by_task(aapp, QuotaExceeded("alice", 10))
    assert type(error) is QuotaExceeded, f"got {type(error).__name__}: {error}"
    assert (error.user, error.limit, error.args) == ("alice", 10, ("alice", 10))


async def test_a_retry_subclass_comes_back_as_itself_and_not_as_a_request(
    aapp: AsyncOmniQ,
) -> None:
    """A plain Retry was rebuilt; a subclass (Retry's constructor, delay first) was
    given its message as delay and became TaskFailedError."""

    @aapp.task(retries=0)
    def limited() -> None:
        raise RateLimited(delay=7, reason="api busy")

    ref = await limited.delay()
    await aapp.run_worker(burst=True)
    with pytest.raises(RateLimited) as caught:
        await aapp.get_result(ref, timeout=5)
    error = caught.value
    assert (str(error), error.reason, error.delay) == ("api busy", "api busy", 7.0)
    assert error.raised_by == ref.id and not asks_retry(error)


async def test_an_omniq_error_with_its_own_constructor_keeps_its_message(
    aapp: AsyncOmniQ,
) -> None:
    """TaskNotFoundError takes a task id, not a message: built from its message it named
    a task called by that whole message. Pickle (a process pool) builds it the same way."""
    original = TaskNotFoundError("abc", " (deleted)")
    _, error = await raised_by_task(aapp, original)
    assert type(error) is TaskNotFoundError, f"got {type(error).__name__}: {error}"
    assert (str(error), error.task_id) == ("no task with id 'abc' (deleted)", "abc")
    copy = pickle.loads(pickle.dumps(original))
    assert (str(copy), copy.task_id) == (str(original), "abc")


async def test_an_argument_that_cannot_be_recorded_falls_back_to_the_message(
    aapp: AsyncOmniQ,
) -> None:
    """An object is not recorded (no store keeps it as it is). The exception is then
    built from its message only when that gives the same message; otherwise (here its
    message became ``thing`` and a made-up ``code`` was added) TaskFailedError names
    the type and carries the message as it was."""
    thing = Thing()
    task_id, error = await raised_by_task(aapp, Holder(thing, 7))
    assert type(error) is TaskFailedError, f"got {type(error).__name__}: {error}"
    assert error.error_type == "Holder"
    assert str(error) == f"task {task_id} failed: Holder: (<thing>, 7)"
    task = await aapp.get_task(task_id)
    assert task.error is not None and task.error.args is None

    _, error = await raised_by_task(aapp, ValueError(thing))
    assert type(error) is ValueError and str(error) == "<thing>"


async def test_a_record_without_args_reads_as_before_or_as_its_message(
    aapp: AsyncOmniQ,
) -> None:
    """A record an older worker wrote has no ``args``: it is byte for byte what this
    release writes when it has none, reads with them absent, and an older reader skips
    them in a new record. Such a record is built from its message when that says the
    same (a Retry subclass, by its reason), else it is TaskFailedError with the message
    (a KeyError once came back quoted twice)."""
    old = LegacyErrorInfo(type="KeyError", message="'x'", module="builtins")
    new = ErrorInfo(type="KeyError", message="'x'", module="builtins")
    for codec in (msgspec.json, msgspec.msgpack):
        assert codec.encode(new) == codec.encode(old)
        assert codec.decode(codec.encode(old), type=ErrorInfo) == new
        recorded = ErrorInfo(type="KeyError", message="'x'", module="builtins", args=("x",))
        assert codec.decode(codec.encode(recorded), type=LegacyErrorInfo) == old

    records: dict[str, Any] = {
        "key": old,
        "retry": LegacyErrorInfo(type="RateLimited", message="busy", module=__name__),
        "value": LegacyErrorInfo(type="ValueError", message="bad", module="builtins"),
    }
    for task_id, legacy in records.items():
        info = msgspec.msgpack.decode(msgspec.msgpack.encode(legacy), type=ErrorInfo)
        await aapp.result_storage.set(
            TaskResult(task_id=task_id, state=TaskState.FAILED, error=info, finished_at=1.0)
        )
    errors = {task_id: await error_of(aapp, task_id) for task_id in records}
    key, retry, value = errors["key"], errors["retry"], errors["value"]
    assert type(key) is TaskFailedError and str(key) == "task key failed: KeyError: 'x'"
    assert type(retry) is RateLimited, f"got {type(retry).__name__}: {retry}"
    assert (retry.reason, retry.raised_by) == ("busy", "retry")
    assert type(value) is ValueError and str(value) == "bad"


class Recorder(Exception):
    """Remembers every call of its class (what a reader passed it)."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, *args: Any) -> None:
        Recorder.calls.append(args)
        super().__init__(*args)


async def test_a_reader_passes_no_arguments_a_worker_would_not_have_recorded(
    aapp: AsyncOmniQ,
) -> None:
    """No HMAC covers a result's error: a record written into the store behind the app's
    back is held to the worker's rule (plain values, at most ARGS_MAX_BYTES of JSON,
    four levels deep). Arguments past it are not passed to the class; the exception is
    built from its message, as from a record without them."""
    deep: Any = [1]
    for _ in range(8):
        deep = [deep]
    records = {"large": ("x" * 4000, 1), "deep": (deep,)}
    for task_id, args in records.items():
        message = str(Recorder(*args))
        info = ErrorInfo(type="Recorder", message=message, module=__name__, args=args)
        await aapp.result_storage.set(
            TaskResult(task_id=task_id, state=TaskState.FAILED, error=info, finished_at=1.0)
        )
    Recorder.calls.clear()
    for task_id in records:
        error = await error_of(aapp, task_id)
        assert type(error) is Recorder and error.args == (str(error),)
    passed = [call for call in Recorder.calls if call in records.values()]
    assert passed == [], f"the reader passed {len(passed)} unrecordable argument tuples"


async def test_a_task_failed_error_let_through_on_a_process_pool_stays_itself(
    aapp: AsyncOmniQ,
) -> None:
    """A task that lets get_result's TaskFailedError through, run in a child process, is
    pickled back to the worker: built again from its whole message it failed to unpickle
    and the task was recorded as a TypeError, the upstream failure lost."""

    @aapp.task(retries=0)
    def lets_it_through() -> None:
        raise TaskFailedError("upstream", "failed", "QuotaExceeded", "alice", "tb")

    ref = await lets_it_through.delay()
    await aapp.run_worker(pool="process", concurrency=1, burst=True)
    task = await aapp.get_task(ref.id)
    assert task.error is not None
    assert (task.error.type, task.error.message) == (
        "TaskFailedError",
        "task upstream failed: QuotaExceeded: alice",
    )
    error = await error_of(aapp, ref.id)
    assert type(error) is TaskFailedError
    assert (error.task_id, error.error_type, error.error_message) == (
        "upstream",
        "QuotaExceeded",
        "alice",
    )


async def test_an_undecodable_file_name_does_not_stop_the_failure_being_recorded(
    aapp: AsyncOmniQ,
) -> None:
    """``os.fsdecode`` gives an undecodable byte as a lone surrogate, which no store's
    encoder takes: recording it as an argument raised in the worker's failure path and
    the task was never finished (an internal error, the task left leased)."""
    name = os.fsdecode(b"/nowhere/\xff")
    with anyio.fail_after(60):  # (a guard: the task was never finished)
        _, error = await raised_by_task(
            aapp, FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        )
    assert type(error) is FileNotFoundError
    assert str(error) == "[Errno 2] No such file or directory: '/nowhere/\\udcff'"


class Measured(Exception):
    """Built from numbers, which its message shows."""


async def test_recorded_arguments_read_back_equal_from_a_postgres_task_row() -> None:
    """jsonb keeps a number as numeric: a float written 1e16 (and up) came back an int
    and -0.0 as 0.0, so the arguments read back were not those raised (a PostgreSQL
    task's error is its row's jsonb). Such floats are not recorded."""
    require_service("PostgreSQL", POSTGRES_URL)
    schema = f"t{uuid.uuid4().hex[:12]}"
    queue = {"backend": "postgres", "url": POSTGRES_URL, "schema": schema, "max_size": 2}
    raised = Measured(1e16, -0.0, 0.5, 2**63)
    try:
        async with AsyncOmniQ(task_queue=queue) as app:
            task_id, error = await raised_by_task(app, raised)
            assert type(error) is Measured and str(error) == str(raised)
            task = await app.get_task(task_id)
            assert task.error is not None
            assert task.error.args is None or repr(task.error.args) == repr(raised.args)
    finally:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


class Incomparable:
    """An argument whose ``==`` raises (as a pandas Series' truth value does)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing this")

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return "incomparable"


async def test_an_argument_whose_equality_raises_does_not_stop_the_failure_being_recorded(
    aapp: AsyncOmniQ,
) -> None:
    """The arguments were compared with ``(message,)`` before being checked as plain
    values: a user's object's ``__eq__`` raised in the worker's failure path and the
    task was never finished."""
    with anyio.fail_after(60):  # (a guard: the task was never finished)
        _, error = await raised_by_task(aapp, ValueError(Incomparable()))
    assert type(error) is ValueError and str(error) == "incomparable"
