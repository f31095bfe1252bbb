"""The portal behind the blocking API: what a call returns, raises and cancels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omniq import sync
from omniq.sync import Portal
from omniq.testing import until

REQUEST = contextvars.ContextVar("REQUEST", default="none")


class Interrupted(Exception):
    """What the test's SIGINT handler raises in the waiting thread."""


@pytest.fixture(params=["turns", "run_forever"])
def portal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Portal]:
    """Each test on both ways a caller runs the loop: asyncio's turns written out (a
    plain asyncio loop) and ``run_forever`` (any other loop, or debug mode)."""
    if request.param == "run_forever":
        monkeypatch.setattr(sync, "_runs_asyncio_turns", lambda loop: False)
    portal = Portal()
    yield portal
    portal.stop()


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


def _interrupt_when(started: threading.Event) -> threading.Thread:
    """A thread that sends this process SIGINT, as Ctrl-C would, once ``started`` is set."""

    def send() -> None:
        if started.wait(10):
            time.sleep(0.05)  # the call is asleep on the loop by now, or soon after
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _hang(started: threading.Event, cancelled: threading.Event) -> Any:
    async def hang() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return hang


@pytest.mark.parametrize("busy", [False, True], ids=["loop-free", "loop-held"])
def test_an_interrupt_while_waiting_cancels_the_call(portal: Portal, busy: bool) -> None:
    """A program's own SIGINT handler raises wherever the signal lands: in the caller
    driving the loop (loop free), or waiting for the thread that runs it (loop held)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")
    started, cancelled = threading.Event(), threading.Event()
    release = threading.Event()
    holder = None
    if busy:  # another thread's long call drives the loop: this one is handed over
        holder = threading.Thread(target=portal.call, args=(asyncio.to_thread, release.wait))
        holder.start()
        until(
            lambda: portal._state is not None and portal._state.driver is not None,
            "the holder's call drives the loop",
        )

    def on_sigint(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        sender = _interrupt_when(started)
        with pytest.raises(Interrupted):
            portal.call(_hang(started, cancelled))
        sender.join()
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        if holder is not None:
            holder.join()
    until(cancelled.is_set, "the interrupted call was cancelled")
    assert portal.call(asyncio.sleep, 0, "alive") == "alive"


def test_ctrl_c_while_the_caller_drives_the_loop_cancels_the_call_and_raises(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Python's default handler, Ctrl-C cancels the call's task (it is not raised
    inside the loop, where it could lose a callback) and the caller gets
    ``KeyboardInterrupt``; the loop and its other tasks go on."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")
    if signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, sync._sigint.handle):
        pytest.skip("another SIGINT handler is installed")
    # The portal's thread must not take the loop back between the two calls (on a busy
    # machine 5 ms can pass): the second call is then surely driven by this thread.
    monkeypatch.setattr(sync, "IDLE", 60.0)
    ticks = portal.call(_start_ticking)
    # a program (or an earlier test) that put Python's default handler back after the
    # portal's was installed: the next drive installs it again
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started, cancelled = threading.Event(), threading.Event()
    sender = _interrupt_when(started)
    try:
        with pytest.raises(KeyboardInterrupt):
            portal.call(_hang(started, cancelled))
        sender.join()
        assert signal.getsignal(signal.SIGINT) is sync._sigint.handle
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert cancelled.is_set()  # the caller saw the call end before it raised
    before = ticks[0]
    # the background task survived: it runs while this thread drives the loop again
    until(
        lambda: portal.call(asyncio.sleep, 0.01, True) and ticks[0] > before + 2,
        "the background task ticks again",
    )
    assert portal.call(asyncio.sleep, 0, "alive") == "alive"


async def _start_ticking() -> list[int]:
    """A background task on the portal's loop counting up every millisecond."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.001)
            ticks[0] += 1

    _background.add(asyncio.get_running_loop().create_task(tick()))
    return ticks


_background: set[asyncio.Task[None]] = set()


