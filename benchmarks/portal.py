"""What the blocking API adds per call: an empty ``Portal.call``, and ``delay()`` through
``OmniQ`` against ``AsyncOmniQ`` on the same store, in alternated rounds.

    python benchmarks/portal.py redis://127.0.0.1:6379/5?key_prefix=portalbench -n 2000

Prints medians per call of wall time (``perf_counter``) and CPU time of the whole process
(``process_time``: both threads), and voluntary context switches (``getrusage``). The
store's tasks are purged at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from collections.abc import Callable

from omniq import AsyncOmniQ, OmniQ
from omniq.sync import Portal


def noop() -> None:
    """The task enqueued; never run."""


async def _nothing() -> None:
    pass


def timed(run: Callable[[], None], n: int) -> tuple[float, float, float]:
    """Wall and CPU microseconds and voluntary context switches per call of ``n``."""
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
    return wall / n * 1e6, cpu / n * 1e6, switches / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the store (task queue, results and events)")
    parser.add_argument("-n", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for variable in ("OMNIQ_TASK_QUEUE", "OMNIQ_RESULT_STORAGE", "OMNIQ_EVENT_STORAGE"):
        os.environ[variable] = args.url
    n = args.n
    sync_app, async_app = OmniQ(), AsyncOmniQ()
    sync_task = sync_app.task(name="noop")(noop)
    async_task = async_app.task(name="noop")(noop)
    loop = asyncio.new_event_loop()
    portal = Portal()

    async def async_delays() -> None:
        for _ in range(n):
            await async_task.delay()

    def sync_delays() -> None:
        for _ in range(n):
            sync_task.delay()

    def empty_calls() -> None:
        for _ in range(n):
            portal.call(_nothing)

    runs: dict[str, Callable[[], None]] = {
        "empty Portal.call": empty_calls,
        "async delay()": lambda: loop.run_until_complete(async_delays()),
        "sync delay()": sync_delays,
    }
    sync_app.open()
    loop.run_until_complete(async_app.open())
    try:
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                figures[name].append(timed(run, n))
        for name, rounds in figures.items():
            columns = zip(*rounds, strict=True)
            wall, cpu, switches = (statistics.median(column) for column in columns)
            print(f"{name:18} wall {wall:7.1f} us  cpu {cpu:7.1f} us  switches {switches:.2f}")
    finally:
        portal.stop()
        loop.run_until_complete(async_app.purge())
        loop.run_until_complete(async_app.close())
        sync_app.close()


if __name__ == "__main__":
    main()
