"""Lease deadlines: moved on by the holder's heartbeats, and lapsed by the sweep
(``release_expired_leases``), which returns the task or dead-letters it after too many
deliveries and moves its held message.

The sweep reads the lease index only. A ``RUNNING`` record that no entry lists and no
message holds (a nats-server killed with kill -9 loses the acknowledged writes it had not
yet written to its files: a completion's compare-and-set on the record, while the ack of
the message and the removal of the lease entry stayed) would be lost; the tasks' cleanup,
which reads every record, notes those long past their deadline and the sweep lapses them
(:meth:`LeaseDeadlines._lapse_orphans`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import nats.errors
import nats.js.errors

from omniq import lifecycle
from omniq.interfaces import LeaseRef
from omniq.models import Task, TaskState, encoder

from .connection import confirm, nak_delay
from .delivery import _ACK, _WPI, _band
from .dependencies import Dependencies
from .leases import _BATCH, _holds, _Lease, _lease_decoder, _Listed, _listed_decoder
from .names import consumer_name, untoken
from .records import _replace

#: How long past its lease deadline, on top of its consumer's AckWait, a ``RUNNING``
#: record is left to the usual repairs (the sweep of its lease entry, every few seconds;
#: the redelivery of its held message, at most AckWait after the deadline, which recreates
#: a missing entry) before it counts as an orphan that neither can reach.
_ORPHAN_MARGIN = 30.0


class LeaseDeadlines(Dependencies):
    """Heartbeats of lease holders and the sweep of lapsed leases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``RUNNING`` records the last cleanup found past their deadline by more than
        #: :data:`_ORPHAN_MARGIN`, by task id: lapsed by the sweep once past its grace.
        self._orphans: dict[str, Task] = {}

    def _suspect(self, records: Iterable[Task], at: float) -> None:
        """Note the orphans among ``records`` (every record, read by the cleanup): the
        next sweeps lapse them (:meth:`_lapse_orphans`). Lapsed by the sweep rather than
        the cleanup, so that the worker records their ``lease_lost`` or ``dead`` (and the
        dead result) as for any lapsed lease; noted by the cleanup, so that finding them
        costs no second read of the whole bucket."""
        self._orphans = {
            t.id: t
            for t in records
            if t.state is TaskState.RUNNING and (t.lease_deadline or 0.0) + _ORPHAN_MARGIN <= at
        }

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        at = await self.now()
        held = await asyncio.gather(*(self._extend(tid, tok, at + lease) for tid, tok in leases))
        # The batch entries listing extended leases, rewritten once each.
        keys = {
            h.batch
            for (tid, _), ok in zip(leases, held, strict=True)
            if ok and (h := self._held.get(tid)) and h.batch
        }
        rewrite = [(k, self._batches[k][0]) for k in keys if k is not None and k in self._batches]
        if rewrite:
            revs = await self.inbox.write(
                f"{self.prefix}_leases",
                [(k, encoder.encode(list(listed.values())), None) for k, listed in rewrite],
            )
            for (key, listed), rev in zip(rewrite, revs, strict=True):
                # (the same batch still: its key may have ended and been reused meanwhile)
                found = self._batches.get(key)
                if found is not None and found[0] is listed:
                    self._batches[key] = (listed, rev)
        return [tid for (tid, _), ok in zip(leases, held, strict=True) if ok]

    async def _extend(self, task_id: str, lease_token: str, deadline: float) -> bool:
        (changed,) = await self._change_many(
            [
                (
                    task_id,
                    lambda t: (
                        _replace(t, lease_deadline=deadline) if _holds(t, lease_token) else None
                    ),
                )
            ]
        )
        if changed is None:
            await self._remove_entries([self._forget(task_id)])  # lost
            return False
        cached = self._held.get(task_id)
        if cached is not None and cached.batch is not None and cached.lease.token == lease_token:
            cached.lease = _Lease(lease_token, deadline, cached.lease.reply)
            listed = self._batches.get(cached.batch)
            if listed is not None and task_id in listed[0]:
                listed[0][task_id].deadline = deadline  # written by heartbeat()
            await self.nc.publish(
                cached.lease.reply, _WPI
            )  # resets AckWait; a lost one costs nothing
            return True
        held = await self._lease_entry(task_id, lease_token)
        if held is None:
            return True  # recreated when the message is redelivered (see _recheck_running)
        old = held[0]
        if old.token == lease_token:
            await asyncio.gather(
                self._put_lease(task_id, _Lease(lease_token, deadline, old.reply)),
                self.nc.publish(old.reply, _WPI),  # resets AckWait; a lost one costs nothing
            )
        return True

    async def _release_expired_leases(self) -> list[Task]:
        at = await self.now()
        lapsed = []
        batches = []
        async for key, data, rev in self.scan_bucket(f"{self.prefix}_leases"):
            if key.startswith(_BATCH):
                listed = _listed_decoder.decode(data)
                if any(e.deadline <= at for e in listed):
                    batches.append((key, listed, rev))
                continue
            lease = _lease_decoder.decode(data)
            if lease.deadline <= at:
                lapsed.append((key, lease, rev))
        returned = await asyncio.gather(
            *(self._lapse(key, lease, rev, at) for key, lease, rev in lapsed),
            *(self._lapse_batch(key, listed, rev, at) for key, listed, rev in batches),
            self._lapse_orphans(at),
        )
        out = [t for group in returned for t in group]
        await self._wake(t for t in out if t.state is TaskState.PENDING)
        return out

    async def _lapse(self, key: str, lease: _Lease, rev: int, at: float) -> list[Task]:
        """A lapsed lease with an entry of its own."""
        new, held = await self._lapse_task(untoken(key), lease, at)
        if not held:
            await self._remove(
                "leases", untoken(key), rev
            )  # ended, or outlived its lease (a crash)
        return [new] if new is not None else []

    async def _lapse_batch(
        self, key: str, listed: list[_Listed], rev: int, at: float
    ) -> list[Task]:
        """The lapsed leases of a batch entry; the entry goes once none is held."""
        due = [e for e in listed if e.deadline <= at]
        done = await asyncio.gather(*(self._lapse_task(e.task_id, e.lease(), at) for e in due))
        if len(due) == len(listed) and not any(held for _, held in done):
            await self.remove_key(f"{self.prefix}_leases", key, rev)
        return [new for new, _ in done if new is not None]

    async def _lapse_orphans(self, at: float) -> list[Task]:
        """Lapse the orphans the cleanup noted (:meth:`_suspect`) once their deadline is
        past by their consumer's AckWait and :data:`_ORPHAN_MARGIN`: by then a lease
        entry would have been swept and a held message redelivered. The compare-and-set
        on the record read anew (:meth:`_lapse_task`) makes a heartbeat or a completion
        that moved it since win; those not yet due wait for a later sweep."""
        if not self._orphans:
            return []
        waits: dict[str, float] = {}
        due = []
        for task in list(self._orphans.values()):
            name = consumer_name(task.queue, _band(task.priority))
            if name not in waits:
                try:
                    waits[name] = await self._ack_wait(name)
                except (nats.errors.Error, TimeoutError):
                    return []  # a later sweep: the lapses beside this one stay reported
            if (task.lease_deadline or 0.0) + waits[name] + _ORPHAN_MARGIN <= at:
                due.append((task, at - waits[name] - _ORPHAN_MARGIN))
                self._orphans.pop(task.id, None)
        done = await asyncio.gather(
            *(
                # (no reply: no message is left to move; the deadline is not read)
                self._lapse_task(t.id, _Lease(t.lease_token or "", 0.0, ""), at, before)
                for t, before in due
            )
        )
        return [new for new, _ in done if new is not None]

    async def _ack_wait(self, consumer: str) -> float:
        """The AckWait of a queue band's consumer (0 without one: no message is held)."""
        known = self._consumers.get(consumer)
        if known is not None:
            return known
        try:
            info = await self.js.consumer_info(self.stream, consumer)
        except nats.js.errors.NotFoundError:
            return 0.0
        return info.config.ack_wait or 0.0

    async def _lapse_task(
        self, task_id: str, lease: _Lease, at: float, before: float | None = None
    ) -> tuple[Task | None, bool]:
        """Return a task whose lease lapsed (or dead-letter it after too many
        deliveries) and move its held message. Answers the task so changed, and whether
        the lease is still held (the record shows it running with a later deadline).
        The deadline must be ``before`` (default ``at``); a lease without a reply (an
        orphan's: no message left) gets a new delivery message."""
        due = at if before is None else before

        def change(t: Task) -> Task | None:
            if not _holds(t, lease.token) or (t.lease_deadline or 0.0) > due:
                return None
            return lifecycle.lapsed(t, at)

        changed = await self._mutate(task_id, change)
        if changed is None:
            found = await self._read(task_id)
            return None, found is not None and _holds(found[0], lease.token)
        new = changed[1]
        await self._remove_entries([self._forget(task_id)])  # if this instance held it
        if new.state is TaskState.DEAD:
            if lease.reply:
                await self.nc.publish(lease.reply, _ACK)
            await self._after_end(new)
        elif lease.reply:
            await confirm(self.nc, lease.reply, nak_delay(0))
        else:
            await self._hint(new)
        return new, False
