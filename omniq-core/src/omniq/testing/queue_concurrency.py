"""Task-queue tests for concurrent reservers: several instances in this process, and
(for ``CROSS_PROCESS`` stores) several processes, never receive the same task.

The subprocess entry point lives here, at module level, so ``spawn`` children can import
it; each child resolves the ref itself, as a separate worker process would.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import traceback
from collections import Counter
from typing import Any

import anyio
import anyio.to_thread
import pytest

from ..interfaces import BaseTaskQueue, Capability
from ..models import TaskState
from .actions import LONG
from .base import open_store, open_stores
from .capabilities import requires
from .factories import make_task

__all__ = ["ConcurrencyTests"]

TASKS = 60
INSTANCES = 4
PROCESSES = 3
#: More tasks for processes, whose start-up is staggered, so their draining overlaps.
PROCESS_TASKS = 150
#: Seconds a child may take to start, import the backend and drain its share.
CHILD_DEADLINE = 120.0


async def drain(queue: BaseTaskQueue, worker_id: str, limit: int) -> list[str]:
    """Reserve (and complete) until reserve answers [], returning the ids received.

    Every task is enqueued before draining starts and leases are long, so an empty answer
    means the rest is held by other reservers.
    """
    got: list[str] = []
    while tasks := await queue.reserve(["default"], worker_id, LONG, limit):
        got += [t.id for t in tasks]
        for t in tasks:
            assert await queue.complete(t.id, t.lease_token or "", TaskState.SUCCEEDED), (
                f"{worker_id} could not complete {t.id}, which it had just reserved"
            )
    return got


def drain_in_child(ref: Any, worker_id: str, limit: int, barrier: Any, out: Any) -> None:
    """``spawn`` child: resolve ``ref``, wait for the others, drain, report
    ``(worker, ids, error)``."""

    async def main() -> list[str]:
        async with open_store("task_queue", ref) as queue:
            await anyio.to_thread.run_sync(barrier.wait, CHILD_DEADLINE)
            return await drain(queue, worker_id, limit)

    try:
        out.put((worker_id, asyncio.run(main()), None))
    except BaseException:  # reported to the parent, which fails the test with it
        out.put((worker_id, [], traceback.format_exc()))


def assert_delivered_once(expected: list[str], received: list[str]) -> None:
    twice = sorted(i for i, n in Counter(received).items() if n > 1)
    assert not twice, f"{len(twice)} task(s) were delivered to two reservers at once: {twice[:5]}"
    missing = set(expected) - set(received)
    assert not missing, f"{len(missing)} task(s) were never delivered: {sorted(missing)[:5]}"


class ConcurrencyTests:
    """Atomic reserve under contention (mixed into :class:`TaskQueueContract`)."""

    async def test_concurrent_reservers_never_share_a_task(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        tasks = await task_queue.enqueue_many([make_task() for _ in range(TASKS)])
        received: list[list[str]] = [[] for _ in range(INSTANCES)]
        async with open_stores("task_queue", task_queue_ref, INSTANCES) as workers:

            async def run(i: int) -> None:
                received[i] = await drain(workers[i], f"worker-{i}", limit=1 + i % 3)

            async with anyio.create_task_group() as tg:
                for i in range(INSTANCES):
                    tg.start_soon(run, i)
        assert_delivered_once([t.id for t in tasks], [i for ids in received for i in ids])

    async def test_reservers_in_several_processes_never_share_a_task(
        self, task_queue: BaseTaskQueue, task_queue_ref: Any
    ) -> None:
        requires(task_queue, Capability.CROSS_PROCESS)
        tasks = await task_queue.enqueue_many([make_task() for _ in range(PROCESS_TASKS)])
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(PROCESSES)
        out = ctx.Queue()
        children = [
            ctx.Process(
                target=drain_in_child,
                args=(task_queue_ref, f"proc-{i}", 1 + i % 2, barrier, out),
                daemon=True,
            )
            for i in range(PROCESSES)
        ]
        for child in children:
            child.start()
        try:
            reports = [
                await anyio.to_thread.run_sync(out.get, True, CHILD_DEADLINE) for _ in children
            ]
        except queue.Empty:
            pytest.fail(f"a reserving subprocess did not report within {CHILD_DEADLINE} s")
        finally:
            for child in children:
                await anyio.to_thread.run_sync(child.join, 10.0)
                if child.is_alive():
                    child.kill()
        errors = [f"{worker}:\n{error}" for worker, _, error in reports if error]
        assert not errors, "a reserving subprocess failed:\n" + "\n".join(errors)
        assert_delivered_once([t.id for t in tasks], [i for _, ids, _ in reports for i in ids])
