"""Huey on Redis (``RedisHuey``) and on SQLite (``SqliteHuey``) as benchmark subjects; the
worker is huey's own consumer, ``huey_consumer peers.huey_subject.<huey> -w 10 -k thread``.

Huey is synchronous: a thread worker pool (10 threads, the concurrency every library
gets) in one consumer process. It has no burst mode and no bulk call (``Task.map``
enqueues one by one) and stores no timestamps, so the no-op returns when it finished and
the window runs from the first finish to the last (as for taskiq). Results are read with
``peek_many`` (one ``HMGET`` / ``SELECT`` per 1,000).

On Redis the consumer's threads block on ``BRPOP`` (``blocking=True``, huey's default)
and ``notify_result=True`` makes a result wake the producer's ``Result.get`` through
``BLPOP``. SQLite cannot wake anyone: the consumer's threads poll the queue, from 1 ms
after an empty poll growing by huey's backoff (x1.15) up to 2 ms (``-d 0.001 -m
0.002``; the defaults, 0.1 s up to 10 s, would make the latency the poll interval), and
``Result.get`` polls every 2 ms (``max_delay``). The SQLite file uses huey's defaults
(WAL; SQLite's default ``synchronous=FULL``: huey's ``fsync`` switch offers FULL or OFF,
not OmniQ's NORMAL).
"""

from __future__ import annotations

import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from huey import Huey, RedisHuey, SqliteHuey
from huey.exceptions import ResultTimeout

from . import CONCURRENCY, NAME, POLL, REDIS_URL, SQLITE_DIR
from .cleanup import redis_delete, sqlite_remove

HUEY_NAME = f"{NAME}-huey"
SQLITE_PATH = Path(SQLITE_DIR) / "huey.db"
#: Ids whose results one read covers.
CHUNK = 1000


def noop() -> float:
    """The no-op task; returns when it finished (huey stores no timestamps)."""
    return time.time()


@cache
def make(kind: str) -> tuple[Huey, Any]:
    """The huey instance for ``kind`` and its no-op task, made on first use so that
    importing this module for one backend touches nothing of the other."""
    huey: Huey = (
        RedisHuey(HUEY_NAME, url=REDIS_URL, notify_result=True)
        if kind == "redis"
        else SqliteHuey(HUEY_NAME, filename=str(SQLITE_PATH))
    )
    return huey, huey.task(name="noop")(noop)


def __getattr__(name: str) -> Any:
    """``huey_redis`` / ``huey_sqlite``: what ``huey_consumer`` imports."""
    if name in ("huey_redis", "huey_sqlite"):
        return make(name.removeprefix("huey_"))[0]
    raise AttributeError(name)


class HueySubject:
    """Huey on ``kind``; the subclasses below are what compare.py loads."""

    name = "huey"
    kind = ""
    has_burst = False
    notes: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.huey, self.task = make(self.kind)

    async def open(self) -> None:
        await self.clear()

    async def close(self) -> None:
        await self.clear()
        if self.kind == "sqlite":
            await sqlite_remove(SQLITE_PATH)

    async def enqueue_one(self) -> str:
        return str(self.task().id)

    async def enqueue_bulk(self, n: int) -> list[str]:
        return [str(result.id) for result in self.task.map([()] * n)]

    async def clear(self) -> None:
        self.huey.flush()
        if self.kind == "redis":  # its counters and result notifications too
            await redis_delete(REDIS_URL, [f"huey.*.{self.huey.storage.name}*"])

    def worker_command(self, burst: bool) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            f"peers.huey_subject.huey_{self.kind}",
            "--workers",
            str(CONCURRENCY),
            "--worker-type",
            "thread",
            "--no-periodic",
            "--quiet",
        ]
        if self.kind == "sqlite":
            command += ["--delay", "0.001", "--max-delay", "0.002"]
        return command

    async def processing_window(self, task_ids: list[str]) -> tuple[float, float]:
        finished: list[float] = []
        for i in range(0, len(task_ids), CHUNK):
            chunk = task_ids[i : i + CHUNK]
            values = self.huey.storage.peek_many(chunk)
            if len(values) < len(chunk):
                missing = next(t for t in chunk if t not in values)
                raise RuntimeError(
                    f"{len(chunk) - len(values)} task(s) did not succeed, e.g. {missing}"
                )
            finished += [self.huey.serializer.deserialize(v) for v in values.values()]
        return min(finished), max(finished)

    async def wait_result(self, task_id: str, timeout: float) -> None:
        try:
            self.huey.result(task_id, blocking=True, timeout=timeout, max_delay=POLL, preserve=True)
        except ResultTimeout:
            raise RuntimeError(f"huey task {task_id} has no result after {timeout:g} s") from None


class HueyRedisSubject(HueySubject):
    kind = "redis"
    notes: ClassVar[list[str]] = [
        "RedisHuey(notify_result=True); huey_consumer -w 10 -k thread (BRPOP), no burst mode",
        (
            "bulk = Task.map (one enqueue per task: huey has no bulk call); latency via "
            "Result.get(blocking=True) (BLPOP on the result notification)"
        ),
    ]


class HueySqliteSubject(HueySubject):
    kind = "sqlite"
    notes: ClassVar[list[str]] = [
        (
            "SqliteHuey (huey's defaults: WAL, synchronous=FULL); huey_consumer -w 10 -k thread "
            "-d 0.001 -m 0.002 (threads poll every 1-2 ms), no burst mode"
        ),
        f"bulk = Task.map (one enqueue per task); latency via Result.get polling every {POLL}s",
    ]
