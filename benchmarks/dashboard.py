"""How long the dashboard's overview and task-list pages take with many tasks stored.

    python benchmarks/dashboard.py --backend postgres --tasks 1000000
    python benchmarks/dashboard.py --backend redis --tasks 1000000 --keep   # reuse the fill

Fills the store with bulk enqueues (``enqueue_many`` in batches; no events, so the
figures are about the task store), then times each page through the ASGI app in this
process (httpx's ASGI transport: server time, no network), reporting the median of
``--repeat`` requests after one warm-up. Servers come from OMNIQ_BENCH_POSTGRES_URL
(postgresql://postgres@127.0.0.1:5432/test) and OMNIQ_BENCH_REDIS_URL
(redis://127.0.0.1:6379/11); the data lives under its own schema / key prefix
"omniqdash", removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import httpx

from omniq import AsyncOmniQ
from omniq.models import Task, new_ids
from omniq_dashboard import create_app

NAME = "omniqdash"
POSTGRES_URL = os.environ.get(
    "OMNIQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OMNIQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
QUEUES = ("default", "mail", "reports", "billing")
NAMES = ("shop.send_mail", "shop.report", "shop.charge", "shop.resize", "shop.sync")
BATCH = 10_000
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for peers.cleanup


def store_url(backend: str, tmp: str) -> str:
    if backend == "postgres":
        return f"{POSTGRES_URL}?schema={NAME}"
    if backend == "redis":
        return f"{REDIS_URL}?key_prefix={NAME}"
    return f"sqlite:///{tmp}/dashboard-bench.db"


async def fill(app: AsyncOmniQ, count: int) -> float:
    """Enqueue ``count`` tasks (spread over queues and names); seconds taken."""
    started = time.perf_counter()
    at = time.time() - 1800
    payload = app.serializer.dumps_call(["someone@example.com"], {})
    done = 0
    while done < count:
        n = min(BATCH, count - done)
        tasks = [
            Task(
                id=task_id,
                name=NAMES[(done + i) % len(NAMES)],
                queue=QUEUES[(done + i) % len(QUEUES)],
                payload=payload,
                created_at=at + (done + i) * 1e-3,
            )
            for i, task_id in enumerate(new_ids(n))
        ]
        await app.task_queue.enqueue_many(tasks)
        done += n
        print(f"\r  filled {done:,}/{count:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


async def timed(client: httpx.AsyncClient, path: str, repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` GETs (after one warm-up), and the status."""
    first = await client.get(path)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        answer = await client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return statistics.median(times), first.status_code


async def cleanup(backend: str) -> None:
    from peers.cleanup import postgres_drop_schema, redis_delete

    if backend == "postgres":
        await postgres_drop_schema(POSTGRES_URL, NAME)
    elif backend == "redis":
        await redis_delete(REDIS_URL, [f"{NAME}:*"])


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="omniq-dashboard-bench-") as tmp:
        app = AsyncOmniQ(task_queue=store_url(args.backend, tmp), events=False)
        await app.open()
        try:
            have = sum(n for per in (await app.task_queue.stats()).values() for n in per.values())
            if have < args.tasks:
                print(f"{args.backend}: filling {args.tasks - have:,} tasks", file=sys.stderr)
                took = await fill(app, args.tasks - have)
                print(
                    f"{args.backend}: filled in {took:.1f} s "
                    f"({(args.tasks - have) / took:,.0f} tasks/s)"
                )
            web = create_app(app)
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as client:
                first = (await client.get("/tasks?queue=mail")).text
                marker = 'id="next-page" href="'
                cursor_path = (
                    first[first.index(marker) + len(marker) :]
                    .split('"', 1)[0]
                    .replace("&amp;", "&")
                )
                pages: dict[str, Any] = {
                    "overview": "/",
                    "overview (live part)": "/live/overview",
                    "task list": "/tasks",
                    "task list, one queue": "/tasks?queue=mail",
                    "task list, one queue, next page": cursor_path,
                    "task list, one name": "/tasks?name=shop.report",
                    "task list, one state": "/tasks?state=pending",
                }
                total = sum(
                    n for per in (await app.task_queue.stats()).values() for n in per.values()
                )
                print(f"{args.backend}, {total:,} tasks, median of {args.repeat}:")
                for label, path in pages.items():
                    ms, _ = await timed(client, path, args.repeat)
                    print(f"  {label:34} {ms:8.1f} ms")
        finally:
            await app.close()
            if not args.keep:
                await cleanup(args.backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "redis", "sqlite"], default="postgres")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the tasks for the next run")
    asyncio.run(main(parser.parse_args()))
