"""The dependency cascade, run inside the transaction that changes the parent.

``omniq_task_deps`` has one row per (parent, child) for every child enqueued, kept until
one of the two is deleted (``dependents`` reads it). The cascades change only WAITING
children: a child enqueued ready or cancelled had a parent that had already ended, and a
task ends once.
A child whose parent was deleted (cleanup, purge) counts that parent as satisfied: a
parent only disappears after it finished, and a failed one has already settled it; a
purge of one that had not succeeded cancels its waiting children in the same
transaction first (:func:`cancel_purged_dependents`).
A child with ``on_parent_failure = 'run'`` is never cancelled: it becomes ready once
every parent ended, however (:func:`omniq.lifecycle.initial_state`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from omniq.lifecycle import dependency_message, purge_message

from ._db import json_list
from ._schema import TERMINAL_SQL

_MAKE_READY = f"""
UPDATE omniq_tasks
SET state = CASE WHEN eta IS NOT NULL AND eta > ? THEN 'scheduled' ELSE 'pending' END
WHERE state = 'waiting'
  AND id IN (SELECT child FROM omniq_task_deps
             WHERE parent IN (SELECT value FROM json_each(?)))
  AND NOT EXISTS (SELECT 1 FROM omniq_task_deps d JOIN omniq_tasks p ON p.id = d.parent
                  WHERE d.child = omniq_tasks.id AND p.state <> 'succeeded'
                    AND (omniq_tasks.on_parent_failure <> 'run' OR p.state NOT IN {TERMINAL_SQL}))
"""

# Each descendant's error names its own parent on the path (the root for the root's
# children, a task cancelled by this cascade below them), worded as
# omniq.lifecycle.dependency_failure(). The cascade stops at a child that runs on failure.
_CANCEL_DOWN = """
WITH RECURSIVE down(id, parent) AS (
    SELECT d.child, d.parent FROM omniq_task_deps d JOIN omniq_tasks c ON c.id = d.child
    WHERE d.parent = :root AND c.on_parent_failure <> 'run'
    UNION
    SELECT d.child, d.parent FROM omniq_task_deps d JOIN down ON d.parent = down.id
    JOIN omniq_tasks c ON c.id = d.child WHERE c.on_parent_failure <> 'run'
)
UPDATE omniq_tasks
SET state = 'cancelled', finished_at = :now,
    error = json_object('type', 'DependencyFailedError', 'module', 'omniq.errors', 'message',
                        CASE WHEN c.parent = :root THEN :message
                        ELSE 'parent task ''' || c.parent || ''' ended cancelled' END)
FROM (SELECT id, CASE WHEN max(parent = :root) THEN :root ELSE min(parent) END AS parent
      FROM down GROUP BY id) AS c
WHERE omniq_tasks.id = c.id AND omniq_tasks.state = 'waiting'
RETURNING omniq_tasks.id
"""


async def make_ready(conn: aiosqlite.Connection, parents: Sequence[str], now: float) -> None:
    """WAITING children of ``parents`` whose parents all succeeded (or all ended, for a
    child that runs on failure) become ready."""
    if parents:
        await conn.execute(_MAKE_READY, (now, json_list(parents)))


async def cancel_dependents(
    conn: aiosqlite.Connection, parent: str, state: str, now: float
) -> None:
    """Cancel every WAITING descendant of ``parent`` (which ended in ``state``), down to
    those that run on failure, which become ready once all their parents ended."""
    await _cancel_down(conn, parent, dependency_message(parent, state), now)


async def cancel_purged_dependents(
    conn: aiosqlite.Connection, parents: Sequence[str], now: float
) -> None:
    """Before the edges of ``parents`` (purged before they succeeded) are forgotten: their
    WAITING descendants end as those of a cancelled parent do, the direct ones naming the
    purge (:func:`omniq.lifecycle.purge_failure`). Only those with dependents cost a
    statement: one per purged task made a 10,000-task purge thirty times slower."""
    if not parents:
        return
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT parent FROM omniq_task_deps"
        " WHERE parent IN (SELECT value FROM json_each(?))",
        (json_list(parents),),
    )
    for (parent,) in rows:
        await _cancel_down(conn, parent, purge_message(parent), now)


async def _cancel_down(conn: aiosqlite.Connection, parent: str, message: str, now: float) -> None:
    params = {"root": parent, "now": now, "message": message}
    rows = await conn.execute_fetchall(_CANCEL_DOWN, params)
    await make_ready(conn, [parent, *(row[0] for row in rows)], now)


def make_ready_now(conn: sqlite3.Connection, parents: Sequence[str], now: float) -> None:
    """:func:`make_ready` inside a :meth:`Database.run` transaction."""
    if parents:
        conn.execute(_MAKE_READY, (now, json_list(parents)))


def cancel_dependents_now(conn: sqlite3.Connection, parent: str, state: str, now: float) -> None:
    """:func:`cancel_dependents` inside a :meth:`Database.run` transaction."""
    params = {"root": parent, "now": now, "message": dependency_message(parent, state)}
    rows = conn.execute(_CANCEL_DOWN, params).fetchall()
    make_ready_now(conn, [parent, *(row[0] for row in rows)], now)
