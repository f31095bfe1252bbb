"""``list_page`` by key: newest first by enqueue order, read from the per-queue,
per-state sorted sets (score: enqueue order) that the scripts keep anyway.

One pipeline reads the head below the cursor of each (queue, state) set; merged, the
first ``n`` are the newest ``n`` of all. Without a name or time filter that is the page.
With one, only the two hash fields the filter needs are read of those tasks (the header,
holding ``created_at``, and the body, of which only ``name`` is decoded), and whole
tasks only for those that match; the walk goes on below the last one read, up to
:data:`SCAN_BUDGET` tasks per call; a page may then hold fewer tasks than asked with a
cursor still following, so a filter that matches nothing never makes one request walk a
million tasks. No per-name index: enqueue pays nothing for this.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from omniq.interfaces import TaskPage, check_page_limit, check_seq_cursor
from omniq.models import TaskState

from .codec import is_task_hash

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


class _Named(msgspec.Struct):
    """The one field of a stored task's body a name filter reads (the rest is skipped
    undecoded, payload included)."""

    name: str = ""


_named = msgspec.msgpack.Decoder(_Named)


async def _filter_fields(store: RedisTaskQueue, ids: list[bytes]) -> list[tuple[str, float]]:
    """``(name, created_at)`` of each task (``("", nan)`` for one gone or unreadable)."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(store.key("t", task_id.decode()), ("h", "d"))
        found = await pipe.execute()
    out: list[tuple[str, float]] = []
    for header, body in found:
        try:
            assert is_task_hash(header) and body is not None
            out.append((_named.decode(body).name, struct.unpack_from(">d", header, 4)[0]))
        except Exception:  # shown (as a stand-in) only when it is on an unfiltered page
            out.append(("", float("nan")))
    return out


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

    def matches(task_name: str, created_at: float) -> bool:
        return (
            (name is None or task_name == name)
            and (since is None or created_at >= since)
            and (until is None or created_at < until)
        )

    found: list[tuple[int, bytes]] = []
    read = 0
    step = min(STEP, 2 * (size + 1))
    while read < SCAN_BUDGET:
        heads = await _heads(store, keys, below, step)
        fields = await _filter_fields(store, [tid for _, tid in heads])
        found += [h for h, f in zip(heads, fields, strict=True) if matches(*f)]
        read += len(heads)
        if len(found) > size or len(heads) < step:
            break
        below = heads[-1][0]
        step = min(STEP, 2 * step)
    else:
        # Out of budget: what was found, and a cursor below the last task read.
        return TaskPage(tasks=await store._rows([tid for _, tid in found]), cursor=str(below))
    tasks = await store._rows([tid for _, tid in found[:size]])
    return TaskPage(tasks=tasks, cursor=str(found[size - 1][0]) if len(found) > size else None)
