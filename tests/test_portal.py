"""The portal behind the blocking API: what a call returns, raises and cancels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omniq.sync import Portal

REQUEST = contextvars.ContextVar("REQUEST", default="none")


class Interrupted(Exception):
    """What the test's SIGINT handler raises in the waiting thread."""


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal()
    yield portal
    portal.stop()


def _poll(predicate: Any, deadline: float = 10.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_returns_what_the_coroutine_or_the_function_returns(portal: Portal) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert portal.call(double, 21) == 42
    assert portal.call(lambda: double(5)) == 10
    assert portal.call(lambda: "plain") == "plain"  # a function returning no awaitable


def test_an_exception_reaches_the_caller_and_the_loop_goes_on(portal: Portal) -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        portal.call(fail)

    async def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # handed over, not raised on the loop thread
        portal.call(interrupt)
    assert portal.call(asyncio.sleep, 0, "alive") == "alive"


def test_a_call_cancelled_on_the_loop_raises_cancelled_error(portal: Portal) -> None:
    async def cancelled() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    with pytest.raises(concurrent.futures.CancelledError):
        portal.call(cancelled)
    assert portal.call(asyncio.sleep, 0, "alive") == "alive"


def test_the_call_runs_in_a_copy_of_the_callers_context(portal: Portal) -> None:
    async def read() -> str:
        return REQUEST.get()

    token = REQUEST.set("caller's")
    try:
        assert portal.call(read) == "caller's"
    finally:
        REQUEST.reset(token)


def test_an_interrupt_while_waiting_cancels_the_call(portal: Portal) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")
    started, cancelled = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    async def hang() -> None:
        started.set()
        signal.pthread_kill(main, signal.SIGINT)  # as Ctrl-C would
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def on_sigint(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(Interrupted):
            portal.call(hang)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started.is_set()
    assert _poll(cancelled.is_set)
    assert portal.call(asyncio.sleep, 0, "alive") == "alive"


def test_a_call_from_the_loop_thread_is_refused(portal: Portal) -> None:
    async def inner() -> None:
        portal.call(asyncio.sleep, 0)

    with pytest.raises(RuntimeError, match="own loop thread"):
        portal.call(inner)


def test_many_threads_share_one_portal(portal: Portal) -> None:
    async def echo(i: int) -> int:
        await asyncio.sleep(0)
        return i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda i: portal.call(echo, i), range(200))) == list(range(200))


def test_a_wake_up_left_from_an_earlier_call_does_not_end_the_next(portal: Portal) -> None:
    from omniq import sync

    sync._waker().wake()  # as a call interrupted earlier would leave it
    assert portal.call(asyncio.sleep, 0.05, "mine") == "mine"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_share_the_callers_wake_up_socket() -> None:
    from omniq import sync

    parents = sync._waker()
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        os._exit(0 if sync._waker() is not parents else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_thread_without_descriptors_left_waits_on_a_semaphore(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omniq import sync

    def no_descriptors() -> tuple[Any, Any]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(sync, "_socketpair", no_descriptors)
    monkeypatch.setattr(sync, "_wakers", threading.local())
    assert portal.call(asyncio.sleep, 0.01, "waited") == "waited"
    assert sync._waker().fallback is not None
