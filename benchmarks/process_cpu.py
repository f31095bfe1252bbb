"""Where a PostgreSQL worker's processing time goes: one worker (in this process, events
on unless ``--no-events``) drains ``n`` pre-filled no-op tasks; per task it prints the
wall time, this process's CPU and the CPU of the store's server processes, for A/B work
on a shared machine where the wall time alone says little.

    .venv/bin/python benchmarks/process_cpu.py postgresql://postgres@127.0.0.1:5432/test -n 10000

Each round fills a fresh schema (``proccpu<pid>_<r>``) with ``enqueue_many`` (untimed),
then times ``Worker(app, burst=True).run()`` with concurrency 10 and ``--batch-size``
tasks a reserve (prefetch = batch - 10, compare.py's rule): this process's CPU
(``os.times``) and the CPU of the database's sessions (``/proc``, 10 ms ticks; the pool's
connections live until the app closes, after the clock). ``--profile FILE`` keeps a
cProfile of the last round's drain.

For instruction counts (callgrind), fill and drain in two processes so only the drain
runs under valgrind; its count for ``n`` tasks less its count for an empty queue is the
worker's per task::

    .venv/bin/python benchmarks/process_cpu.py URL --schema pc -n 2000 --fill
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python benchmarks/process_cpu.py URL --schema pc --drain

The same two steps with a SQLite or Redis URL (``--schema`` unused there) count the
worker's core on that store.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import time
from typing import Any

from drivers import (
    arguments,
    backend_pids,
    cpu_seconds,
    noop_app,
    print_medians,
    print_round,
    use_store,
)


def make_app(url: str, schema: str) -> tuple[Any, Any]:
    """A fresh app on ``schema`` with bench_tasks' no-op under its name."""
    use_schema(url, schema)
    return noop_app()


def use_schema(url: str, schema: str) -> str:
    """Point this process's stores at ``schema``; return the plain URL. Another store's
    URL (SQLite, Redis) is used as given, for the core's share of a drain there."""
    base = url.split("?")[0]
    postgres = url.startswith(("postgres://", "postgresql://"))
    use_store(
        f"{base}?schema={schema}" if postgres else url,
        events=os.environ.get("OMNIQ_EVENTS") != "false",
    )
    return base


async def fill(url: str, schema: str, n: int) -> None:
    app, noop = make_app(url, schema)
    await app.open()
    try:
        await app.purge()
        if n:
            await app.enqueue_many(noop, [()] * n)
    finally:
        await app.close()


async def drain(url: str, schema: str, batch: int, profile: str | None = None) -> dict[str, float]:
    """Run one burst worker over the schema's queue; the figures of that run."""
    app, _ = make_app(url, schema)
    base = url.split("?")[0]

    await app.open()
    try:
        worker = app.worker(burst=True, concurrency=10, prefetch=max(batch - 10, 0))
        before_n = sum(sum(v.values()) for v in (await app.task_queue.stats()).values())
        gc.collect()
        pids = await backend_pids(base)
        t0, s0 = os.times(), sum(map(cpu_seconds, pids))
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await worker.run(install_signals=False)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)  # type: ignore[arg-type]
        wall = time.perf_counter() - started
        # sessions the worker opened after the first look count from zero
        pids = sorted(set(pids) | set(await backend_pids(base)))
        t1, s1 = os.times(), sum(map(cpu_seconds, pids))
        n = worker.stats.processed
    finally:
        await app.close()
    client = t1.user + t1.system - t0.user - t0.system
    per = max(n, 1)
    return {
        "n": n,
        "queued": before_n,
        "rate": n / wall,
        "wall_us": wall / per * 1e6,
        "client_us": client / per * 1e6,
        "server_us": (s1 - s0) / per * 1e6,
    }


async def rounds(url: str, n: int, count: int, batch: int, profile: str | None) -> None:
    import asyncpg

    results = []
    for r in range(count):
        schema = f"proccpu{os.getpid()}_{r}"
        await fill(url, schema, n)
        figures = await drain(url, schema, batch, profile)
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()
        results.append(figures)
        print_round(figures)
    print_medians(results)


if __name__ == "__main__":
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100, help="tasks a reserve takes")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--no-events", action="store_true", help="the event log off")
    parser.add_argument("--schema", default=None, help="with --fill or --drain")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fill", action="store_true", help="only enqueue n tasks into --schema")
    mode.add_argument("--drain", action="store_true", help="only drain --schema once")
    args = parser.parse_args()
    os.environ.setdefault("OMNIQ_DISABLE_PLUGINS", "opentelemetry,prometheus")
    os.environ["OMNIQ_EVENTS"] = "false" if args.no_events else "true"
    if args.fill or args.drain:
        if not args.schema:
            parser.error("--fill and --drain need --schema")
        if args.fill:
            asyncio.run(fill(args.url, args.schema, args.n))
        else:
            print(asyncio.run(drain(args.url, args.schema, args.batch_size, args.profile)))
    else:
        asyncio.run(rounds(args.url, args.n, args.rounds, args.batch_size, args.profile))
