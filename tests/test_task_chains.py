"""A task that enqueues another task and reads its result, under real worker processes.

The most common pattern (chains, fan-out): the task body calls ``delay()``, ``apply()``,
``enqueue_many()``, ``group()`` and ``get_result()`` of its own app. Each pool, for a
blocking (``OmniQ``) and an async (``AsyncOmniQ``) app, with the worker run by the
command line (``omniq worker --app``) and by the app itself (``run_worker()``), on one
SQLite file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, OmniQ

pytest.importorskip("omniq_backend_sqlite")

SYNC_APP = """
import sys
from omniq import OmniQ

app = OmniQ(task_queue="sqlite:///{db}")

@app.task
def second(x):
    return x * 2

@app.task
def first(x):
    one = second.delay(x)
    two = second.apply((x + 1,), priority=1)
    [three] = app.enqueue_many(second, [(x + 2,)])
    group = app.group(second, [(x + 3,), (x + 4,)])
    return [one.id, app.get_result(one, timeout=20), app.get_result(two, timeout=20),
            app.get_result(three, timeout=20), app.get_result(group, timeout=20)]

@app.task
async def afirst(x):  # an async task of a blocking app: the async twins
    ref = await second.aio.delay(x)
    return [ref.id, await app.aio.get_result(ref, timeout=20)]

@app.task
async def blocks(x):  # a blocking call on the loop's own thread: refused, not a deadlock
    return second.delay(x).id

if __name__ == "__main__":
    app.run_worker(pool=sys.argv[1], concurrency=4, burst=True)
"""

ASYNC_APP = """
import asyncio, sys
from omniq import AsyncOmniQ

app = AsyncOmniQ(task_queue="sqlite:///{db}")

@app.task
def second(x):
    return x * 2

@app.task
async def afirst(x):
    one = await second.delay(x)
    two = await second.apply((x + 1,), priority=1)
    [three] = await app.enqueue_many(second, [(x + 2,)])
    group = await app.group(second, [(x + 3,), (x + 4,)])
    return [one.id, await app.get_result(one, timeout=20), await app.get_result(two, timeout=20),
            await app.get_result(three, timeout=20), await app.get_result(group, timeout=20)]

async def main():
    async with app:
        await app.run_worker(pool=sys.argv[1], concurrency=4, burst=True)

if __name__ == "__main__":
    asyncio.run(main())
"""

POOLS = ["async", "thread", "process"]
if importlib.util.find_spec("omniq_workers_gevent") and importlib.util.find_spec("gevent"):
    POOLS.append("gevent")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}


def _enqueue(tmp_path: Path, kind: str) -> dict[str, str]:
    """Enqueue the chains from this process (the module imported under the name the
    worker gives it, so the task names agree)."""
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("chainapp", None)
        module = importlib.import_module("chainapp")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("chainapp", None)
    app: Any = module.app
    if kind == "sync":
        assert isinstance(app, OmniQ)
        with app:
            return {
                "first": module.first.delay(1).id,
                "afirst": module.afirst.delay(1).id,
                "blocks": module.blocks.delay(1).id,
            }
    assert isinstance(app, AsyncOmniQ)

    async def go() -> dict[str, str]:
        async with app:
            return {"afirst": (await module.afirst.delay(1)).id}

    return asyncio.run(go())


def _outcome(app: OmniQ, task_id: Any, deadline: float) -> Any:
    """The task's value, or the exception it ended with, waiting up to ``deadline``."""
    try:
        return app.get_result(task_id, timeout=max(deadline - time.monotonic(), 0.1))
    except Exception as exc:
        return exc


@pytest.mark.parametrize("runner", ["cli", "run_worker"])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("pool", POOLS)
def test_a_task_enqueues_a_follow_up_and_reads_its_result(
    tmp_path: Path, pool: str, kind: str, runner: str
) -> None:
    db = tmp_path / "q.db"
    (tmp_path / "chainapp.py").write_text(
        textwrap.dedent((SYNC_APP if kind == "sync" else ASYNC_APP).format(db=db))
    )
    ids = _enqueue(tmp_path, kind)
    command = (
        [
            sys.executable,
            "-m",
            "omniq.cli",
            "worker",
            "--app",
            "chainapp:app",
            "--pool",
            pool,
            "--concurrency",
            "4",
            "--burst",
            "--no-progress",
        ]
        if runner == "cli"
        else [sys.executable, "chainapp.py", pool]
    )
    worker = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    deadline = time.monotonic() + 30
    reader = OmniQ(task_queue=f"sqlite:///{db}")
    try:
        for name in ("first", "afirst"):
            if name not in ids:
                continue
            value = _outcome(reader, ids[name], deadline)
            assert isinstance(value, list), f"{name}: {value!r}\n{worker.stderr}"
            # the follow-up ran, and its result is readable from outside too
            assert value[1] == 2, value
            assert _outcome(reader, value[0], deadline) == 2
            if name == "first" or kind == "async":
                assert value[2:] == [4, 6, [8, 10]], value
        if "blocks" in ids:
            error = _outcome(reader, ids["blocks"], deadline)
            assert isinstance(error, RuntimeError), error
            assert "await task.aio.delay" in str(error)
    finally:
        reader.close()


def test_a_process_child_that_opened_its_async_app_exits_on_its_own(tmp_path: Path) -> None:
    """The child's tasks open its async app's stores (aiosqlite's threads) and nobody
    closes them: the child must still exit when told, not be held up by those threads
    until the parent kills it (5 s a child, at every stop and every recycle)."""
    db = tmp_path / "q.db"
    (tmp_path / "chainapp.py").write_text(textwrap.dedent(ASYNC_APP.format(db=db)))
    _enqueue(tmp_path, "async")
    cli = ["worker", "--app", "chainapp:app", "--pool", "process", "--burst", "--no-progress"]
    worker = subprocess.run(
        [sys.executable, "-m", "omniq.cli", *cli],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    stamps = {}
    for line in worker.stderr.splitlines():
        for word in ("stopping (burst)", "stopped (burst)"):
            if word in line:
                stamps[word] = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                stamps[word] += int(line[20:23]) / 1000
    assert len(stamps) == 2, worker.stderr
    # the children that opened the app exit at once (the parent waits 5 s before a kill)
    assert stamps["stopped (burst)"] - stamps["stopping (burst)"] < 3, worker.stderr
