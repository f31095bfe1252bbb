"""Schedules in a KV bucket ``<prefix>_schedules``, one key per schedule id.

A claim is a KV update with the revision read (compare-and-set), so of several
schedulers exactly one wins each firing; the firing task's id is deterministic and its
delivery message carries it as ``Nats-Msg-Id``, so a repeated enqueue is a no-op.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from omniq.models import Schedule, encoder
from omniq.records import schedule_or_none

from .batch import Inbox
from .names import token, untoken

__all__ = ["ScheduleBucket"]


class ScheduleBucket:
    """The schedule half of the NATS task queue (mixed into :class:`NatsTaskQueue`)."""

    _schedules: KeyValue
    prefix: str

    if TYPE_CHECKING:  # provided by NatsStore

        @property
        def inbox(self) -> Inbox: ...

        def scan_bucket(self, bucket: str) -> AsyncIterator[tuple[str, bytes, int]]: ...

        async def remove_key(self, bucket: str, key: str, revision: int | None = None) -> bool: ...

    async def _read_schedule(self, schedule_id: str) -> tuple[Schedule, int] | None:
        try:
            entry = await self._schedules.get(token(schedule_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        assert entry.value is not None and entry.revision is not None
        schedule = schedule_or_none(schedule_id, entry.value, "the schedules bucket")
        return None if schedule is None else (schedule, entry.revision)

    async def _all_schedules(self) -> list[tuple[Schedule, int]]:
        """Every schedule with its revision. Every worker asks once a second (due
        firings): an empty bucket, as in most deployments, is told by its stream's
        message count, one small request, instead of a scan's ephemeral consumer
        (created, pulled and deleted: three round trips and the server's heaviest call)."""
        bucket = f"{self.prefix}_schedules"
        if not await self.inbox.stream_messages(f"KV_{bucket}"):
            return []
        found = []
        async for key, data, rev in self.scan_bucket(bucket):
            schedule = schedule_or_none(untoken(key), data, "the schedules bucket")
            if schedule is not None:
                found.append((schedule, rev))
        return found

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        await self._schedules.put(token(schedule.id), encoder.encode(schedule))
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        found = await self._read_schedule(schedule_id)
        return found[0] if found else None

    async def _list_schedules(self) -> list[Schedule]:
        return sorted((s for s, _ in await self._all_schedules()), key=lambda s: s.id)

    async def _delete_schedule(self, schedule_id: str) -> bool:
        return await self.remove_key(f"{self.prefix}_schedules", token(schedule_id))

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        while True:
            found = await self._read_schedule(schedule_id)
            if found is None:
                return False
            schedule, rev = found
            changes: dict[str, object] = {"paused": paused}
            if next_run is not None:
                changes["next_run"] = next_run
            updated = msgspec.structs.replace(schedule, **changes)
            try:
                await self._schedules.update(token(schedule_id), encoder.encode(updated), last=rev)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile (a claim): read again

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> list[tuple[Schedule, list[float]]]:
        won: list[tuple[Schedule, list[float]]] = []
        for schedule, rev in sorted(await self._all_schedules(), key=lambda p: p[0].id):
            if len(won) >= limit:
                break
            if schedule.paused or schedule.next_run > at:
                continue
            times, nxt = schedule.due_firings(at)
            if not times:
                continue
            claimed = msgspec.structs.replace(schedule, next_run=nxt, last_run=times[-1])
            try:
                await self._schedules.update(token(schedule.id), encoder.encode(claimed), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another scheduler claimed (or someone edited) it first
            won.append((schedule, times))
        return won
