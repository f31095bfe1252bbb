"""Where a one-by-one enqueue's wall time goes on Redis: the client's CPU and
redis-server's, user and system apart, for OmniQ's ``delay()`` (awaited and blocking,
events on or off) against huey's enqueue and a raw ``LPUSH``, in alternated rounds.

    benchmarks/.venv-peers/bin/python benchmarks/enqueue_split_redis.py \\
        "redis://127.0.0.1:6379/9?key_prefix=split" -n 5000 --rounds 3

Each line gives, per call: the wall time, the calling process's user and system CPU
(``os.times``), redis-server's user and system CPU (its ``/proc`` counters, 10 ms ticks:
~2 µs a call at 5,000 calls) and the rest (waiting on neither: wake-ups, the loopback).
The server must be this machine's and otherwise idle. It purges what it enqueued; give
it a database or key prefix of its own. huey needs the peers' virtualenv
(``benchmarks/peers/setup.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from drivers import TICK, noop_app, use_store

MODES = ("awaited", "blocking", "awaited-no-events", "huey", "lpush")


def server_times(pid: int) -> tuple[float, float]:
    """redis-server's user and system CPU seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


Snapshot = tuple[float, Any, tuple[float, float]]


def snapshot(pid: int) -> Snapshot:
    return time.perf_counter(), os.times(), server_times(pid)


def per_call(n: int, before: Snapshot, after: Snapshot) -> dict[str, float]:
    """µs per call between two snapshots of ``n`` calls."""
    (t0, c0, s0), (t1, c1, s1), per = before, after, 1e6 / n
    figures = {
        "wall": (t1 - t0) * per,
        "client_user": (c1.user - c0.user) * per,
        "client_sys": (c1.system - c0.system) * per,
        "server_user": (s1[0] - s0[0]) * per,
        "server_sys": (s1[1] - s0[1]) * per,
    }
    figures["rest"] = figures["wall"] - sum(v for k, v in figures.items() if k != "wall")
    return figures


def measure(pid: int, n: int, call: Callable[[], Any]) -> dict[str, float]:
    """Per call, in µs, of ``n`` calls of ``call`` (after a warm-up, the heap frozen)."""
    for _ in range(200):
        call()
    gc.collect()
    gc.freeze()
    before = snapshot(pid)
    for _ in range(n):
        call()
    return per_call(n, before, snapshot(pid))


def omniq_round(url: str, mode: str, n: int, pid: int) -> dict[str, float]:
    use_store(url, events=mode != "awaited-no-events")
    if mode == "blocking":
        app, noop = noop_app(blocking=True)
        app.open()
        try:
            return measure(pid, n, noop.delay)
        finally:
            app.purge()
            app.close()

    async def awaited() -> dict[str, float]:
        app, noop = noop_app()
        await app.open()
        try:
            for _ in range(200):
                await noop.delay()
            gc.collect()
            gc.freeze()
            before = snapshot(pid)
            for _ in range(n):
                await noop.delay()
            return per_call(n, before, snapshot(pid))
        finally:
            await app.purge()
            await app.close()

    return asyncio.run(awaited())


def peer_round(url: str, mode: str, n: int, pid: int) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    if mode == "lpush":
        key = "omniq-split-lpush"
        try:
            return measure(pid, n, lambda: client.lpush(key, pickle.dumps(("noop", (), {}))))
        finally:
            client.delete(key)
    from huey import RedisHuey

    huey = RedisHuey("omniq-split-huey", connection_pool=client.connection_pool)

    @huey.task()
    def noop() -> None:
        pass

    try:
        return measure(pid, n, noop)
    finally:
        huey.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a Redis URL with a database or key prefix of its own")
    parser.add_argument("-n", type=int, default=5000, help="calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    args = parser.parse_args()
    import redis

    pid = int(redis.Redis.from_url(args.url.split("?")[0]).info("server")["process_id"])
    modes = args.modes.split(",")
    rounds: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            run = peer_round if mode in ("huey", "lpush") else omniq_round
            rounds[mode].append(run(args.url, mode, args.n, pid))
    for mode, found in rounds.items():
        medians: dict[str, Any] = {k: statistics.median(f[k] for f in found) for k in found[0]}
        print(
            f"{mode:18s} {1e6 / medians['wall']:8,.0f}/s "
            + " ".join(f"{k} {v:6.1f}" for k, v in medians.items())
        )


if __name__ == "__main__":
    main()