def test_what_a_driven_call_leaves_for_the_next_turn_runs_before_it_returns(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A callback the call's last step schedules (a client's buffered write) runs before
    the caller gets the result, not when whoever runs the loop next does."""
    monkeypatch.setattr(sync, "IDLE", 60.0)  # every call is driven by this thread
    ran: list[int] = []

    async def leave(i: int) -> int:
        asyncio.get_running_loop().call_soon(ran.append, i)
        return i

    for i in range(20):
        assert portal.call(leave, i) == i
        assert ran == list(range(i + 1))


def test_timers_and_io_go_on_while_calls_done_in_their_first_step_come_back_to_back(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each driven call turns the loop at least once, even one that its first step ends
    (run without a turn): the portal's thread never takes the loop back here."""
    monkeypatch.setattr(sync, "IDLE", 60.0)
    ticks = portal.call(_start_ticking)
    before = ticks[0]

    async def nothing() -> None:
        pass

    end = time.monotonic() + 10
    while ticks[0] < before + 5 and time.monotonic() < end:
        portal.call(nothing)
    assert ticks[0] >= before + 5


def test_back_to_back_calls_leave_other_threads_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls that their first step ends, made back to back, let the process's other
    threads run: each call's turn lets the GIL go (a turn only once per 1 ms, tried,
    let a ``time.sleep(0.001)`` loop wake ~10 times a second, against ~800)."""
    monkeypatch.setattr(sync, "IDLE", 60.0)  # every call is driven by this thread
    portal = Portal()
    ticks, done = [0], threading.Event()

    def sleeper() -> None:
        while not done.is_set():
            time.sleep(0.001)
            ticks[0] += 1

    async def nothing() -> None:
        pass

    thread = threading.Thread(target=sleeper, daemon=True)
    try:
        portal.call(nothing)
        thread.start()
        end = time.monotonic() + 3  # ~0.15 s when the GIL goes round; ~10 s when not
        while ticks[0] < 100 and time.monotonic() < end:
            portal.call(nothing)
        assert ticks[0] >= 100
    finally:
        done.set()
        thread.join(5)
        portal.stop()


def test_a_task_factory_set_on_the_portals_loop_makes_the_calls_tasks(portal: Portal) -> None:
    """Without a factory a driven call's task is made as ``create_task`` makes it;
    with one, the factory makes it."""
    made: list[bool] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(True)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def install() -> None:
        asyncio.get_running_loop().set_task_factory(factory)

    async def name() -> str:
        task = asyncio.current_task()
        assert task is not None
        return task.get_name()

    assert portal.call(name) == sync._CALL_NAME
    portal.call(install)
    assert portal.call(name) == sync._CALL_NAME
    assert made == [True]


def test_a_driven_call_runs_on_a_running_loop_and_leaves_the_thread_as_it_was(
    portal: Portal,
) -> None:
    async def look() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        agen_hooks = sys.get_asyncgen_hooks()
        return loop.is_running(), agen_hooks.firstiter == loop._asyncgen_firstiter_hook  # type: ignore[attr-defined]

    def firstiter(agen: Any) -> None:
        pass

    before = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter, None)
    try:
        assert portal.call(look) == (True, True)
        assert sys.get_asyncgen_hooks() == (firstiter, None)
        assert asyncio._get_running_loop() is None
    finally:
        sys.set_asyncgen_hooks(*before)


async def _tracking_depth() -> int:
    return sys.get_coroutine_origin_tracking_depth()


def test_debug_mode_turned_on_during_a_call_is_run_forevers_and_leaves_the_thread(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``set_debug(True)`` on the running loop turns coroutine origin tracking on in the
    thread that runs it; the caller's thread has it off again once its call returns."""
    monkeypatch.setattr(sync, "IDLE", 60.0)  # every call is driven by this thread
    before = sys.get_coroutine_origin_tracking_depth()

    async def debug(on: bool) -> int:
        asyncio.get_running_loop().set_debug(on)
        await asyncio.sleep(0)  # (set_debug on a running loop: its tracking, at its next turn)
        return sys.get_coroutine_origin_tracking_depth()

    try:
        assert portal.call(debug, True) > 0
        assert sys.get_coroutine_origin_tracking_depth() == before
        assert portal.call(_tracking_depth) > 0  # driven in debug mode: tracked
        assert sys.get_coroutine_origin_tracking_depth() == before
    finally:
        portal.call(debug, False)
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_only_a_plain_asyncio_loop_out_of_debug_mode_has_its_turns_run_by_the_portal() -> None:
    class OwnRunForever(asyncio.SelectorEventLoop):
        def run_forever(self) -> None:
            super().run_forever()

    plain, debug, own = asyncio.new_event_loop(), asyncio.new_event_loop(), OwnRunForever()
    plain.set_debug(False)  # (PYTHONASYNCIODEBUG turns it on for every new loop)
    debug.set_debug(True)
    try:
        assert sync._runs_asyncio_turns(plain)
        assert not sync._runs_asyncio_turns(debug) and not sync._runs_asyncio_turns(own)
    finally:
        for loop in (plain, debug, own):
            loop.close()


