"""Reserve under global limits (:mod:`omniq.limits`), in one transaction.

The candidates are locked ``FOR UPDATE SKIP LOCKED`` as a plain reserve locks them; then
the rows of ``<schema>.limits`` the candidates need (their rate keys, and ``run:<name>``
per task name with a concurrency limit) are locked in key order, so reservers that share
a limit judge it one at a time, by ``clock_timestamp()`` read once they hold it.
Concurrency is a count of the name's running tasks whose lease has not lapsed: whatever
ends a lease (finish, retry, release, cancel, a lapse) gives the slot back, with no
counter to keep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omniq.limits import SCAN_AHEAD, Gate, Limits, Reservation

from .rows import TASK_COLUMNS
from .store import EPOCH_NOW

if TYPE_CHECKING:
    import asyncpg

    from .queue import PostgresTaskQueue

__all__ = ["reserve_limited"]

CANDIDATES = f"""
SELECT t.id, t.name, t.queue FROM {{s}}.tasks t
WHERE t.queue = ANY ($1::text[]) AND t.state IN ('pending', 'scheduled', 'retrying')
  AND (t.eta IS NULL OR t.eta <= {EPOCH_NOW})
  AND (t.expires_at IS NULL OR t.expires_at > {EPOCH_NOW})
ORDER BY t.priority DESC, t.seq
LIMIT $2
FOR UPDATE OF t SKIP LOCKED
"""
LOCK = """
INSERT INTO {s}.limits (key, next_at) SELECT k, -1 FROM unnest($1::text[]) AS k
ON CONFLICT (key) DO NOTHING
"""
STATE = """
SELECT key, next_at, extract(epoch FROM clock_timestamp())::float8 FROM {s}.limits
WHERE key = ANY ($1::text[]) ORDER BY key FOR UPDATE
"""
RUNNING = """
SELECT name, count(*) FROM {s}.tasks
WHERE state = 'running' AND lease_deadline > $2 AND name = ANY ($1::text[]) GROUP BY name
"""
SET_RATES = """
UPDATE {s}.limits l SET next_at = v.at FROM unnest($1::text[], $2::float8[]) AS v(key, at)
WHERE l.key = v.key
"""
LEASE = f"""
UPDATE {{s}}.tasks t
SET state = 'running', attempts = t.attempts + 1, lease_owner = $2,
    lease_token = gen_random_uuid()::text, lease_deadline = $3::float8 + $4, started_at = $3
WHERE t.id = ANY ($1::text[])
RETURNING t.priority, t.seq, {TASK_COLUMNS}
"""


async def reserve_limited(
    queue: PostgresTaskQueue,
    queues: list[str],
    worker_id: str,
    lease: float,
    limit: int,
    limits: Limits,
) -> tuple[list[asyncpg.Record], Reservation]:
    """The leased rows (``priority, seq, TASK_COLUMNS``, in reserve order) and the
    answer without its tasks (the caller decodes the rows)."""
    sql = queue.sql

    async def work(conn: asyncpg.Connection) -> tuple[list[Any], Reservation]:
        found = await conn.fetch(sql(CANDIDATES), queues, limit + SCAN_AHEAD)
        if not found:
            return [], Reservation([])
        cands = [(row[1], row[2]) for row in found]
        rates = Gate.rate_keys(limits, cands)
        capped = Gate.capped_names(limits, cands)
        keys = sorted([*rates, *(f"run:{name}" for name in capped)])
        if keys:
            await conn.execute(sql(LOCK), keys)
            state = await conn.fetch(sql(STATE), keys)
            now = state[0][2]
            next_at = {row[0]: row[1] for row in state}
        else:
            now = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            next_at = {}
        running: dict[str, int] = {}
        if capped:
            running = {r[0]: r[1] for r in await conn.fetch(sql(RUNNING), capped, now)}
        gate = Gate(limits, now, next_at, running)
        ids = [row[0] for row in found if gate.admit(row[1], row[2])][:limit]
        if gate.changed:
            changed = sorted(gate.changed)
            await conn.execute(sql(SET_RATES), changed, [gate.next_at[k] for k in changed])
        rows = await conn.fetch(sql(LEASE), ids, worker_id, now, lease) if ids else []
        rows.sort(key=lambda row: (-row[0], row[1]))
        return rows, Reservation([], gate.retry_in, gate.deferred)

    result: tuple[list[Any], Reservation] = await queue._run(work, transaction=True)
    return result
