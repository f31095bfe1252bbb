"""Event storage: an append-only log, one file per appended batch.

A batch's file name holds when it was appended (so name order is append order) and the
range of its timestamps (so ``since``/``until`` queries and cleanup skip whole files
without reading them)::

    events/<appended ns, 20 digits>-<random>-<min ms>-<max ms>
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import msgspec

from omniq.interfaces import BaseEventStorage
from omniq.models import TaskEvent, encoder
from omniq.records import decode_or_skip

from .location import Location
from .store import FilesStore

__all__ = ["FsspecEventStorage", "LocalEventStorage"]

_batch_decoder = msgspec.msgpack.Decoder(list[TaskEvent])
_clock_lock = threading.Lock()
_last_ns = 0


def _append_ns() -> int:
    """Strictly increasing in this process, so two batches never tie."""
    global _last_ns
    with _clock_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def _batch_name(events: Sequence[TaskEvent]) -> str:
    low = math.floor(min(e.timestamp for e in events) * 1000)
    high = math.ceil(max(e.timestamp for e in events) * 1000)
    return f"{_append_ns():020d}-{uuid.uuid4().hex[:12]}-{low}-{high}"


def _bounds(name: str) -> tuple[float, float]:
    """The (low, high) timestamps a batch file may hold, from its name."""
    low, high = name.rsplit("-", 2)[1:]
    return int(low) / 1000, int(high) / 1000


class FsspecEventStorage(FilesStore, BaseEventStorage):
    """Events under ``<base_dir>/events/`` on any fsspec file system."""

    local_only: ClassVar[bool] = False

    @classmethod
    def _class_for(cls, location: Location) -> Any:
        return LocalEventStorage if location.local else FsspecEventStorage

    def _append(self, events: Sequence[TaskEvent]) -> None:
        self.files.write(f"events/{_batch_name(events)}", encoder.encode(events))

    def _batches(
        self, since: float | None, until: float | None
    ) -> list[tuple[str, list[TaskEvent]]]:
        names = [
            n
            for n in self.files.list("events")
            if not (
                (since is not None and _bounds(n)[1] < since)
                or (until is not None and _bounds(n)[0] >= until)
            )
        ]
        found = self.files.read_many([f"events/{n}" for n in names])
        where = "the events directory"
        decoded = (
            (n, decode_or_skip(_batch_decoder.decode, found[f"events/{n}"], where, n))
            for n in names
            if f"events/{n}" in found
        )
        return [(n, events) for n, events in decoded if events is not None]

    def _select(
        self,
        task_id: str | None,
        queue: str | None,
        types: set[str] | None,
        since: float | None,
        until: float | None,
    ) -> list[TaskEvent]:
        return [
            e
            for _, batch in self._batches(since, until)
            for e in batch
            if (task_id is None or e.task_id == task_id)
            and (queue is None or e.queue == queue)
            and (types is None or e.type.value in types)
            and (since is None or e.timestamp >= since)
            and (until is None or e.timestamp < until)
        ]

    def _sweep(self, older_than: float) -> int:
        deleted = 0
        for name, batch in self._batches(None, older_than):
            keep = [e for e in batch if e.timestamp >= older_than]
            if len(keep) == len(batch):
                continue
            if keep:
                self.files.write(f"events/{name}", encoder.encode(keep))
            else:
                self.files.delete(f"events/{name}")
            deleted += len(batch) - len(keep)
        return deleted

    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        await self._run(self._append, list(events))

    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: Iterable[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> list[TaskEvent]:
        wanted = None if types is None else set(types)
        found = await self._run(self._select, task_id, queue, wanted, since, until)
        found.sort(key=lambda e: e.timestamp)  # stable: ties keep append order
        if order == "desc":
            found.reverse()
        return found if limit is None else found[:limit]

    async def _cleanup(self, older_than: float) -> int:
        return await self._run(self._sweep, older_than)


class LocalEventStorage(FsspecEventStorage):
    """``file://`` and ``memory://`` events: data never leaves this machine."""

    local_only: ClassVar[bool] = True
