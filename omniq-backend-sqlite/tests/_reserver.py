"""Body of one reserving process for test_sqlite (run with ``runpy.run_path`` in a
``spawn`` child, because pytest's importlib mode leaves test modules unimportable).

Globals set by the parent: REF, WORKER, TOTAL, DEADLINE, BARRIER, OUT. The child reserves
and completes in batches until all TOTAL tasks have succeeded (the parent enqueues while
the children drain), then reports ``(worker, ids received, traceback or None)``.
"""

import asyncio
import time
import traceback
from typing import Any

from omniq.models import TaskState
from omniq.registry import registry
from omniq_backend_sqlite import SqliteTaskQueue

REF: str
WORKER: str
TOTAL: int
DEADLINE: float
BARRIER: Any
OUT: Any


async def _drain() -> list[str]:
    queue = registry.resolve("task_queue", REF)
    assert isinstance(queue, SqliteTaskQueue)
    got: list[str] = []
    async with queue:
        BARRIER.wait(DEADLINE)
        while time.monotonic() < DEADLINE_AT:
            tasks = await queue.reserve(["default"], WORKER, 60.0, 7)
            if tasks:
                got += [t.id for t in tasks]
                done = await queue.complete_many(
                    [(t.id, t.lease_token or "", TaskState.SUCCEEDED, None) for t in tasks]
                )
                assert all(done), f"{WORKER} could not complete tasks it had just reserved"
                continue
            counts = (await queue.stats()).get("default", {})
            if counts.get(TaskState.SUCCEEDED, 0) >= TOTAL:
                return got
            await asyncio.sleep(0.005)
    raise TimeoutError(f"{WORKER}: not all {TOTAL} tasks succeeded within {DEADLINE} s")


DEADLINE_AT = time.monotonic() + DEADLINE
try:
    OUT.put((WORKER, asyncio.run(_drain()), None))
except BaseException:
    OUT.put((WORKER, [], traceback.format_exc()))
