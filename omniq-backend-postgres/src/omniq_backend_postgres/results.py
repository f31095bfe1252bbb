"""Results on PostgreSQL: one row per task id, expiry swept by :meth:`cleanup`.

Every statement that writes results NOTIFYs ``omniq_<schema>_results`` with each task id
(:data:`UPSERT`, and the worker's ``finish_many``), so :meth:`wait` returns as soon as the
writing transaction commits.
"""

from __future__ import annotations

import asyncio
import binascii
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.interfaces import BaseResultStorage, Capability
from omniq.models import TaskResult, encoder, result_decoder
from omniq.records import result_or_stand_in

from .settings import PostgresSettings
from .store import EPOCH_NOW, PostgresStore, broadcast, compact, wait_event

__all__ = ["PostgresResultStorage"]

#: Largest serialized result (bytes) carried in its NOTIFY payload, as base64 after the
#: task id (payloads are limited to 8000 bytes): a waiter then needs no query. A larger
#: one, or one whose id has a space, is announced by its bare id, the older form, which
#: readers still understand. (A reader older than this form wakes on the bare id only:
#: it finds a carried result at its next check, see docs/backends/postgres.md.)
CARRIED_MAX = 512
#: What :data:`UPSERT_TEMPLATE` returns for each row written: its NOTIFY payload. The
#: base64's line breaks go by replace(), which finds them with a byte search, where
#: translate() decoded the text a character at a time (~3 % of the server's CPU while a
#: worker drained a queue, ``perf``).
NOTICE = (
    f"CASE WHEN octet_length(data) <= {CARRIED_MAX} AND strpos(task_id, ' ') = 0 "
    "THEN task_id || ' ' || replace(encode(data, 'base64'), E'\\n', '') "
    "ELSE task_id END AS notice"
)

#: What makes :data:`UPSERT_TEMPLATE` an upsert: without it, the INSERT of results not
#: stored yet (see ``queue.FINISH_MANY_NEW``).
ON_CONFLICT = """ON CONFLICT (task_id) DO UPDATE
SET state = excluded.state, finished_at = excluded.finished_at, expires_at = excluded.expires_at,
    data = excluded.data
"""
#: One row per result; :data:`UPSERT` takes a column of one element for all (see
#: :func:`.store.broadcast`).
UPSERT_TEMPLATE = f"""
INSERT INTO {{s}}.results (task_id, state, finished_at, expires_at, data)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::bytea[])
{ON_CONFLICT}RETURNING {NOTICE}
"""
#: The upsert, then a NOTIFY per result written, to wake :meth:`PostgresResultStorage.wait`
#: (delivered at commit; ``sql/0012_...``).
UPSERT = broadcast(
    f"WITH written AS ({UPSERT_TEMPLATE})\n"
    "SELECT count(pg_notify({results_channel}, notice)) FROM written"
)


def upsert_args(results: Sequence[TaskResult]) -> list[list[Any]]:
    """Column arrays for :data:`UPSERT`; a task id repeated in the batch keeps its last
    result (one statement cannot upsert a row twice); compacted (:func:`.store.compact`)."""
    latest = list({r.task_id: r for r in results}.values())
    return compact(
        [
            [r.task_id for r in latest],
            [r.state._value_ for r in latest],  # (``.value``: a Python-level property)
            [r.finished_at for r in latest],
            [r.expires_at for r in latest],
            [encoder.encode(r) for r in latest],
        ]
    )


#: Seconds between polls of wait() while no LISTEN connection is up.
POLL_INTERVAL = 0.25
#: Task ids :meth:`PostgresResultStorage.expect` remembers; past that many it starts
#: over (a forgotten one's wait reads first, as without a note).
EXPECTED_MAX = 1024
LIVE = f"(expires_at IS NULL OR expires_at > {EPOCH_NOW})"


class PostgresResultStorage(PostgresStore, BaseResultStorage):
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CROSS_PROCESS, Capability.RESULT_NOTIFY}
    )
    channel_suffix = "results"

    def __init__(self, settings: PostgresSettings) -> None:
        super().__init__(settings)
        #: Task id -> the listener's count when its enqueue was about to be sent.
        self._expected: dict[str, int] = {}

    def _expect(self, task_id: str) -> None:
        """Note the listener's count if it is listening now: every result written after
        this (none can exist before) is then heard, so :meth:`_wait` need not read first
        unless a notification for ``task_id``, or a drop, came since."""
        seen = self._seen()
        if seen is not None:
            expected = self._expected
            if len(expected) >= EXPECTED_MAX:
                expected.clear()
            expected[task_id] = seen

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        await self.execute(UPSERT, *upsert_args(results))

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        rows = await self.fetch(
            f"SELECT task_id, data FROM {{s}}.results WHERE task_id = ANY ($1::text[]) AND {LIVE}",
            list(task_ids),
        )
        return {row[0]: result_or_stand_in(row[0], row[1], "the results table") for row in rows}

    async def _delete(self, task_id: str) -> bool:
        return bool(
            await self.fetch("DELETE FROM {s}.results WHERE task_id = $1 RETURNING 1", task_id)
        )

    async def _cleanup(self) -> int:
        status = await self.execute(f"DELETE FROM {{s}}.results WHERE expires_at <= {EPOCH_NOW}")
        return int(status.split()[-1])

    async def _wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """The result as soon as its NOTIFY arrives, from the payload when it carries it
        (no query), else read back; polls only while the listening connection is down.
        The first read is skipped when :meth:`expect` saw the listener up before the
        task's enqueue and nothing for it was heard since (the NOTIFY will say)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        since = self._expected.pop(task_id, None)
        while True:
            async with self._watching([task_id]) as written:
                # Unheard: not written before the watch began, so its NOTIFY will come
                # (a wait that ends without one still reads, at the loop's next turn).
                skip = since is not None and not self._heard_since([task_id], since)
                since = None
                result = None if skip else await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or (remaining <= 0 and not skip):
                    return result
                await wait_event(
                    written, remaining if self.listening else min(remaining, POLL_INTERVAL)
                )
                if written.carried is not None:
                    result = carried_result(task_id, written.carried)
                    if result is not None:
                        return result


def carried_result(task_id: str, carried: str) -> TaskResult | None:
    """The result a NOTIFY payload carried (base64 after the id), or None to read it from
    the table instead: one that does not decode, or already expired (by this host's
    clock; the table's read judges by the server's)."""
    try:
        result = result_decoder.decode(binascii.a2b_base64(carried))
    except Exception:
        return None
    if result.task_id != task_id or (
        result.expires_at is not None and result.expires_at <= time.time()
    ):
        return None
    return result
