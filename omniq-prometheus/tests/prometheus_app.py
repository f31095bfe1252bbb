"""The app the metrics tests run workers of; its store comes from $OMNIQ_TASK_QUEUE."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import slow_import

from omniq import OmniQ, current_task

app = OmniQ()


@app.task(name="shop.ok")
def ok(n: int) -> int:
    return n


@app.task(name="shop.boom", retries=1, retry_backoff=0.01)
def boom(n: int) -> int:
    raise ValueError(f"boom {n}")


@app.task(name="shop.hold")
def hold(release: str) -> str:
    """Run until the file ``release`` exists (the test creates it), at most a minute."""
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return release


@app.task(name="shop.nap", timeout=3)
def nap(seconds: float) -> float:
    """Sleep ``seconds``; return how far off this attempt's deadline was when it began.
    (A new process-pool child loads :mod:`slow_import` with the call.)"""
    assert slow_import.LOADED
    task = current_task()
    assert task is not None and task.deadline is not None
    left = task.deadline - time.time()
    time.sleep(seconds)
    return left


def _in_transaction() -> bool:
    """Whether a store of this process is inside a transaction that spans event-loop
    steps (the SQLite stores' ``transaction()``, under their lock): one would hold the
    file's write lock for as long as a body blocks the loop, and stop every worker."""
    stores = (app.aio.task_queue, app.aio.result_storage, app.aio.event_storage)
    return any(s.db._lock.locked() for s in stores if hasattr(s, "db"))  # type: ignore[attr-defined]


@app.task(name="shop.stall")
async def stall(folder: str, fail: bool = False) -> int:
    """The first attempt blocks its worker's event loop (no heartbeat, no other work)
    until the file ``go`` exists in ``folder``, at most a minute: the test pauses that
    worker meanwhile; then it raises if ``fail``. Any later attempt returns at once.
    Returns the worker's pid."""
    root = Path(folder)
    first = not any(root.glob("attempt-*"))  # noqa: ASYNC240
    while first and _in_transaction():  # noqa: ASYNC110  (then no await: none can start)
        await asyncio.sleep(0.001)
    (root / f"attempt-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    # (blocking on purpose: the loop must not run the heartbeat until it returns)
    while first and not (root / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251
    if first and fail:
        raise RuntimeError("the stalled attempt failed")
    return os.getpid()
