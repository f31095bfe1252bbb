"""SqliteResultStorage: one row per task id in ``omniq_results`` (a re-run overwrites)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiosqlite
import msgspec

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult
from omniq.records import unreadable_result

from ._db import SqliteStore, json_list
from ._rows import encode_error
from ._schema import StoreKind

_COLUMNS = ("task_id", "state", "value", "error", "attempts", "started_at", "finished_at",
            "worker_id", "expires_at")  # fmt: skip
_COLUMNS_SQL = ", ".join(_COLUMNS)
_UPSERT = (
    f"INSERT OR REPLACE INTO omniq_results ({_COLUMNS_SQL})"
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SqliteResultStorage(SqliteStore, BaseResultStorage):
    """Results in ``omniq_results``; expired rows are hidden at once and deleted by
    :meth:`cleanup`. ``wait`` polls (SQLite has no cross-process notification)."""

    kind: ClassVar[StoreKind] = "results"
    capabilities = frozenset({Capability.CROSS_PROCESS})
    local_only = True
    # A poll is one indexed read by primary key (~0.1 ms of this process's CPU): every
    # 1 ms for the first 0.1 s, so a short task's result is seen within a millisecond.
    wait_poll = 0.001
    wait_poll_flat = 0.1

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        async with self.db.transaction() as conn:
            await insert_results(conn, results)

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS_SQL} FROM omniq_results
                WHERE task_id IN (SELECT value FROM json_each(?)) AND {_LIVE}""",
            (json_list(task_ids), time.time()),
        )
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


def _params(result: TaskResult) -> tuple[Any, ...]:
    return (
        result.task_id, result.state.value, result.value, encode_error(result.error),
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
