"""Where a PostgreSQL bulk enqueue's time goes: wall, the client's CPU, the server's CPU
and WAL per task of one ``enqueue_many`` (events on), for A/B work on a shared machine.

    .venv/bin/python benchmarks/bulk_cpu.py postgresql://postgres@127.0.0.1:5432/test -n 10000

Each round makes a fresh schema (``bulkcpu<pid>_<r>``), opens an app on it for tasks,
results and events, enqueues 500 to prepare the statements, then times one
``enqueue_many`` of ``n`` no-op tasks: wall (``perf_counter``), this process's CPU
(``os.times``), the CPU of the database's other sessions (``/proc`` counters: the
store's connections; 10 ms ticks) and the server's WAL (``pg_stat_wal``, the whole
server's, read once the app's connections closed: other databases' writes count too).
The schema is dropped after each round. ``--profile`` writes a cProfile of the last
round's ``enqueue_many`` to the given file.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import time

from drivers import (
    arguments,
    backend_pids,
    cpu_seconds,
    noop_app,
    print_medians,
    print_round,
    use_store,
)

WAL = "SELECT wal_records, wal_bytes FROM pg_stat_wal"


async def one_round(url: str, schema: str, n: int, profile: str | None) -> dict[str, float]:
    import asyncpg

    base = url.split("?")[0]
    store_url = f"{base}?schema={schema}"
    use_store(store_url)
    app, noop = noop_app()

    probe = await asyncpg.connect(base)
    try:
        await app.open()
        await app.enqueue_many(noop, [()] * 500)
        pids = await backend_pids(base)
        pids = [p for p in pids if p != probe.get_server_pid()]
        calls = [()] * n
        gc.collect()
        wal0 = await probe.fetchrow(WAL)
        before = os.times(), sum(map(cpu_seconds, pids))
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await app.enqueue_many(noop, calls)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - started
        after = os.times(), sum(map(cpu_seconds, pids))
        await app.close()  # (a backend reports its WAL counts by its exit at the latest)
        await asyncio.sleep(0.5)
        wal1 = await probe.fetchrow(WAL)
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        await probe.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await probe.close()
    own = after[0].user + after[0].system - before[0].user - before[0].system
    return {
        "rate": n / wall,
        "wall_us": wall / n * 1e6,
        "client_us": own / n * 1e6,
        "server_us": (after[1] - before[1]) / n * 1e6,
        "wal_records": (wal1[0] - wal0[0]) / n,
        "wal_bytes": (int(wal1[1]) - int(wal0[1])) / n,
    }


async def main(url: str, n: int, rounds: int, profile: str | None) -> None:
    results = []
    for r in range(rounds):
        figures = await one_round(url, f"bulkcpu{os.getpid()}_{r}", n, profile)
        results.append(figures)
        print_round(figures)
    print_medians(results)


if __name__ == "__main__":
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--batch", type=int, default=None, help="the app's ENQUEUE_BATCH")
    args = parser.parse_args()
    if args.batch:
        import omniq.app

        omniq.app.ENQUEUE_BATCH = args.batch
    asyncio.run(main(args.url, args.n, args.rounds, args.profile))
