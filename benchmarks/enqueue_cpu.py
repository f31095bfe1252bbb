"""A driver for counting the instructions of one-by-one ``delay()`` under callgrind, on a
store where wall time says little (a loaded machine).

    valgrind --tool=callgrind --callgrind-out-file=cg.%p .venv/bin/python \\
        benchmarks/enqueue_cpu.py redis://127.0.0.1:6379/11 async 2100
    # the same with 100 calls; per delay(): (I(2,100) - I(100)) / 2,000

Opens an app on ``url`` for tasks, results and events (events on), enqueues 200 no-op
tasks to warm up, freezes the heap (``gc.freeze()``: a full collection falling in one run
and not the other moves the count), then ``n`` more: awaited (``async``) or through the
blocking API (``sync``). It purges the queue it used: give it a database or key prefix
of its own.

``--slowdown K`` multiplies the library's paces in seconds (the portal's ``IDLE``,
SQLite's ``YIELD_EVERY``) by ``K``: under callgrind a ``delay()`` runs
~50x slower than natively, so a pace of 1 ms, once per ~10 calls natively, comes at
every call there, and the counts would show a cost a native run mostly skips.
"""

from __future__ import annotations

import argparse
import asyncio
import gc

from drivers import noop_app, use_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the store's URL (tasks, results and events)")
    parser.add_argument("mode", choices=("async", "sync"), help="awaited or blocking delay()")
    parser.add_argument("n", type=int, help="delay() calls after the warm-up")
    parser.add_argument(
        "--slowdown", type=float, default=1.0, help="multiply the library's paces by this"
    )
    args = parser.parse_args()
    if args.slowdown != 1.0:
        slow_paces(args.slowdown)
    use_store(args.url)
    if args.mode == "async":
        asyncio.run(awaited(args.n))
    else:
        blocking(args.n)


def slow_paces(factor: float) -> None:
    """Multiply the library's paces (those this version has) by ``factor``."""
    import importlib

    for module, names in (
        ("omniq.sync", ("IDLE",)),
        ("omniq_backend_sqlite._db", ("YIELD_EVERY",)),
    ):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            if hasattr(found, name):
                setattr(found, name, getattr(found, name) * factor)


async def awaited(n: int) -> None:
    app, noop = noop_app()

    await app.open()
    try:
        for _ in range(200):
            await noop.delay()
        gc.collect()
        gc.freeze()
        for _ in range(n):
            await noop.delay()
        await app.purge()
    finally:
        await app.close()


def blocking(n: int) -> None:
    app, noop = noop_app(blocking=True)

    app.open()
    try:
        for _ in range(200):
            noop.delay()
        gc.collect()
        gc.freeze()
        for _ in range(n):
            noop.delay()
        app.purge()
    finally:
        app.close()


if __name__ == "__main__":
    main()
