"""What one NATS ``delay()`` costs: the client's and the server's CPU per call of ``n``
one-by-one enqueues (events on), awaited or through the blocking sync API, for A/B work
on a shared machine.

    .venv/bin/python benchmarks/delay_cpu_nats.py nats://127.0.0.1:4224 -n 10000 --pid PID
    .venv/bin/python benchmarks/delay_cpu_nats.py nats://127.0.0.1:4224 -n 10000 --sync

Opens an app on a fresh prefix (``delay<pid>``) for tasks, results and events, makes 50
calls to warm up, then times ``n`` calls of ``task.delay()`` of a no-op task: the rate
(rough on a loaded machine), this process's CPU (``os.times``) and, with ``--pid``, the
nats-server's (``/proc/<pid>/stat``, 10 ms ticks: use n >= 10,000) per call. The prefix's
streams are deleted afterwards. For the client's instructions per call, run it under
``valgrind --tool=callgrind`` with ``-n 0`` and ``-n 2000`` and divide the difference by
2,000.
"""

from __future__ import annotations

import asyncio
import os
import time

from drivers import arguments, cpu_seconds, noop_app, use_store


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def report(kind: str, n: int, wall: float, client: float, server: float | None) -> None:
    if n:
        shown = "" if server is None else f" server_us {server / n * 1e6:.1f}"
        print(f"{kind} n {n} rate {n / wall:,.0f}/s client_us {client / n * 1e6:.1f}{shown}")


def run_async(n: int, pid: int | None) -> None:
    app, noop = noop_app()

    async def main() -> None:
        await app.open()
        try:
            for _ in range(50):
                await noop.delay()
            server, client, started = (
                cpu_seconds(pid) if pid else 0.0,
                own_cpu(),
                time.perf_counter(),
            )
            for _ in range(n):
                await noop.delay()
            wall, client = time.perf_counter() - started, own_cpu() - client
            report("async", n, wall, client, cpu_seconds(pid) - server if pid else None)
        finally:
            await app.close()

    asyncio.run(main())


def run_sync(n: int, pid: int | None) -> None:
    from omniq import OmniQ

    app = OmniQ()

    @app.task(name="noop_sync")
    def noop() -> None:
        pass

    app.open()
    try:
        for _ in range(50):
            noop.delay()
        server, client, started = cpu_seconds(pid) if pid else 0.0, own_cpu(), time.perf_counter()
        for _ in range(n):
            noop.delay()
        wall, client = time.perf_counter() - started, own_cpu() - client
        report("sync", n, wall, client, cpu_seconds(pid) - server if pid else None)
    finally:
        app.close()


async def delete_streams(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith((f"{prefix}_", f"KV_{prefix}_")):
                await js.delete_stream(name)
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = arguments(__doc__, pid=True)
    parser.add_argument("--sync", action="store_true", help="the blocking sync API")
    args = parser.parse_args()
    prefix = f"delay{os.getpid()}"
    use_store(f"{args.url}?prefix={prefix}")
    try:
        (run_sync if args.sync else run_async)(args.n, args.pid)
    finally:
        asyncio.run(delete_streams(args.url, prefix))
