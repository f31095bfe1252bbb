"""What a NATS query by task reads of a bulk history: the bundles its scan delivers.

    .venv/bin/python benchmarks/task_query_nats.py nats://127.0.0.1:4222 -n 200

Publishes ``n`` bundles of 512 ``enqueued`` events of other tasks (``n`` windows of a bulk
enqueue) in queue ``q`` on a fresh prefix, then one bundle for a task whose id
``new_id`` made after them and one for an application's id, and queries each task,
counting the bundles the scan delivers. The store's ``clock_skew`` is 0, standing for a
history older than the skew. The time of each query is rough on a loaded machine. The
prefix's stream is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from omniq.models import new_id
from omniq.testing import make_event
from omniq_backend_nats.events import BUNDLE, NatsEventStorage


async def main(url: str, windows: int) -> None:
    store = NatsEventStorage.from_url(url, prefix=f"tq{uuid.uuid4().hex[:8]}", clock_skew=0.0)
    async with store:
        read = [0]
        scan = store.scan

        async def counting(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for msg in scan(*args, **kwargs):
                read[0] += msg.subject.endswith(BUNDLE)
                yield msg

        store.scan = counting  # type: ignore[method-assign]
        try:
            for _ in range(windows):
                history = [make_event(queue="q") for _ in range(512)]
                await store.inbox.publish(store.bundles(history, store.nc.max_payload))
            ids = {"new_id": new_id(), "application id": "order-1"}
            for task_id in ids.values():
                event = make_event(task_id=task_id, queue="q")
                await store.inbox.publish(store.bundles([event], store.nc.max_payload))
            for name, task_id in ids.items():
                read[0] = 0
                began = time.perf_counter()
                found = await store.query(task_id=task_id)
                took = time.perf_counter() - began
                print(f"{name}: {len(found)} found, {read[0]} bundles read, {took:.3f} s")
        finally:
            await store.js.delete_stream(store.stream)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("-n", type=int, default=200, help="bundles of history")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.n))
