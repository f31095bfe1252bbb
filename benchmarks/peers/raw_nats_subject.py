"""NATS JetStream with nats-py and no queue library: the "raw" row on NATS.

A file-backed stream of its own (as OmniQ's) and one durable pull consumer with
explicit acks, both deleted afterwards. Enqueue is one ``await js.publish`` (it waits
for the stream's ack) per call; bulk is ``js.publish_async`` for every id (up to
nats-py's 4,000 acks in flight) and one ``publish_async_completed``. The burst worker
(``python -m peers.raw_nats_subject --burst``) fetches ``BATCH_SIZE`` messages per pull
and acks each until a pull finds none; in latency mode it publishes each id it takes
to a reply subject the producer subscribes to.
"""

from __future__ import annotations

import time
from typing import ClassVar

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from . import BATCH_SIZE, NAME, NATS_URL
from .cleanup import nats_delete_streams
from .raw import RawSubject, Tally, run_worker

STREAM = f"{NAME}-raw"
SUBJECT = f"{NAME}.raw.jobs"
REPLIES = f"{NAME}.raw.replies"
DURABLE = f"{NAME}-raw-worker"


class RawNatsSubject(RawSubject):
    module = "peers.raw_nats_subject"
    notes: ClassVar[list[str]] = [
        (
            "one awaited js.publish per enqueue; bulk = js.publish_async per id "
            "(<= 4000 acks in flight), then publish_async_completed"
        ),
        (
            f"worker: pull {BATCH_SIZE} at a time, ack each (no result); latency: it publishes "
            "the id to a subject the producer subscribes to"
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.nc: nats.NATS | None = None

    async def open(self) -> None:
        await nats_delete_streams(NATS_URL, (STREAM,))
        self.nc = await nats.connect(NATS_URL)
        self.js = self.nc.jetstream()
        await self.js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
        await self.js.add_consumer(
            STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT)
        )
        self.replies = await self.nc.subscribe(REPLIES)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        await nats_delete_streams(NATS_URL, (STREAM,))
        self.remove_window_file()

    async def enqueue_one(self) -> str:
        task_id = self.new_id()
        await self.js.publish(SUBJECT, task_id.encode())
        return task_id

    async def enqueue_bulk(self, n: int) -> list[str]:
        ids = self.new_ids(n)
        for task_id in ids:
            await self.js.publish_async(SUBJECT, task_id.encode())
        await self.js.publish_async_completed()
        return ids

    async def clear(self) -> None:
        await self.js.purge_stream(STREAM)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = task_id.encode()
        while (left := deadline - time.monotonic()) > 0:
            if (await self.replies.next_msg(timeout=left)).data == want:
                return
        raise RuntimeError(f"no reply to {task_id} within {timeout:g} s")


async def work(burst: bool) -> Tally | None:
    nc = await nats.connect(NATS_URL)
    try:
        sub = await nc.jetstream().pull_subscribe_bind(DURABLE, STREAM)
        tally = Tally()
        while True:
            began = time.time()
            try:
                msgs = await sub.fetch(BATCH_SIZE, timeout=1.0)
            except NatsTimeout:
                if burst:
                    return tally
                continue
            for msg in msgs:
                await msg.ack()
                if not burst:
                    await nc.publish(REPLIES, msg.data)
            tally.took(began, len(msgs))
    finally:
        await nc.drain()


if __name__ == "__main__":
    run_worker(work)