def test_background_tasks_run_between_calls(portal: Portal) -> None:
    """When no call comes, the portal's thread takes the loop back and runs it."""
    ticks = portal.call(_start_ticking)
    before = ticks[0]
    end = time.monotonic() + 10
    while ticks[0] < before + 5 and time.monotonic() < end:
        time.sleep(0.01)  # no call: nobody but the portal's thread can run the loop
    assert ticks[0] >= before + 5
    assert portal.call(asyncio.sleep, 0, "again") == "again"  # handed over, then back


def test_the_caller_drives_the_loop_when_it_is_free(portal: Portal) -> None:
    async def where() -> int:
        return threading.get_ident()

    portal.call(asyncio.sleep, 0)
    # calls close together: the loop is free for each, so the caller runs it
    assert any(portal.call(where) == threading.get_ident() for _ in range(50))


def test_a_call_from_the_loop_thread_is_refused(portal: Portal) -> None:
    async def inner() -> None:
        portal.call(asyncio.sleep, 0)

    with pytest.raises(RuntimeError, match="thread that runs the app's event loop"):
        portal.call(inner)


def test_many_threads_share_one_portal(portal: Portal) -> None:
    threads: set[int] = set()

    async def echo(i: int) -> int:
        threads.add(threading.get_ident())
        await asyncio.sleep(0.001 * (i % 3))
        return i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda i: portal.call(echo, i), range(400))) == list(range(400))
    state = portal._state
    assert state is not None and state.queued == 0
    # the last served caller can wake before the portal's thread has left run_forever
    until(lambda: not state.handing_back, "the portal's thread left run_forever")
    assert portal.call(echo, 7) == 7


