"""Redis with redis-py's asyncio client and no queue library: the "raw" row on Redis.

Enqueue is one ``LPUSH`` per call; bulk is the same ``LPUSH`` per id in pipelines of
``PIPELINE`` commands (no transaction). The burst worker (``python -m
peers.raw_redis_subject --burst``) pops ``BATCH_SIZE`` ids per ``RPOP key count`` until the
list is empty; in latency mode it ``BRPOP``s one id and ``LPUSH``es a reply to a key of
that id, which the producer ``BLPOP``s.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

import redis.asyncio as aioredis

from . import BATCH_SIZE, NAME, REDIS_URL
from .cleanup import redis_delete
from .raw import RawSubject, Tally, run_worker

QUEUE = f"{NAME}:raw:queue"
REPLY = f"{NAME}:raw:reply:"
#: Commands per pipeline round trip in the bulk enqueue.
PIPELINE = 1000


class RawRedisSubject(RawSubject):
    module = "peers.raw_redis_subject"
    notes: ClassVar[list[str]] = [
        "one LPUSH per enqueue; bulk = LPUSH per id, pipelines of 1000 (no transaction)",
        (
            f"worker: RPOP {BATCH_SIZE} at a time (no result); latency: BRPOP, LPUSH a reply, "
            "the producer BLPOPs it"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.redis = aioredis.Redis.from_url(REDIS_URL)

    async def open(self) -> None:
        await self.clear()

    async def close(self) -> None:
        await self.clear()
        await self.redis.aclose()
        self.remove_window_file()

    async def enqueue_one(self) -> str:
        task_id = self.new_id()
        await self.redis.lpush(QUEUE, task_id)
        return task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        ids = self.new_ids(n)
        for i in range(0, n, PIPELINE):
            pipe = self.redis.pipeline(transaction=False)
            for task_id in ids[i : i + PIPELINE]:
                pipe.lpush(QUEUE, task_id)
            await pipe.execute()
        return ids

    async def clear(self) -> None:
        await redis_delete(REDIS_URL, [f"{NAME}:raw:*"])

    async def wait_result(self, task_id: str, timeout: float) -> None:
        if await self.redis.blpop([REPLY + task_id], timeout=math.ceil(timeout)) is None:
            raise RuntimeError(f"no reply to {task_id} within {timeout:g} s")


async def work(burst: bool) -> Tally | None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        if burst:
            tally = Tally()
            while True:
                began = time.time()
                taken = await client.rpop(QUEUE, BATCH_SIZE)
                if not taken:
                    return tally
                tally.took(began, len(taken))
        while True:
            popped = await client.brpop([QUEUE], timeout=1)
            if popped is not None:
                await client.lpush(REPLY + popped[1].decode(), b"1")
    finally:
        await client.aclose()


if __name__ == "__main__":
    run_worker(work)
