"""Peer task-queue libraries as harness ``Subject``s, one module per library.

Each module holds the library's no-op task, the worker entry its own CLI imports
(``PYTHONPATH`` holds ``benchmarks/``, so ``peers.arq_subject`` is importable) and the
subject class. The settings below are read from the environment so that the producer
(compare.py) and the worker subprocess agree on them.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = [
    "BATCH_SIZE",
    "CONCURRENCY",
    "NAME",
    "NATS_URL",
    "POLL",
    "POSTGRES_URL",
    "REDIS_URL",
    "SQLITE_DIR",
    "gather_chunked",
    "map_chunked",
    "window",
]

T = TypeVar("T")
Item = TypeVar("Item")

#: A database number nothing else in the repository uses; every library's keys are also
#: deleted by pattern afterwards, never with FLUSHDB.
REDIS_URL = os.environ.get("OMNIQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_URL = os.environ.get(
    "OMNIQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("OMNIQ_BENCH_NATS_URL", "nats://127.0.0.1:4222")

#: Queue name, key prefix, schema stem and stream name of every library under test.
#: ``OMNIQ_BENCH_NAME`` gives two runs sharing a server apart namespaces: pick names
#: neither of which starts with the other plus "_" or "-" (cleanup deletes NATS streams
#: and keys by prefix).
NAME = os.environ.get("OMNIQ_BENCH_NAME", "omniqbench")
if not re.fullmatch(r"[a-z][a-z0-9]*", NAME):
    raise ValueError(f"OMNIQ_BENCH_NAME={NAME!r}: expected lower-case letters and digits")
#: The directory of the SQLite subjects' files, made at first import by the producer and
#: inherited by the worker subprocesses through the environment; compare.py removes it.
if "OMNIQ_BENCH_SQLITE_DIR" not in os.environ:
    os.environ["OMNIQ_BENCH_SQLITE_DIR"] = tempfile.mkdtemp(prefix=f"{NAME}-sqlite-")
SQLITE_DIR = os.environ["OMNIQ_BENCH_SQLITE_DIR"]
#: Tasks one worker process runs at once: OmniQ's default, set on every peer too.
CONCURRENCY = 10
#: Jobs a worker fetches per round trip where the library has such a knob (pgqueuer's
#: ``--batch-size``); compare.py's ``--batch-size`` sets it.
BATCH_SIZE = int(os.environ.get("OMNIQ_BENCH_BATCH_SIZE", CONCURRENCY))
#: Seconds between two polls where a library's documented way to await a task polls.
POLL = 0.002
#: Single enqueues in flight at once where a library has no bulk call.
BATCH_WIDTH = 100


async def gather_chunked(
    call: Callable[[], Awaitable[T]], n: int, width: int = BATCH_WIDTH
) -> list[T]:
    """``n`` calls, ``width`` at a time: the closest a library without a bulk call gets."""
    out: list[T] = []
    while len(out) < n:
        out += await asyncio.gather(*(call() for _ in range(min(width, n - len(out)))))
    return out


async def map_chunked(
    call: Callable[[Item], Awaitable[T]], items: list[Item], width: int = BATCH_WIDTH
) -> list[T]:
    """``call(item)`` for every item, ``width`` at a time (reading back job records)."""
    out: list[T] = []
    for i in range(0, len(items), width):
        out += await asyncio.gather(*(call(item) for item in items[i : i + width]))
    return out


def window(spans: list[tuple[float, float] | None], ids: list[str]) -> tuple[float, float]:
    """First start and last finish over ``(started, finished)`` epoch pairs, one per task
    id; ``None`` marks a task that has not succeeded."""
    missing = [task_id for task_id, span in zip(ids, spans, strict=True) if span is None]
    if missing:
        raise RuntimeError(f"{len(missing)} task(s) did not succeed, e.g. {missing[0]}")
    done = [span for span in spans if span is not None]
    return min(s for s, _ in done), max(f for _, f in done)