def test_a_long_call_driven_by_one_thread_serves_the_others(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread's long call holds the loop; the others' calls are run by it."""
    monkeypatch.setattr(sync, "IDLE", 60.0)  # the portal's thread never takes the loop first
    release = threading.Event()

    async def hold() -> str:
        await asyncio.to_thread(release.wait)
        return "held"

    holder = concurrent.futures.ThreadPoolExecutor(1).submit(portal.call, hold)
    until(
        lambda: portal._state is not None and portal._state.driver not in (None, -1),
        "the holder's call drives the loop",
    )
    assert portal.call(asyncio.sleep, 0, "served") == "served"
    release.set()
    assert holder.result(timeout=10) == "held"


def test_stop_ends_a_call_another_thread_drives(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "IDLE", 60.0)  # the portal's thread never takes the loop first
    holder = concurrent.futures.ThreadPoolExecutor(1).submit(portal.call, asyncio.sleep, 60)
    until(
        lambda: portal._state is not None and portal._state.driver not in (None, -1),
        "the holder's call drives the loop",
    )
    state = portal._state
    portal.stop()
    with pytest.raises(concurrent.futures.CancelledError):
        holder.result(timeout=10)
    assert state is not None and state.loop.is_closed() and not state.thread.is_alive()
    assert portal.call(asyncio.sleep, 0, "new loop") == "new loop"


def test_a_wake_up_left_from_an_earlier_call_does_not_end_the_next(portal: Portal) -> None:
    from omniq import sync

    sync._waker().wake()  # as a call interrupted earlier would leave it
    assert portal.call(asyncio.sleep, 0.05, "mine") == "mine"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_runs_a_loop_of_its_own(portal: Portal) -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    parents = portal.call(loop_id)
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        ok = False
        try:
            ok = portal._state is None and portal.call(loop_id) != parents
            portal.stop()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert portal.call(loop_id) == parents


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
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


def test_close_ends_the_loop_and_its_thread_after_calls_the_caller_drove(tmp_path: Any) -> None:
    from omniq import OmniQ

    url = f"sqlite:///{tmp_path}/close.db"
    app = OmniQ(task_queue=url, result_storage=url, event_storage=url)
    noop = app.task(name="noop")(_noop)
    ref = noop.delay()
    assert app.get_task(ref.id) is not None
    state = app._portal._state
    assert state is not None
    app.close()
    assert state.loop.is_closed() and not state.thread.is_alive()


def _noop() -> None:
    pass


def test_a_facade_left_open_is_closed_at_exit_and_the_process_ends(tmp_path: Any) -> None:
    """Stores opened by calls the main thread drove are closed by the finalizer, and
    their threads (aiosqlite's) do not hold the exit up."""
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path}/exit.db"
    script = textwrap.dedent(f"""
        from omniq import OmniQ
        app = OmniQ(task_queue={url!r}, result_storage={url!r}, event_storage={url!r})
        closer = app.aio.close
        async def close():
            await closer()
            print("closed", flush=True)
        app.aio.close = close
        app.task(name="noop")(print).delay()
        print("enqueued", flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["enqueued", "closed"]
    assert "destroyed but it is pending" not in done.stderr


def test_a_facade_collected_while_its_method_runs_neither_hangs_nor_closes_under_it(
    tmp_path: Any,
) -> None:
    """A facade in a reference cycle, dropped while one of its blocking methods is kept,
    is freed by a collection wherever one runs: also in the middle of that method's call,
    while this thread drives the facade's loop. Its finalizer waited there, for ever, for
    a loop only this thread runs; elsewhere it closed the app under the kept method (a
    call then raised that the portal was stopped). The app is closed once the method is
    gone too, without a wait in the collecting thread. Real collections, moved to each
    step of the call in turn by generation 0's threshold."""
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path}/gc.db"
    script = textwrap.dedent(f"""
        import faulthandler, gc, threading, time
        from omniq import OmniQ
        faulthandler.dump_traceback_later(60, exit=True)
        for n in range(120):
            gc.disable()
            app = OmniQ(task_queue={url!r})
            app.list_tasks()
            listed = app.list_tasks  # a blocking method kept: the app must stay open
            app.me = app  # a cycle: only a collection frees the facade
            gc.collect(0)  # the facade is in generation 1, generation 0 counts from 0
            del app
            gc.set_threshold(n, 0, 1_000_000)  # the n-th allocation collects both
            gc.enable()
            try:
                assert listed() == [] and listed() == []
            finally:
                gc.set_threshold(700, 10, 10)
            del listed
            gc.collect()  # nothing can call the app now: it is closed, its loop stopped
        def portals():
            return [t for t in threading.enumerate() if t.name == "omniq-portal"]
        deadline = time.monotonic() + 30
        while portals() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("done", len(portals()), flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["done", "0"], (done.stdout, done.stderr[-3000:])


def test_an_app_collected_during_another_apps_call_does_not_hold_that_call_up(
    tmp_path: Any,
) -> None:
    """The collector's close of one app runs on that app's loop, not in the thread that
    happened to collect it: a call on another app during which the collection runs (or
    its store's worker thread, which the call waits for) is not held up by the close.
    A close that takes 1 s; each call must take far less, whichever allocation collects."""
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path}/other.db"
    script = textwrap.dedent(f"""
        import asyncio, gc, time
        from omniq import OmniQ
        other = OmniQ(task_queue={url!r})
        other.list_tasks()
        slowest = 0.0
        for n in range(60):
            gc.disable()
            app = OmniQ(task_queue={url!r})
            app.list_tasks()
            closer = app.aio.close
            async def close(closer=closer):
                await asyncio.sleep(1.0)
                await closer()
            app.aio.close = close
            app.me = app  # a cycle: only a collection frees it
            gc.collect(0)
            del app, close
            gc.set_threshold(n, 0, 1_000_000)
            gc.enable()
            started = time.perf_counter()
            try:
                other.list_tasks()
            finally:
                slowest = max(slowest, time.perf_counter() - started)
                gc.set_threshold(700, 10, 10)
            gc.collect()
        print(f"{{slowest:.3f}}", flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout) < 0.5, f"a call took {done.stdout.strip()} s"


def test_a_facade_dropped_just_before_exit_is_closed_before_the_process_ends(
    tmp_path: Any,
) -> None:
    """Its close, handed to its loop by the finalizer (which never waits), is waited
    for at exit: a process that drops its app and ends at once still closes it."""
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path}/drop.db"
    script = textwrap.dedent(f"""
        import asyncio
        from omniq import OmniQ
        app = OmniQ(task_queue={url!r}, result_storage={url!r}, event_storage={url!r})
        closer = app.aio.close
        async def close():
            await asyncio.sleep(0.2)  # still closing when the main thread ends
            await closer()
            print("closed", flush=True)
        app.aio.close = close
        app.task(name="noop")(print).delay()
        del app, close
        print("dropped", flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["closed", "dropped"], (done.stdout, done.stderr)
    assert "destroyed but it is pending" not in done.stderr


def test_an_app_whose_task_refers_to_it_is_closed_once_dropped(tmp_path: Any, caplog: Any) -> None:
    """A task that refers to its app (to enqueue a follow-up) makes a cycle: the app's
    tasks lead back to its facade. A ``weakref.finalize`` holding the app kept that cycle
    reachable, so such an app was never closed: each one made and dropped kept its
    loop's thread, the store's threads and their descriptors until exit.

    Each close must also end by itself, not by the cap on a close left open: the
    collector runs the finalizer of every object in the cycle, aiosqlite's connection's
    among them (it stops the connection's thread), and the SQLite store's close then
    waited for that thread for ever, until the cap cut it short (~10 s)."""
    from omniq import OmniQ

    def portals() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "omniq-portal"}

    before = portals()
    url = f"sqlite:///{tmp_path}/cycle.db"

    def one(n: int) -> None:
        app = OmniQ(task_queue=url, result_storage=url)

        @app.task(name=f"follow{n}")
        def follow() -> None:
            assert app is not None  # refers to its app: app -> tasks -> follow -> app

        follow.delay()

    for n in range(10):  # (5 met the hang below in 2 of 3 runs, 10 in every one)
        one(n)
    deadline = time.monotonic() + 20
    while portals() - before and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert not portals() - before, "apps made and dropped were never closed"
    cut = [r.getMessage() for r in caplog.records if "did not end within" in r.getMessage()]
    assert not cut, cut


def test_a_facade_whose_loop_is_blocked_does_not_hold_the_exit_up(tmp_path: Any) -> None:
    """At exit the close of a facade left open waits for its loop, bounded: an async task
    that blocks the loop (run by a worker in a daemon thread) never lets the close run,
    and the wait for that close's result was for ever (the process never ended)."""
    import subprocess
    import sys
    import textwrap

    from omniq.sync import EXIT_CLOSE_TIMEOUT

    url = f"sqlite:///{tmp_path}/blocked.db"
    script = textwrap.dedent(f"""
        import threading, time
        from omniq import OmniQ
        app = OmniQ(task_queue={url!r}, result_storage={url!r}, event_storage={url!r})
        started = threading.Event()
        @app.task(name="block")
        async def block():
            started.set()
            time.sleep(3600)  # blocks the loop for good
        block.delay()
        threading.Thread(target=lambda: app.run_worker(concurrency=1), daemon=True).start()
        assert started.wait(30)
        print("exiting", flush=True)
    """)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=EXIT_CLOSE_TIMEOUT * 2 + 30,
    )
    assert done.stdout.split() == ["exiting"], (done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - began < EXIT_CLOSE_TIMEOUT * 2 + 20


def test_an_app_used_as_a_temporary_is_closed_after_its_call(tmp_path: Any) -> None:
    """``OmniQ(url).list_tasks()``: the facade is freed before its call starts the loop
    (a blocking method does not hold it), so a finalizer keyed to the facade found
    nothing to close and the app stayed open, with its loop's thread, for good."""
    from omniq import OmniQ

    def portals() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "omniq-portal"}

    before = portals()
    url = f"sqlite:///{tmp_path}/temporary.db"
    for _ in range(3):
        listed = OmniQ(task_queue=url).list_tasks()  # (not in an assert: pytest keeps
        assert listed == []  # the facade of an asserted expression)
    deadline = time.monotonic() + 10
    while portals() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not portals() - before, "the apps were left open"


def test_a_thread_running_a_loop_of_its_own_hands_its_calls_over(portal: Portal) -> None:
    """It cannot run the portal's loop too: the portal's thread runs it at once."""

    async def where() -> int:
        return threading.get_ident()

    async def from_another_loop() -> int:
        return portal.call(where)

    assert asyncio.run(from_another_loop()) != threading.get_ident()
    assert portal.call(asyncio.sleep, 0, "back") == "back"


class _Pinger:
    def __init__(self) -> None:
        self.pings = 0

    async def ping(self, n: int = 1, *, by: int = 1) -> int:
        self.pings += n * by
        return self.pings


class _SyncPinger(sync.SyncWrapper[_Pinger]):
    ping = sync.blocking(_Pinger.ping)
    pong = sync.blocking(_Pinger.ping)  # another attribute, the same async method


def test_a_blocking_method_is_built_once_per_facade_and_looks_the_method_up_per_call() -> None:
    with _SyncPinger(_Pinger()) as pinger:
        assert pinger.ping() == 1 and pinger.ping(2) == 3 and pinger.ping(1, by=3) == 6
        assert pinger.ping is pinger.ping and "ping" in vars(pinger)
        assert pinger.pong(4) == 10 and "pong" in vars(pinger)  # kept under its own name
        assert pinger.pong is not pinger.ping
        assert pinger.ping.__name__ == "ping" and pinger.ping.__wrapped__ is _Pinger.ping

        async def replaced(n: int = 1, *, by: int = 1) -> int:
            return -1

        pinger.aio.ping = replaced  # type: ignore[method-assign]
        assert pinger.ping() == -1  # found at the call, not when the facade built it
    assert _SyncPinger.ping.method is _Pinger.ping


def test_a_portal_whose_loop_died_raises_in_its_waiting_and_later_calls(tmp_path: Any) -> None:
    """A ``SystemExit`` raised on the loop while the portal's thread runs it ends that
    thread. The call waiting on the loop then, and every call after, waited for ever;
    they raise ``PortalStoppedError`` naming the cause, ``close()`` returns, and the
    process exits."""
    import subprocess
    import textwrap

    url = f"sqlite:///{tmp_path}/died.db"
    script = textwrap.dedent(f"""
        import asyncio, sys, threading
        from omniq import OmniQ
        from omniq.errors import PortalStoppedError
        app = OmniQ(task_queue={url!r}, result_storage={url!r}, event_storage={url!r})
        app.open()

        async def doomed():
            asyncio.get_running_loop().call_soon(sys.exit, 3)
            await asyncio.Event().wait()

        def report(what, call):
            try:
                call()
            except PortalStoppedError as exc:
                print(what, type(exc.__cause__).__name__, "loop stopped" in str(exc), flush=True)

        async def own_loop():  # a thread running a loop of its own hands its call over
            report("waiting", lambda: app._portal.call(doomed))

        waiter = threading.Thread(target=asyncio.run, args=(own_loop(),))
        waiter.start()
        waiter.join()
        report("later", lambda: app.get_task("nope"))
        app.close()
        print("closed", flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines() == [
        "waiting SystemExit True",
        "later SystemExit True",
        "closed",
    ], done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_loop_that_dies_while_other_threads_start_calling_still_frees_its_waiter() -> None:
    """The dying loop's sweep of every waiter's waker ran over the set that threads
    making their first call add theirs to: one added during the sweep stopped it
    (``RuntimeError: Set changed size during iteration``) before it reached the
    waiter, which then waited for ever, and the dead loop was never closed. Many
    wakers (as many threads) and a thread adding more make that likely on each death."""
    import subprocess
    import textwrap

    script = textwrap.dedent("""
        import asyncio, sys, threading
        from omniq import sync
        from omniq.errors import PortalStoppedError
        sys.setswitchinterval(1e-6)

        def no_pair():
            raise OSError  # (a waker on a semaphore: no descriptors for 20,000 of them)

        held = [sync._Waker(no_pair) for _ in range(20000)]
        stop = threading.Event()

        def newcomers():  # threads making their first blocking call meanwhile
            while not stop.is_set():
                held.append(sync._Waker(no_pair))

        async def doomed():
            asyncio.get_running_loop().call_soon(sys.exit, 3)
            await asyncio.Event().wait()

        async def wait_on(portal):  # a thread running a loop of its own hands its call over
            try:
                portal.call(doomed)
            except PortalStoppedError:
                print("stopped", flush=True)

        adder = threading.Thread(target=newcomers)
        adder.start()
        for _ in range(10):
            portal = sync.Portal()
            asyncio.run(wait_on(portal))
            loop = portal._state.loop
            portal.stop()  # (waits for the portal's thread)
            print("closed", loop.is_closed(), flush=True)
        stop.set()
        adder.join()
    """)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"a waiter waited for ever: {exc.stderr!r}") from None
    assert done.stdout.split("\n")[:-1] == ["stopped", "closed True"] * 10, done.stderr[-3000:]
    assert "RuntimeError" not in done.stderr, done.stderr[-3000:]


def test_a_call_that_found_the_loop_alive_and_hands_over_after_it_died_raises_stopped() -> None:
    """A call that passed the check for a stopped loop, then scheduled its start on it
    after the loop died and was closed, raised asyncio's ``RuntimeError('Event loop is
    closed')`` instead of ``PortalStoppedError``. The caller here gets its waker (a pair
    per call, as gevent's hub thread does) only once the dead loop's thread has ended."""
    import subprocess
    import textwrap

    script = textwrap.dedent("""
        import asyncio, socket, sys, threading
        from omniq import sync
        from omniq.errors import PortalStoppedError

        portal = sync.Portal()
        in_pair, dead = threading.Event(), threading.Event()

        def late_pair():
            in_pair.set()
            dead.wait()
            return socket.socketpair()

        async def one():
            return 1

        async def late():  # a loop of its own: the call is handed to the portal's thread
            sync.wait_per_call(late_pair)
            try:
                portal.call(one)
            except PortalStoppedError as exc:
                print("stopped", type(exc.__cause__).__name__, flush=True)

        caller = threading.Thread(target=asyncio.run, args=(late(),))
        caller.start()
        in_pair.wait()
        state = portal._state
        state.loop.call_soon_threadsafe(sys.exit, 3)
        state.thread.join()
        dead.set()
        caller.join()
        portal.stop()
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines() == ["stopped SystemExit"], done.stderr[-3000:]
