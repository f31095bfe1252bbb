"""GeventPool on its own, each check in a fresh interpreter (patching is process-wide)."""

from __future__ import annotations

from gevent_workers import run_python

POOL = """
import asyncio, time
from omniq_workers_gevent import GeventPool

async def with_pool(concurrency, body, **options):
    pool = GeventPool(concurrency, **options)
    await pool.start()
    try:
        return await body(pool)
    finally:
        await pool.stop()
"""


def test_greenlets_run_concurrently_up_to_the_pool_size():
    out = run_python(
        POOL,
        """
        def nap(s):
            time.sleep(s)
            return s

        async def body(pool):
            t = time.monotonic()
            await asyncio.gather(*(pool.run(nap, [0.2], {}, None) for _ in range(4)))
            return time.monotonic() - t

        print(round(asyncio.run(with_pool(2, body)), 2), round(asyncio.run(with_pool(4, body)), 2))
    """,
    )
    two, four = map(float, out.split())
    assert two >= 0.4 > four


def test_timeout_interrupts_a_waiting_greenlet_and_reports_the_task_timeout():
    out = run_python(
        POOL,
        """
        from omniq.errors import TaskTimeoutError
        state = {}

        def slow():
            try:
                time.sleep(10)
            finally:
                state["stopped"] = time.monotonic()

        async def body(pool):
            t = time.monotonic()
            try:
                await pool.run(slow, [], {}, 0.2)
            except TaskTimeoutError as exc:
                return exc, time.monotonic() - t

        exc, took = asyncio.run(with_pool(2, body))
        print(f"{exc} | {took < 1.0} | {'stopped' in state}")
    """,
    )
    assert out.strip() == "task exceeded its timeout of 0.2 s | True | True"


def test_a_call_that_never_yields_is_abandoned_after_the_backstop():
    out = run_python(
        POOL,
        """
        from omniq.errors import TaskTimeoutError

        def spin():
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                pass

        async def body(pool):
            t = time.monotonic()
            try:
                await pool.run(spin, [], {}, 0.2)
            except TaskTimeoutError as exc:
                return exc, time.monotonic() - t

        exc, took = asyncio.run(with_pool(2, body, backstop=0.3))
        print(f"{took < 0.8} | {exc}")
    """,
    )
    assert out.startswith(
        "True | task exceeded its timeout of 0.2 s and did not yield to gevent within 0.3 s"
    )


def test_errors_and_values_pass_through_unchanged():
    out = run_python(
        POOL,
        """
        def own_timeout():
            raise TimeoutError("the function's own")

        async def coro(x):
            await asyncio.sleep(0)
            return x * 2

        def returns_coro(x):
            return coro(x)

        async def body(pool):
            try:
                await pool.run(own_timeout, [], {}, 5)
            except TimeoutError as exc:
                own = f"{type(exc).__name__}: {exc}"
            return (
                own,
                await pool.run(coro, [2], {}, 1),
                await pool.run(returns_coro, [3], {}, 1),
                await pool.run(dict, [], {"a": 1}, None),
            )

        print(asyncio.run(with_pool(2, body)))
    """,
    )
    assert out.strip() == "(\"TimeoutError: the function's own\", 4, 6, {'a': 1})"


def test_cancelling_the_caller_kills_the_greenlet():
    out = run_python(
        POOL,
        """
        import gevent
        seen = []

        def forever():
            try:
                time.sleep(30)
            except BaseException as exc:
                seen.append(type(exc).__name__)
                raise

        async def body(pool):
            call = asyncio.ensure_future(pool.run(forever, [], {}, None))
            await asyncio.sleep(0.2)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

        t = time.monotonic()
        asyncio.run(with_pool(2, body))  # stop(wait=True) joins the hub: the greenlet is gone
        print(seen, time.monotonic() - t < 5)
    """,
    )
    assert out.strip() == "['GreenletExit'] True"


def test_patching_leaves_threads_queues_and_the_asyncio_selector_alone():
    out = run_python("""
        import asyncio, queue, selectors, threading, time
        from omniq_workers_gevent import patch_process
        print(patch_process(), patch_process())
        from gevent import monkey
        print(time.sleep.__module__, monkey.is_module_patched("threading"),
              queue.SimpleQueue.__module__, selectors.DefaultSelector.__module__)

        async def selector():
            return type(asyncio.get_running_loop()._selector).__name__

        print(asyncio.run(selector()))
    """)
    assert out.split("\n")[:3] == [
        "True False",
        "gevent.hub False _queue gevent.selectors",
        "EpollSelector",
    ]


def test_a_process_patched_with_threads_is_refused():
    out = run_python("""
        import gevent.monkey
        gevent.monkey.patch_all()
        from omniq.errors import ConfigError
        from omniq_workers_gevent import patch_process
        try:
            patch_process()
        except ConfigError as exc:
            print(exc)
    """)
    assert (
        "the gevent pool needs real threads" in out
        and "patch_all(thread=False, queue=False)" in out
    )
