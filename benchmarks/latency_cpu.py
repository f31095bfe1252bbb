"""Enqueue-to-result latency with the CPU each side spends per task, for A/B work on a
shared machine where wall time alone says little.

    .venv/bin/python benchmarks/latency_cpu.py postgresql://postgres@127.0.0.1:5432/test?schema=lat
    .venv/bin/python benchmarks/latency_cpu.py <url> -n 300 --no-expect   # the wait reads first

One ``omniq worker`` subprocess (``bench_tasks:app``, events on) and ``n`` sequential
``delay()`` + ``get_result`` after 20 of warm-up. Prints wall p50/p99, then CPU per task:
this process (``os.times``), the worker and, on PostgreSQL, the database's backends
(``/proc`` counters, Linux, 10 ms ticks: use a few hundred tasks). ``--no-expect`` turns
the backend's ``_expect`` off (the base's no-op behind ``expect``), as before it
existed. It purges the queue it uses: give it an empty schema or database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from drivers import backend_pids, cpu_seconds, use_store

HERE = Path(__file__).resolve().parent
WORKER = [sys.executable, "-m", "omniq.cli", "worker", "--app", "bench_tasks:app", "--no-progress"]
WORKER += ["--log-level", "WARNING"]


async def main(url: str, n: int, expect: bool) -> None:
    sys.path.insert(0, str(HERE))
    use_store(url)
    from bench_tasks import app, noop_async

    from omniq.interfaces import BaseResultStorage

    await app.open()
    if not expect:
        type(app.result_storage)._expect = BaseResultStorage._expect  # type: ignore[method-assign]
    await app.purge()
    worker = subprocess.Popen(WORKER, cwd=HERE)  # noqa: ASYNC220 (once, before the clock)
    try:
        for _ in range(20):
            await app.get_result((await noop_async.delay()).id, timeout=60)
        pids = await backend_pids(url)
        before = os.times(), cpu_seconds(worker.pid), sum(map(cpu_seconds, pids))
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await app.get_result((await noop_async.delay()).id, timeout=60)
            samples.append(time.perf_counter() - started)
        after = os.times(), cpu_seconds(worker.pid), sum(map(cpu_seconds, pids))
    finally:
        worker.terminate()
        worker.wait()
        await app.close()
    samples.sort()
    own = (after[0].user + after[0].system - before[0].user - before[0].system) / n
    print(
        f"p50 {statistics.median(samples) * 1e3:.2f} ms, p99 "
        f"{samples[max(int(n * 0.99) - 1, 0)] * 1e3:.2f} ms; CPU per task: producer "
        f"{own * 1e3:.3f} ms, worker {(after[1] - before[1]) / n * 1e3:.3f} ms, server "
        f"{(after[2] - before[2]) / n * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--no-expect", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.n, not args.no_expect))
