"""The lease index ``<prefix>_leases`` and this instance's cache of the leases it holds.

A running task's lease is indexed by an entry of its own (key: the task id) or, for the
tasks of one batched reserve, by one entry listing them all. The cache remembers what
this instance wrote for each lease it holds, so that finishing, extending and acking
need no reads in the common case (the one process that reserved a task finishes it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from omniq.models import Task, TaskState, encoder

from .batch import Request
from .connection import NatsStore
from .names import token


class _Lease(msgspec.Struct, array_like=True):
    """A running task's entry in ``<prefix>_leases``."""

    token: str
    deadline: float
    reply: str  # ack subject of the held message


class _Listed(msgspec.Struct, array_like=True):
    """One lease in a batch entry of ``<prefix>_leases`` (see :class:`_Held`)."""

    task_id: str
    token: str
    deadline: float
    reply: str

    def lease(self) -> _Lease:
        return _Lease(self.token, self.deadline, self.reply)


@dataclass(slots=True)
class _Held:
    """What this instance last wrote for a lease it holds: the lease and (when it
    reserved or changed the task itself) the record with its revision. Finishing then
    needs no read: the compare-and-set on the cached revision fails, and falls back to a
    read, if anyone changed the record since.

    The lease is indexed either by an entry of its own (key: the task id; ``lease_rev``)
    or, for the tasks of one batched reserve, by one entry listing them all (key
    ``=<instance><n>``, which no task id token can spell; ``batch``): one write per
    reserve, removed once the last of its tasks ends here."""

    lease: _Lease
    lease_rev: int
    record: Task | None = None
    record_rev: int = 0
    batch: str | None = None


_lease_decoder = msgspec.msgpack.Decoder(_Lease)
_listed_decoder = msgspec.msgpack.Decoder(list[_Listed])
#: Leases index keys of batch entries start with this (never the first character of a token).
_BATCH = "="
#: Spare batch entries an instance keeps at most (past that, an ended batch's goes).
_SPARE_MAX = 64


def _holds(task: Task, lease_token: str | None) -> bool:
    return (
        task.state is TaskState.RUNNING
        and lease_token is not None
        and task.lease_token == lease_token
    )


class LeaseCache(NatsStore):
    """The lease entries of ``<prefix>_leases`` and what this instance holds of them;
    the lowest layer of :class:`~.queue.NatsTaskQueue`, since a record written by this
    instance is cached with its lease."""

    _leases: KeyValue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Leases this instance wrote, by task id: saves reads per completion.
        self._held: dict[str, _Held] = {}
        #: Batch entries this instance wrote: key -> (its leases still held here, revision).
        self._batches: dict[str, tuple[dict[str, _Listed], int]] = {}
        self._batch_prefix = f"{_BATCH}{uuid.uuid4().hex[:12]}-"
        self._batch_count = 0
        #: Batch entries whose leases all ended here, ``(key, revision)``, still in the
        #: bucket listing them: the next batched reserve overwrites one (see
        #: :meth:`_retire`), the sweep drops one left past its deadlines.
        self._spare: list[tuple[str, int]] = []
        #: Batch entries this instance wrote that list one lease (see :meth:`_retire`).
        self._singles: set[str] = set()

    async def close(self) -> None:
        spare, self._spare = self._spare, []
        if spare and self.nc.is_connected:  # (no wait for a server that is away)
            with contextlib.suppress(Exception):  # best effort: else a sweep drops them
                # Whatever their revision: a heartbeat's rewrite answered after the
                # batch ended is newer than the one cached (see _heartbeat), and nothing
                # else writes a spare key (this instance's; no reserve holds these).
                await self.inbox.remove(f"{self.prefix}_leases", [(k, None) for k, _ in spare])
        self._held.clear()
        self._batches.clear()
        self._singles.clear()
        await super().close()

    def _batch_key(self) -> str:
        """The key of a new batch entry: a spare one of this instance (overwritten by
        the reserve's put), else a new one."""
        if self._spare:
            return self._spare.pop()[0]
        self._batch_count += 1
        return f"{self._batch_prefix}{self._batch_count}"

    async def _lease_entry(
        self, task_id: str, lease_token: str | None
    ) -> tuple[_Lease, int] | None:
        """The task's own lease entry and its revision (cached when this instance
        wrote it for that token)."""
        held = self._held.get(task_id)
        if held is not None and held.batch is None and held.lease.token == lease_token:
            return held.lease, held.lease_rev
        try:
            entry = await self._leases.get(token(task_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        assert entry.value is not None and entry.revision is not None
        return _lease_decoder.decode(entry.value), entry.revision

    async def _put_lease(
        self, task_id: str, lease: _Lease, record: tuple[Task, int] | None = None
    ) -> None:
        """Write a lease entry; ``record`` is the record (and revision) this instance just
        wrote for it."""
        rev = await self._leases.put(token(task_id), encoder.encode(lease))
        held = self._held.get(task_id)
        if (
            held is not None
            and held.batch is None
            and held.lease.token == lease.token
            and record is None
        ):
            held.lease, held.lease_rev = lease, rev
            return
        if held is not None and held.batch is not None:
            await self._remove_entries([self._forget(task_id)])
        self._held[task_id] = _Held(lease, rev, *(record or (None, 0)))

    def _forget(self, task_id: str, lease_token: str | None = None) -> tuple[str, int] | None:
        """Drop what this instance holds for a task (with ``lease_token``, only that
        lease: a refused completion of an older attempt leaves the newer lease this
        instance took since). Returns the lease index entry to remove now, ``(key,
        revision)``: the task's own, or the batch entry whose last task this was (a newer
        write of either survives the removal)."""
        held = self._held.get(task_id)
        if held is None or (lease_token is not None and held.lease.token != lease_token):
            return None
        del self._held[task_id]
        if held.batch is None:
            return token(task_id), held.lease_rev
        listed = self._batches.get(held.batch)
        if listed is None or listed[0].pop(task_id, None) is None or listed[0]:
            return None
        del self._batches[held.batch]
        self._singles.discard(held.batch)
        return held.batch, listed[1]

    def _retire(self, task_id: str) -> tuple[str, int] | None:
        """:meth:`_forget` for a task that ended here, its completion accepted: the entry
        of a batch of one lease (what an idle worker's reserve writes) is kept, listing
        that ended lease, for the next batched reserve to overwrite (:meth:`_batch_key`),
        instead of removed now. The removal, a filtered ``STREAM.PURGE``, cost
        nats-server ~200 µs of CPU per task (about a quarter of its work per task), and
        went out in the write that carries the task's result, which the server delivers
        to a waiting client only once it has handled the whole write. What a kept entry
        costs instead: a sweep that finds it past its deadline reads the one record it
        lists (ended: nothing is changed) and drops it (see ``lapse._lapse_batch``). A
        larger batch's entry goes as before: its removal is shared by its tasks, and
        kept it would cost a sweep two reads per task it lists."""
        held = self._held.get(task_id)
        single = held is not None and held.batch in self._singles
        entry = self._forget(task_id)
        if not single or entry is None or len(self._spare) >= _SPARE_MAX:
            return entry
        self._spare.append(entry)  # (the batch's own key: its one lease ended)
        return None

    async def _remove_entries(
        self, entries: Iterable[tuple[str, int] | None], tell: Sequence[Request] = ()
    ) -> None:
        keys = [e for e in entries if e is not None]
        if keys or tell:
            await self.inbox.remove(f"{self.prefix}_leases", keys, tell=tell)
