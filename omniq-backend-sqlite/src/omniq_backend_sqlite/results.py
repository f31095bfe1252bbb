"""SqliteResultStorage: one row per task id in ``omniq_results`` (a re-run overwrites)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiosqlite
import msgspec

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult
from omniq.records import unreadable_result

from ._db import SqliteStore, json_list
from ._rows import blob, encode_error
from ._schema import StoreKind

_COLUMNS = ("task_id", "state", "value", "error", "attempts", "started_at", "finished_at",
            "worker_id", "expires_at")  # fmt: skip
_COLUMNS_SQL = ", ".join(_COLUMNS)
_UPSERT = (
    f"INSERT OR REPLACE INTO omniq_results ({_COLUMNS_SQL})"
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_GET_MANY = f"""SELECT {_COLUMNS_SQL} FROM omniq_results
    WHERE task_id IN (SELECT value FROM json_each(?)) AND {_LIVE}"""
#: Seconds between data_version checks in :meth:`SqliteResultStorage._wait` (the
#: timer of the event loop rounds it up to 1 ms).
WAIT_TICK = 0.001


class SqliteResultStorage(SqliteStore, BaseResultStorage):
    """Results in ``omniq_results``; expired rows are hidden at once and deleted by
    :meth:`cleanup`. ``wait`` polls (SQLite has no cross-process notification)."""

    kind: ClassVar[StoreKind] = "results"
    capabilities = frozenset({Capability.CROSS_PROCESS})
    local_only = True
    # Where no data_version can be polled (``:memory:``, ``synchronous=FULL``), the base
    # class polls the read (~0.1 ms of this process's CPU, a hand-over to the thread):
    # every 1 ms for the first 0.1 s, so a short task's result is seen within a millisecond.
    wait_poll = 0.001
    wait_poll_flat = 0.1

    async def _wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Read the result, then wait for another connection's commit
        (:meth:`Database.next_commit`: woken by a store's commit signal where the
        platform has inotify, else checking ``PRAGMA data_version`` every
        ``WAIT_TICK``) and read
        again only if one came: a result only ever appears by a commit. Also reads
        every ``wait_poll_flat`` seconds, to be safe."""
        db = self.db
        version = db.data_version()
        if version is None:
            return await super()._wait(task_id, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        params = json_list([task_id])
        while True:
            rows = await db.read(_GET_MANY, (params, time.time()))
            if rows:
                return _decode(rows[0])
            check_at = min(deadline, loop.time() + self.wait_poll_flat)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                wait = min(remaining, check_at - loop.time())
                seen, version = version, await db.next_commit(version, wait, WAIT_TICK)
                if seen != version or version is None or loop.time() >= check_at:
                    break

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        async with self.db.transaction() as conn:
            await insert_results(conn, results)

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        rows = await self.db.fetch(_GET_MANY, (json_list(task_ids), time.time()))
        return {row[0]: _decode(row) for row in rows}

    async def _delete(self, task_id: str) -> bool:
        return bool(
            await self.db.fetch(
                "DELETE FROM omniq_results WHERE task_id = ? RETURNING task_id", (task_id,)
            )
        )

    async def _cleanup(self) -> int:
        rows = await self.db.fetch(
            "DELETE FROM omniq_results WHERE expires_at <= ? RETURNING task_id", (time.time(),)
        )
        return len(rows)


async def insert_results(conn: aiosqlite.Connection, results: Sequence[TaskResult]) -> None:
    """Store (or overwrite) ``results`` in the caller's transaction (the task queue's
    finish_many writes them with the completions)."""
    await conn.executemany(_UPSERT, [_params(r) for r in results])


def insert_results_now(conn: sqlite3.Connection, results: Sequence[TaskResult]) -> None:
    """:func:`insert_results` inside a :meth:`Database.run` transaction."""
    conn.executemany(_UPSERT, [_params(r) for r in results])


def _params(result: TaskResult) -> tuple[Any, ...]:
    return (
        result.task_id, result.state.value, None if result.value is None else blob(result.value),
        encode_error(result.error),
        result.attempts, result.started_at, result.finished_at, result.worker_id,
        result.expires_at,
    )  # fmt: skip


def _decode(row: Sequence[Any]) -> TaskResult:
    fields = dict(zip(_COLUMNS, row, strict=True))
    try:
        if fields["error"] is not None:
            fields["error"] = msgspec.json.decode(fields["error"])
        return msgspec.convert(fields, TaskResult)
    except (msgspec.MsgspecError, TypeError, ValueError) as exc:
        return unreadable_result(str(fields["task_id"]), exc, "omniq_results")
