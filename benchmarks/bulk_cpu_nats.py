"""What a NATS bulk enqueue costs the server: nats-server CPU and messages stored per
task of one ``enqueue_many`` (events on), for A/B work on a shared machine.

    .venv/bin/python benchmarks/bulk_cpu_nats.py nats://127.0.0.1:4223 -n 10000 --pid PID

Opens an app on a fresh prefix (``bulk<pid>``) for tasks, results and events, enqueues
200 to warm up, then times one ``enqueue_many`` of ``n`` no-op tasks: the rate (rough on
a loaded machine), this process's CPU (``os.times``), the CPU of the nats-server process
``--pid`` (``/proc/<pid>/stat``; both in 10 ms ticks: use n >= 10,000) and the messages
the three streams gained per task. The prefix's streams are deleted afterwards. For the
client's instructions per task, run it under ``valgrind --tool=callgrind`` with ``-n 0``
and ``-n 2000`` and divide the difference by 2,000. ``--raw`` measures raw bulk
publishing instead, as ``peers/raw_nats_subject.py`` does it (``js.publish_async`` per
id into a stream of its own, then ``publish_async_completed``), per message.
"""

from __future__ import annotations

import asyncio
import os
import time

from drivers import arguments, cpu_seconds, noop_app, use_store


async def main(url: str, n: int, pid: int | None) -> None:
    import nats

    prefix = f"bulk{os.getpid()}"
    use_store(f"{url}?prefix={prefix}")
    app, noop = noop_app()

    nc = await nats.connect(url)
    js = nc.jetstream()
    streams = (f"{prefix}_queue", f"{prefix}_events", f"KV_{prefix}_tasks")

    async def messages() -> int:
        return sum([(await js.stream_info(s)).state.messages for s in streams])

    try:
        await app.open()
        await app.enqueue_many(noop, [()] * 200)
        stored = await messages()
        cpu = cpu_seconds(pid) if pid else 0.0
        own = os.times()
        started = time.perf_counter()
        if n:
            await app.enqueue_many(noop, [()] * n)
        wall = time.perf_counter() - started
        after = os.times()
        own_s = after.user + after.system - own.user - own.system
        cpu = (cpu_seconds(pid) if pid else 0.0) - cpu
        stored = await messages() - stored
        await app.close()
        if n:
            server = f" server_us {cpu / n * 1e6:.1f}" if pid else ""
            print(
                f"n {n} rate {n / wall:,.0f}/s client_us {own_s / n * 1e6:.1f}{server} "
                f"messages/task {stored / n:.2f}"
            )
    finally:
        buckets = ("leases", "children", "schedules", "results", "workers", "limits")
        for name in (*streams, *(f"KV_{prefix}_{b}" for b in buckets)):
            try:
                await js.delete_stream(name)
            except Exception:
                pass
        await nc.close()


async def raw(url: str, n: int, pid: int | None) -> None:
    import uuid

    import nats
    from nats.js.api import StreamConfig

    name = f"raw{os.getpid()}"
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.jobs"]))
    try:
        for _ in range(200):
            await js.publish_async(f"{name}.jobs", uuid.uuid4().hex.encode())
        await js.publish_async_completed()
        ids = [uuid.uuid4().hex for _ in range(n)]
        cpu = cpu_seconds(pid) if pid else 0.0
        own = os.times()
        started = time.perf_counter()
        for task_id in ids:
            await js.publish_async(f"{name}.jobs", task_id.encode())
        await js.publish_async_completed()
        wall = time.perf_counter() - started
        after = os.times()
        cpu = (cpu_seconds(pid) if pid else 0.0) - cpu
        if n:
            own_s = after.user + after.system - own.user - own.system
            server = f" server_us {cpu / n * 1e6:.1f}" if pid else ""
            print(f"raw n {n} rate {n / wall:,.0f}/s client_us {own_s / n * 1e6:.1f}{server}")
    finally:
        await js.delete_stream(name)
        await nc.close()


if __name__ == "__main__":
    parser = arguments(__doc__, pid=True)
    parser.add_argument("--raw", action="store_true", help="raw bulk publishing instead")
    args = parser.parse_args()
    asyncio.run((raw if args.raw else main)(args.url, args.n, args.pid))
