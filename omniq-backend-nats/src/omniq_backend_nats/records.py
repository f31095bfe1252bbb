"""The task records in the KV bucket ``<prefix>_tasks``, changed by compare-and-set.

Every change of a record is a compare-and-set on its revision: that gives atomic reserve
(one winner per record) and fenced completion. A record this instance wrote last is
changed from its cached copy (see :mod:`.leases`) without a read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from omniq.models import Task, encoder, task_decoder
from omniq.records import stand_in

from .batch import WRONG_REVISION, _windowed, puts, revisions
from .leases import LeaseCache, _Held
from .names import token, untoken


def _replace(task: Task, **changes: Any) -> Task:
    return msgspec.structs.replace(task, **changes)


def _unleased(task: Task, **changes: Any) -> Task:
    return _replace(task, lease_owner=None, lease_token=None, lease_deadline=None, **changes)


def _stand_in(task_id: str, exc: Exception) -> Task:
    """A record that does not decode, as a ready stand-in: reserve leases it (writing
    it over the bad record) and the worker dead-letters it (:mod:`omniq.records`)."""
    return stand_in(task_id, exc, "the tasks bucket")


class TaskRecords(LeaseCache):
    """Reads and compare-and-sets of task records, one by one or in batches."""

    _tasks: KeyValue

    async def _read(self, task_id: str) -> tuple[Task, int] | None:
        try:
            entry = await self._tasks.get(token(task_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        assert entry.value is not None and entry.revision is not None
        try:
            return task_decoder.decode(entry.value), entry.revision
        except Exception as exc:
            return _stand_in(task_id, exc), entry.revision

    async def _mutate(
        self, task_id: str, change: Callable[[Task], Task | None]
    ) -> tuple[Task, Task] | None:
        """Compare-and-set ``change(record)`` until it sticks; ``(old, new)``, or None
        when the record is missing or ``change`` refuses it."""
        while True:
            found = await self._read(task_id)
            if found is None:
                return None
            old, rev = found
            new = change(old)
            if new is None:
                return None
            try:
                rev = await self._tasks.update(token(task_id), encoder.encode(new), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            held = self._held.get(task_id)
            if held is not None:
                held.record, held.record_rev = new, rev
            return old, new

    async def _change_many(
        self, changes: Sequence[tuple[str, Callable[[Task], Task | None]]]
    ) -> list[tuple[Task, Task] | None]:
        """:meth:`_mutate` for many records. A record this instance wrote last is changed
        from its cached copy in one batch of compare-and-sets, without reads; the others,
        a refusal by the cached copy and a conflict go the reading way."""
        out: list[tuple[Task, Task] | None] = [None] * len(changes)
        fast: list[tuple[int, _Held, Task, Task]] = []
        for i, (task_id, change) in enumerate(changes):
            held = self._held.get(task_id)
            if held is not None and held.record is not None:
                new = change(held.record)
                if new is not None:
                    fast.append((i, held, held.record, new))
        cas = puts(
            self._tasks_bucket,
            [(token(changes[i][0]), encoder.encode(new), h.record_rev) for i, h, _, new in fast],
        )
        revs = revisions(await self.inbox.ask(cas)) if cas else []
        done = set()
        for (i, held, old, new), rev in zip(fast, revs, strict=True):
            if rev != WRONG_REVISION:
                held.record, held.record_rev = new, rev
                out[i] = (old, new)
                done.add(i)
        slow = [i for i in range(len(changes)) if i not in done]
        for i, changed in zip(
            slow, await _windowed(slow, lambda i: self._mutate(*changes[i])), strict=True
        ):
            out[i] = changed
        return out

    @property
    def _tasks_bucket(self) -> str:
        return f"{self.prefix}_tasks"

    async def _remove(self, bucket: str, task_id: str, revision: int | None = None) -> bool:
        return await self.remove_key(f"{self.prefix}_{bucket}", token(task_id), revision)

    async def _all_tasks(self) -> list[tuple[Task, int]]:
        found = []
        async for key, data, rev in self.scan_bucket(f"{self.prefix}_tasks"):
            try:
                found.append((task_decoder.decode(data), rev))
            except Exception as exc:
                found.append((_stand_in(untoken(key), exc), rev))
        return found
