"""The dependency cascade, run inside the transaction that changes the parent.

``omniq_task_deps`` has one row per (parent, child) for every child enqueued WAITING.
A child whose parent was deleted (cleanup, purge) counts that parent as satisfied: a
parent only disappears after it finished, and a failed one has already cancelled it.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from omniq.models import ErrorInfo

from ._db import json_list
from ._rows import encode_error

_MAKE_READY = """
UPDATE omniq_tasks
SET state = CASE WHEN eta IS NOT NULL AND eta > ? THEN 'scheduled' ELSE 'pending' END
WHERE state = 'waiting'
  AND id IN (SELECT child FROM omniq_task_deps
             WHERE parent IN (SELECT value FROM json_each(?)))
  AND NOT EXISTS (SELECT 1 FROM omniq_task_deps d JOIN omniq_tasks p ON p.id = d.parent
                  WHERE d.child = omniq_tasks.id AND p.state <> 'succeeded')
"""

_CANCEL_DOWN = """
WITH RECURSIVE down(id) AS (
    SELECT child FROM omniq_task_deps WHERE parent = ?
    UNION
    SELECT d.child FROM omniq_task_deps d JOIN down ON d.parent = down.id
)
UPDATE omniq_tasks
SET state = 'cancelled', finished_at = ?, error = ?
WHERE state = 'waiting' AND id IN (SELECT id FROM down)
"""


def dependency_error(parent: str, state: str) -> ErrorInfo:
    return ErrorInfo(type="DependencyFailed", message=f"dependency {parent!r} ended {state}")


async def make_ready(conn: aiosqlite.Connection, parents: Sequence[str], now: float) -> None:
    """WAITING children of ``parents`` whose parents all succeeded become ready."""
    if parents:
        await conn.execute(_MAKE_READY, (now, json_list(parents)))


async def cancel_dependents(conn: aiosqlite.Connection, parent: str, state: str, now: float) -> None:
    """Cancel every WAITING descendant of ``parent`` (which ended in ``state``)."""
    await conn.execute(_CANCEL_DOWN, (parent, now, encode_error(dependency_error(parent, state))))
