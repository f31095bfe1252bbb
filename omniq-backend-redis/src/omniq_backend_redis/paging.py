"""``list_page`` by key: newest first by enqueue order, read from the per-queue,
per-state sorted sets (score: enqueue order) that the scripts keep anyway.

One pipeline reads the head below the cursor of each (queue, state) set; merged, the
first ``n`` are the newest ``n`` of all. Without a name or time filter that is the page.
With one, those tasks are read and filtered, and the walk goes on below the last one
read, up to :data:`SCAN_BUDGET` tasks per call; a page may then hold fewer tasks than
asked with a cursor still following, so a filter that matches nothing never makes one
request walk a million tasks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING

from omniq.interfaces import TaskPage, check_page_limit, check_seq_cursor
from omniq.models import Task, TaskState

if TYPE_CHECKING:
    from .queue import RedisTaskQueue

#: Most tasks one filtered ``list_page`` call reads before it answers with what it has.
SCAN_BUDGET = 20_000
#: Most tasks read per step of a filtered walk (the first step reads twice a page; each
#: next one twice the last, as the filter proved to match few).
STEP = 1000


async def _heads(
    store: RedisTaskQueue, keys: list[str], below: int | None, count: int
) -> list[tuple[int, bytes]]:
    """The ``count`` highest-scored members below ``below`` over all ``keys``, best first."""
    top = "+inf" if below is None else f"({below}"
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zrevrangebyscore(key, top, "-inf", start=0, num=count, withscores=True)
        found = await pipe.execute()
    merged = heapq.merge(*([(-int(score), tid) for tid, score in f] for f in found))
    return [(-neg, tid) for neg, tid in list(merged)[:count]]


async def list_page(
    store: RedisTaskQueue,
    *,
    queue: str | None,
    states: Iterable[TaskState] | None,
    name: str | None,
    since: float | None,
    until: float | None,
    cursor: str | None,
    limit: int,
) -> TaskPage:
    size = check_page_limit(limit)
    below = check_seq_cursor(cursor)
    wanted = list(TaskState) if states is None else [TaskState(s) for s in states]
    keys = [store.key("q", q, "s", s.value) for q in await store._queues(queue) for s in wanted]
    if not keys:
        return TaskPage(tasks=[])
    if name is None and since is None and until is None:
        heads = await _heads(store, keys, below, size + 1)
        tasks = await store._rows([tid for _, tid in heads[:size]])
        return TaskPage(tasks=tasks, cursor=str(heads[size - 1][0]) if len(heads) > size else None)

    def matches(t: Task) -> bool:
        return (
            (name is None or t.name == name)
            and (since is None or t.created_at >= since)
            and (until is None or t.created_at < until)
        )

    found: list[tuple[int, Task]] = []
    read = 0
    step = min(STEP, 2 * (size + 1))
    while read < SCAN_BUDGET:
        heads = await _heads(store, keys, below, step)
        rows = await store._rows([tid for _, tid in heads])
        by_id = {t.id: t for t in rows}
        for score, tid in heads:
            task = by_id.get(tid.decode())
            if task is not None and matches(task):
                found.append((score, task))
        read += len(heads)
        if len(found) > size:
            return TaskPage(tasks=[t for _, t in found[:size]], cursor=str(found[size - 1][0]))
        if len(heads) < step:
            return TaskPage(tasks=[t for _, t in found])
        below = heads[-1][0]
        step = min(STEP, 2 * step)
    # Out of budget: what was found, and a cursor below the last task read.
    return TaskPage(tasks=[t for _, t in found], cursor=str(below))
