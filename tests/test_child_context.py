"""A middleware carries context to the body whatever the pool: what its
``at_body_start`` callback returns is entered around the body in a process-pool child
(a real ``omniq worker`` process and its children), and the in-process pools' bodies
see the context ``before_run`` set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ

DEADLINE = 60.0

APP = """
import contextlib, contextvars, functools, os
from omniq import OmniQ
from omniq.context import at_body_start
from omniq.middleware import Middleware

CARRIED = contextvars.ContextVar("carried", default=None)


@contextlib.contextmanager
def enter(value):
    token = CARRIED.set(value)
    try:
        yield
    finally:
        CARRIED.reset(token)


class Carry(Middleware):
    async def before_run(self, task):
        CARRIED.set(f"set in worker {os.getpid()}")

        def starts(in_child):
            value = f"from {os.getpid()} for {task.id}"
            return functools.partial(enter, value) if in_child else None

        at_body_start(starts)


app = OmniQ(task_queue=os.environ["QUEUE"])
app.add_middleware(Carry())


@app.task(name="t.read")
def read():
    return [CARRIED.get(), os.getpid()]


@app.task(name="t.aread")
async def aread():
    return [CARRIED.get(), os.getpid()]
"""


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["async", "thread", "process", "gevent"])
def test_a_middleware_carries_context_to_the_body_in_every_pool(tmp_path: Path, pool: str) -> None:
    if pool == "gevent":
        pytest.importorskip("omniq_workers_gevent")
    queue = f"sqlite:///{tmp_path / 'q.db'}"
    (tmp_path / "carry_app.py").write_text(textwrap.dedent(APP))
    env = dict(os.environ, QUEUE=queue)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    producer = OmniQ(task_queue=queue)

    @producer.task(name="t.read")
    def read() -> list[object]:  # (the worker's module runs the bodies)
        return []

    @producer.task(name="t.aread")
    async def aread() -> list[object]:
        return []

    # (one slot: a process pool's one child loads each function at its first call, and
    # is sent the context with the call once it has: both ways are taken)
    refs = [read.delay(), aread.delay(), read.delay(), aread.delay()]
    with (tmp_path / "worker.log").open("w") as out:
        command = [sys.executable, "-m", "omniq.cli", "worker", "--app", "carry_app:app"]
        worker = subprocess.Popen(
            [*command, "-c", "1", "--pool", pool],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        got = [producer.get_result(ref, timeout=DEADLINE) for ref in refs]
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        producer.close()
    for ref, (carried, pid) in zip(refs, got, strict=True):
        if pool == "process":  # the child entered what the worker's middleware sent it
            assert pid != worker.pid
            assert carried == f"from {worker.pid} for {ref.id}"
        else:  # the body runs in the worker, in the context before_run set
            assert pid == worker.pid
            assert carried == f"set in worker {worker.pid}"


#: A task module that imports in the test but not in a pool's child.
BROKEN = """
import multiprocessing
from omniq import OmniQ

app = OmniQ(task_queue="memory://")


@app.task(name="c.broken")
def task():
    return None


if multiprocessing.parent_process() is not None:
    raise ImportError("not in a child")
"""


def test_a_callback_that_fails_fails_only_its_attempt_and_no_context_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real children of a process pool, on both ways the context crosses (a new child
    waits for it once loaded; a child that ran the function gets it with the call): a
    callback that raises, or returns what does not pickle, fails that attempt with an
    error that names the hook, and the next call (on a new child) gets its own context,
    never a stale message as its call."""
    import asyncio
    import functools
    import importlib

    from omniq.context import at_body_start
    from omniq.worker.pools import ProcessPool

    (tmp_path / "carry_calls.py").write_text(textwrap.dedent(APP))  # (its module: t.read)
    (tmp_path / "carry_broken.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("QUEUE", "memory://")
    calls = importlib.import_module("carry_calls")
    broken = importlib.import_module("carry_broken")

    def carrying(value: str) -> Callable[[bool], object]:
        return lambda in_child: functools.partial(calls.enter, value)

    def raising(in_child: bool) -> None:
        raise RuntimeError("the callback failed")

    def unpicklable(in_child: bool) -> object:
        return lambda: None

    async def call(pool: ProcessPool, callback: Callable[[bool], object] | None) -> Any:
        async def attempt() -> Any:  # (a task of its own: an attempt's context)
            if callback is not None:
                at_body_start(callback)  # type: ignore[arg-type]
            return await pool.run(calls.read.fn, [], {}, None)

        return await asyncio.create_task(attempt())

    async def scenario() -> None:
        pool = ProcessPool(1)
        try:
            # A call that fails before its body (its module does not import in the
            # child): the child never said it loaded it, so no context follows; the
            # next call on the same child is read as a call.
            async def attempt() -> Any:
                at_body_start(carrying("lost"))  # type: ignore[arg-type]
                return await pool.run(broken.task.fn, [], {}, None)

            with pytest.raises(ImportError):
                await asyncio.create_task(attempt())
            assert await call(pool, carrying("next")) == ["next", *pool.child_pids()]
            for fails in (raising, unpicklable):
                with pytest.raises((RuntimeError, TypeError)) as failed:  # a new child
                    await call(pool, fails)
                if fails is unpicklable:
                    assert "at_body_start" in str(failed.value)
                first = await call(pool, carrying("a"))  # (a new child: sent once loaded)
                assert first[0] == "a"
                with pytest.raises((RuntimeError, TypeError)) as failed:  # loaded child
                    await call(pool, fails)
                if fails is unpicklable:
                    assert "at_body_start" in str(failed.value)
                assert (await call(pool, None))[0] is None
                again = await call(pool, carrying("b"))  # (sent with the call)
                assert again[0] == "b"
        finally:
            await pool.stop()

    asyncio.run(scenario())
    sys.modules.pop("carry_calls", None)
    sys.modules.pop("carry_broken", None)
