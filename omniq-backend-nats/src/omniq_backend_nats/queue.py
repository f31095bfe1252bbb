"""The task queue on JetStream.

Two halves, each doing what it is good at (docs/backends/nats.md has the full story):

* **Delivery** — a work-queue stream ``<prefix>_queue`` with one subject per queue and
  priority band, ``<prefix>.q.<queue>.<band>``, and one durable pull consumer per
  subject. A message carries a task id, or a small task's whole record as enqueued
  (with its revision: a hint, like the rest). Reserve pulls bands high to low; the
  message stays unacknowledged while its task runs (AckWait is the crash backstop,
  ``+WPI`` the heartbeat), ``-NAK`` with a delay returns it for a retry or a delayed
  task, and ``+ACK`` removes it when the task ends.
* **State** — a KV bucket ``<prefix>_tasks`` holding each task's record. Every change
  is a compare-and-set on the record's revision, which gives atomic reserve (one
  winner per record) and fenced completion (only while the record shows ``RUNNING``
  with the caller's token). ``<prefix>_leases`` indexes running tasks (token,
  deadline, reply subject of the held message) for ``release_expired_leases`` and for
  acking from any process; ``<prefix>_children`` lists each task's dependents.

A message is a hint, checked against the record on every delivery: duplicates are
harmless (a CAS decides), so each step writes the record first and moves the message
after, and a crash in between is repaired by redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import builtins
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.kv import KeyValue

from omniq import lifecycle
from omniq.errors import TaskNotFoundError
from omniq.interfaces import BaseTaskQueue, Capability, LeaseRef
from omniq.lifecycle import check_completable, finished
from omniq.models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    READY_STATES,
    TERMINAL_STATES,
    ErrorInfo,
    Task,
    TaskState,
    encoder,
    task_decoder,
)
from omniq.options import Option

from .batch import WRONG_REVISION, Request, puts, revisions, sequences
from .connection import OPTIONS, NatsStore, confirm, nak_delay
from omniq.records import stand_in

from .names import consumer_name, token, untoken
from .schedules import ScheduleBucket

__all__ = ["NatsTaskQueue"]

T = TypeVar("T")

#: Reserve reads bands from the highest priority down.
BANDS = range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
#: States whose dependents are cancelled rather than released.
#: How many writes one bulk call keeps in flight.
_WINDOW = 256
#: A redelivered message of a running task comes back no sooner than this.
_MIN_RECHECK = 1.0
#: The shortest AckWait a lease gives the consumers (a message of a running task that
#: comes back early costs a redelivery and a check).
_MIN_ACK_WAIT = 1.0
_ACK, _WPI = b"+ACK", b"+WPI"
#: Header of a delivery message that carries its task's record: the record's revision.
_REV = "Omniq-Rev"
#: Records up to this size travel in their delivery message.
_CARRY_MAX = 4096


class _Lease(msgspec.Struct, array_like=True):
    """A running task's entry in ``<prefix>_leases``."""

    token: str
    deadline: float
    reply: str  # ack subject of the held message


class _Finish(NamedTuple):
    """One fenced transition out of ``RUNNING``: ``change`` applies only while the
    record holds ``lease_token``; ``verb`` then moves the held message."""

    task_id: str
    lease_token: str | None
    change: Callable[[Task], Task]
    verb: bytes = _ACK

    def fenced(self, task: Task) -> Task | None:
        return self.change(task) if _holds(task, self.lease_token) else None


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
_children_decoder = msgspec.msgpack.Decoder(list[str])


def _replace(task: Task, **changes: Any) -> Task:
    return msgspec.structs.replace(task, **changes)


def _unleased(task: Task, **changes: Any) -> Task:
    return _replace(task, lease_owner=None, lease_token=None, lease_deadline=None, **changes)


def _holds(task: Task, lease_token: str | None) -> bool:
    return task.state is TaskState.RUNNING and lease_token is not None and task.lease_token == lease_token


def _band(priority: int) -> int:
    return min(max(priority, PRIORITY_MIN), PRIORITY_MAX)


async def _windowed(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(items), _WINDOW):
        out += await asyncio.gather(*(call(i) for i in items[start : start + _WINDOW]))
    return out


class NatsTaskQueue(NatsStore, ScheduleBucket, BaseTaskQueue):
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.DELAYED,
        Capability.PRIORITY,
        Capability.SCHEDULES,
        Capability.DEPENDENCIES,
        Capability.CROSS_PROCESS,
        Capability.BLOCKING_RESERVE,
    })
    option_schema = OPTIONS.extend(Option(
        "ack_wait", "duration", None,
        "AckWait of the consumers: how long a message held by a process that died "
        "silently stays away; none (the default) follows the lease of the worker that "
        "reserves (see *Leases*).", minimum=0, above=True, optional=True,
    ))

    _tasks: KeyValue
    _leases: KeyValue
    _children: KeyValue
    _schedules: KeyValue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Consumers this instance set up, with the AckWait it gave them.
        self._consumers: dict[str, float] = {}
        #: Leases this instance wrote, by task id: saves reads per completion.
        self._held: dict[str, _Held] = {}
        #: Batch entries this instance wrote: key -> (its leases still held here, revision).
        self._batches: dict[str, tuple[dict[str, _Listed], int]] = {}
        self._batch_prefix = f"{_BATCH}{uuid.uuid4().hex[:12]}-"
        self._batch_count = 0
        self._wake_subs: dict[str, Subscription] = {}
        self._work = asyncio.Event()

    @property
    def stream(self) -> str:
        return f"{self.prefix}_queue"

    async def _setup(self) -> None:
        await self.ensure_stream(
            api.StreamConfig(
                name=self.stream,
                subjects=[f"{self.prefix}.q.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                num_replicas=self.settings["replicas"],
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            )
        )
        self._tasks, self._leases, self._children, self._schedules = await asyncio.gather(
            *(self.ensure_bucket(f"{self.prefix}_{name}") for name in ("tasks", "leases", "children", "schedules"))
        )

    async def close(self) -> None:
        self._consumers.clear()
        self._wake_subs.clear()
        self._held.clear()
        self._batches.clear()
        await super().close()

    # -- records ---------------------------------------------------------------------

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

    async def _mutate(self, task_id: str, change: Callable[[Task], Task | None]) -> tuple[Task, Task] | None:
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
        self, changes: Sequence[tuple[str, Callable[[Task], Task | None]]], also: Sequence[Request] = ()
    ) -> list[tuple[Task, Task] | None]:
        """:meth:`_mutate` for many records. A record this instance wrote last is changed
        from its cached copy in one batch of compare-and-sets, without reads; the others,
        a refusal by the cached copy and a conflict go the reading way. ``also``: stream
        publishes to send with the batch (their errors are raised after it)."""
        out: list[tuple[Task, Task] | None] = [None] * len(changes)
        fast: list[tuple[int, _Held, Task, Task]] = []
        for i, (task_id, change) in enumerate(changes):
            held = self._held.get(task_id)
            if held is not None and held.record is not None:
                new = change(held.record)
                if new is not None:
                    fast.append((i, held, held.record, new))
        cas = puts(self._tasks_bucket, [(token(changes[i][0]), encoder.encode(new), h.record_rev) for i, h, _, new in fast])
        replies = await self.inbox.ask([*cas, *also]) if cas or also else []
        revs = revisions(replies[: len(cas)])
        done = set()
        for (i, held, old, new), rev in zip(fast, revs):
            if rev != WRONG_REVISION:
                held.record, held.record_rev = new, rev
                out[i] = (old, new)
                done.add(i)
        sequences(replies[len(cas) :])
        slow = [i for i in range(len(changes)) if i not in done]
        for i, changed in zip(slow, await _windowed(slow, lambda i: self._mutate(*changes[i]))):
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

    # -- delivery messages -------------------------------------------------------------

    def _subject(self, task: Task) -> str:
        return f"{self.prefix}.q.{token(task.queue)}.{_band(task.priority)}"

    async def _hint(self, task: Task, created: int | None = None) -> None:
        """Publish the delivery message of a task that became ready. For an enqueue,
        ``created`` (the record's revision) makes ``Nats-Msg-Id`` = ``<id>:<revision>``:
        an enqueue repeated within the stream's duplicate window (two schedulers firing
        the same time) stores one message, while the same id purged and enqueued anew
        gets a new revision and so a new message.

        A small record is carried whole with its revision (``Omniq-Rev``), so the first
        delivery leases the task without reading it: the compare-and-set on that
        revision proves the copy current. Otherwise the message carries the task id."""
        if created is None:
            await self.js.publish(self._subject(task), task.id.encode())
            return
        headers = {"Nats-Msg-Id": f"{task.id}:{created}"}
        data = encoder.encode(task)
        if len(data) <= _CARRY_MAX:
            headers[_REV] = str(created)
        else:
            data = task.id.encode()
        await self.js.publish(self._subject(task), data, headers=headers)

    async def _wake(self, queues: Iterable[str]) -> None:
        for queue in set(queues):
            await self.nc.publish(f"{self.prefix}.wake.{token(queue)}", b"")

    async def _lease_entry(self, task_id: str, lease_token: str | None) -> tuple[_Lease, int] | None:
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

    async def _put_lease(self, task_id: str, lease: _Lease, record: tuple[Task, int] | None = None) -> None:
        """Write a lease entry; ``record`` is the record (and revision) this instance just
        wrote for it."""
        rev = await self._leases.put(token(task_id), encoder.encode(lease))
        held = self._held.get(task_id)
        if held is not None and held.batch is None and held.lease.token == lease.token and record is None:
            held.lease, held.lease_rev = lease, rev
            return
        if held is not None and held.batch is not None:
            await self._remove_entries([self._forget(task_id)])
        self._held[task_id] = _Held(lease, rev, *(record or (None, 0)))

    def _forget(self, task_id: str) -> tuple[str, int] | None:
        """Drop what this instance holds for a task. Returns the lease index entry to
        remove now, ``(key, revision)``: the task's own, or the batch entry whose last
        task this was (a newer write of either survives the removal)."""
        held = self._held.pop(task_id, None)
        if held is None:
            return None
        if held.batch is None:
            return token(task_id), held.lease_rev
        listed = self._batches.get(held.batch)
        if listed is None or listed[0].pop(task_id, None) is None or listed[0]:
            return None
        del self._batches[held.batch]
        return held.batch, listed[1]

    async def _remove_entries(self, entries: Iterable[tuple[str, int] | None], tell: Sequence[Request] = ()) -> None:
        keys = [e for e in entries if e is not None]
        if keys or tell:
            await self.inbox.remove(f"{self.prefix}_leases", keys, tell=tell)

    async def _settle_messages(self, jobs: Sequence[_Finish]) -> None:
        """:meth:`_settle_message` for many: acks of cached leases go out with one batch
        of lease entry removals; the rest one by one."""
        acks: list[Request] = []
        removals: list[tuple[str, int] | None] = []
        others: list[_Finish] = []
        for job in jobs:
            held = self._held.get(job.task_id)
            if job.verb != _ACK or held is None or held.lease.token != job.lease_token:
                others.append(job)
                continue
            acks.append((held.lease.reply, _ACK, None))
            removals.append(self._forget(job.task_id))
        await self._remove_entries(removals, tell=acks)
        await _windowed(others, lambda job: self._settle_message(job.task_id, job.lease_token, job.verb))

    async def _settle_message(self, task_id: str, lease_token: str | None, verb: bytes) -> None:
        """Move the message held for a lease that just ended (ack, or nak to redeliver)
        and drop the lease entry. Without an entry there is nothing to move: the
        message, if any, is redelivered after AckWait and checked against the record."""
        cached = self._held.get(task_id)
        if cached is not None and cached.lease.token == lease_token:
            reply, removal = cached.lease.reply, self._forget(task_id)
        else:
            await self._remove_entries([self._forget(task_id)])  # an older lease of ours
            held = await self._lease_entry(task_id, lease_token)
            if held is None or held[0].token != lease_token:
                return
            reply, removal = held[0].reply, (token(task_id), held[1])
        if verb == _ACK:
            # The task ended: an ack lost on the way only brings the message back after
            # AckWait, to find a finished record and be acked again.
            await self.nc.publish(reply, _ACK)
        else:
            await confirm(self.nc, reply, verb)
        await self._remove_entries([removal])

    async def _consumer(self, queue: str, band: int, lease: float) -> str:
        """The durable consumer of a queue's band, created or updated so that its AckWait
        is the ``ack_wait`` option or else ``lease`` (at least a second): a message
        pulled by a process that dies before it claims the task (the record still
        pending, no lease to lapse) comes back after about a lease, like a lapsed lease.
        Running tasks keep theirs with ``+WPI`` at every heartbeat, and one that comes
        back early anyway is put back until its lease deadline."""
        name = consumer_name(queue, band)
        ack_wait = self.settings["ack_wait"] or max(lease, _MIN_ACK_WAIT)
        if self._consumers.get(name) != ack_wait:
            config = api.ConsumerConfig(
                durable_name=name,
                filter_subject=f"{self.prefix}.q.{token(queue)}.{band}",
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,  # attempts are counted in the record: naks for delay are not failures
                max_ack_pending=-1,  # delayed and running tasks hold messages
                num_replicas=self.settings["replicas"],
            )
            try:
                await self.js.add_consumer(self.stream, config)
            except nats.js.errors.BadRequestError:
                await self.js.consumer_info(self.stream, name)  # exists with other settings: use it
            self._consumers[name] = ack_wait
        return name

    # -- enqueue -----------------------------------------------------------------------

    def _initial(self, task: Task, parents: Sequence[Task], at: float) -> Task:
        state, error = lifecycle.initial_state(task, {p.id: p.state for p in parents}, at)
        base = _unleased(task, created_at=task.created_at or at, state=state)
        if error is not None:
            return _replace(base, finished_at=at, error=error)
        return base

    async def _store(self, task: Task, at: float) -> Task:
        """Create the record (idempotent by id), then its delivery message."""
        parents = []
        for parent_id in task.depends_on:
            found = await self._read(parent_id)
            if found is None:
                raise TaskNotFoundError(parent_id, f" (named in depends_on of task {task.id!r})")
            parents.append(found[0])
        # Registered before the record exists: a parent that ends meanwhile settles this
        # task, or finds no record yet and leaves it to the re-check below.
        for parent_id in task.depends_on:
            await self._add_child(parent_id, task.id)
        stored = self._initial(task, parents, at)
        while True:
            try:
                record = encoder.encode(stored)
                created = await self._tasks.create(token(task.id), record)
                break
            except nats.errors.MaxPayloadError:
                raise self.too_large(f"the record of task {task.id!r}", len(record)) from None
            except nats.js.errors.KeyWrongLastSequenceError:
                found = await self._read(task.id)
                if found is None:
                    continue  # deleted between the two calls
                existing, rev = found
                if existing.state in (TaskState.PENDING, TaskState.SCHEDULED) and existing.attempts == 0:
                    # Repairs an enqueue that died between record and message;
                    # deduplicated when the first one did publish.
                    await self._hint(existing, created=rev)
                return existing
        if stored.state is TaskState.WAITING:
            return await self._settle(task.id) or stored
        if stored.state in READY_STATES:
            await self._hint(stored, created=created)
        return stored

    async def enqueue(self, task: Task) -> Task:
        return await self.reaching(self._enqueue_one(task))

    async def _enqueue_one(self, task: Task) -> Task:
        stored = await self._store(task, await self.now())
        await self._wake([stored.queue])
        return stored

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[Task]:
        return await self.reaching(self._enqueue_many(tasks))

    async def _enqueue_many(self, tasks: Sequence[Task]) -> list[Task]:
        """Tasks without dependencies go in concurrent windows, then the others in
        order (a task may depend on one earlier in the batch)."""
        at = await self.now()
        out: list[Task | None] = [None] * len(tasks)
        free = [i for i, t in enumerate(tasks) if not t.depends_on]
        for i, stored in zip(free, await _windowed([tasks[i] for i in free], lambda t: self._store(t, at))):
            out[i] = stored
        for i, task in enumerate(tasks):
            if task.depends_on:
                out[i] = await self._store(task, at)
        done = [t for t in out if t is not None]
        await self._wake(t.queue for t in done)
        return done

    # -- dependencies ------------------------------------------------------------------

    async def _add_child(self, parent_id: str, child_id: str) -> None:
        key = token(parent_id)
        while True:
            try:
                entry = await self._children.get(key)
            except nats.js.errors.KeyNotFoundError:
                try:
                    await self._children.create(key, encoder.encode([child_id]))
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            assert entry.value is not None
            children = _children_decoder.decode(entry.value)
            if child_id in children:
                return
            try:
                await self._children.update(key, encoder.encode([*children, child_id]), last=entry.revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue

    async def _children_of(self, task_id: str) -> list[str]:
        try:
            entry = await self._children.get(token(task_id))
        except nats.js.errors.KeyNotFoundError:
            return []
        return _children_decoder.decode(entry.value or b"\x90")

    async def _settle(self, task_id: str) -> Task | None:
        """Decide a ``WAITING`` task from its parents: ready when all succeeded,
        cancelled when one failed, else unchanged. Returns the task as it now is."""
        found = await self._read(task_id)
        if found is None or found[0].state is not TaskState.WAITING:
            return found[0] if found else None
        task = found[0]
        parents = [p[0] for p in await asyncio.gather(*(self._read(d) for d in task.depends_on)) if p]
        failed = next((p for p in parents if p.state in lifecycle.PARENT_FAILED_STATES), None)
        if failed is not None:
            await self._cancel_waiting(task_id, failed)
        elif len(parents) == len(task.depends_on) and all(p.state is TaskState.SUCCEEDED for p in parents):
            at = await self.now()
            state = lifecycle.ready_state(task, at)
            # Message first: if we die before the CAS, its delivery settles the task again.
            await self._hint(task)
            changed = await self._mutate(
                task_id, lambda t: _replace(t, state=state) if t.state is TaskState.WAITING else None
            )
            if changed:
                await self._wake([task.queue])
        found = await self._read(task_id)
        return found[0] if found else None

    async def _cancel_waiting(self, task_id: str, parent: Task) -> None:
        """Cancel a waiting dependent of ``parent``, and its own dependents in turn;
        each error names the task's own parent."""
        at = await self.now()
        error = lifecycle.dependency_failure(parent.id, parent.state)
        changed = await self._mutate(
            task_id,
            lambda t: finished(t, TaskState.CANCELLED, error, at)
            if t.state is TaskState.WAITING else None,
        )
        if changed:
            cancelled = changed[1]
            children = await self._children_of(task_id)
            await asyncio.gather(*(self._cancel_waiting(c, cancelled) for c in children))

    async def _after_end(self, task: Task) -> None:
        """A task became terminal: release or cancel its dependents."""
        children = await self._children_of(task.id)
        if task.state is TaskState.SUCCEEDED:
            await asyncio.gather(*(self._settle(c) for c in children))
        else:
            await asyncio.gather(*(self._cancel_waiting(c, task) for c in children))

    # -- reserve -----------------------------------------------------------------------

    async def _backlog(self, queues: Sequence[str]) -> dict[tuple[str, int], int]:
        """Messages stored per (queue, band) — one call instead of a pull per band."""
        by_token = {token(q): q for q in queues}
        pattern = f"{self.prefix}.q.{next(iter(by_token))}.*" if len(by_token) == 1 else f"{self.prefix}.q.>"
        info = await self.js.stream_info(self.stream, subjects_filter=pattern)
        out: dict[tuple[str, int], int] = {}
        for subject, count in (info.state.subjects or {}).items():
            _, _, queue_token, band = subject.split(".")
            if queue_token in by_token:
                out[(by_token[queue_token], int(band))] = count
        return out

    async def reserve(self, queues: Sequence[str], worker_id: str, lease: float, limit: int = 1) -> list[Task]:
        if limit < 1 or not queues:
            return []
        at = await self.now()
        backlog = await self._backlog(queues)
        out: list[Task] = []
        for band in BANDS:
            for queue in queues:
                if not backlog.get((queue, band)):
                    continue
                consumer = await self._consumer(queue, band, lease)
                while len(out) < limit:
                    wanted = limit - len(out)
                    msgs = await self.inbox.pull(self.stream, consumer, wanted)
                    try:
                        claimed = await self._claim_many(msgs, worker_id, lease, at)
                    except Exception as exc:
                        claimed = [exc]
                    out += [t for t in claimed if isinstance(t, Task)]
                    failed = next((e for e in claimed if isinstance(e, BaseException)), None)
                    if failed is not None:
                        if out:
                            return out  # hand out what is leased; the rest comes back after AckWait
                        raise failed
                    if len(msgs) < wanted:
                        break
                if len(out) >= limit:
                    return out
        return out

    async def _claim_many(
        self, msgs: Sequence[Msg], worker_id: str, lease: float, at: float
    ) -> list[Task | BaseException | None]:
        """:meth:`_claim` for a pulled batch in at most two batched steps, each one wait:
        read the records the messages do not carry, then compare-and-set the ready ones
        to ``RUNNING`` together with the batch's lease entry. Any other message (and a
        lost compare-and-set) goes through :meth:`_claim`."""
        carried = [_carried(m) for m in msgs]
        ids = [c[0] for c in carried]
        unread = [i for i, (tid, found) in enumerate(carried) if tid and found is None]
        read = set()
        for i, entry in zip(unread, await self.inbox.get(self._tasks_bucket, [token(ids[i]) for i in unread])):
            if entry is not None:
                try:
                    carried[i] = (ids[i], (task_decoder.decode(entry[0]), entry[1]))
                except Exception as exc:
                    carried[i] = (ids[i], (_stand_in(ids[i], exc), entry[1]))
                read.add(i)
        claims: list[tuple[int, Task, Task, int]] = []  # (index, record, running, revision)
        slow: dict[int, tuple[Task, int] | None] = {}
        claiming: set[str] = set()  # a second message for a task in the batch goes the slow way
        for i, (_, found) in enumerate(carried):
            record = found[0] if found is not None else None
            if (
                found is not None and record is not None and record.id not in claiming
                and record.state in READY_STATES
                and (record.expires_at is None or record.expires_at > at)
                and (record.eta is None or record.eta <= at)
            ):
                claims.append((i, record, self._running(record, worker_id, lease, at), found[1]))
                claiming.add(record.id)
            else:
                slow[i] = found if i in read else None  # a carried copy may be stale: read
        # The lease entry goes with the compare-and-sets, listing every attempt: one that
        # loses never holds its lease, and a sweep drops such a listing (see _lapse_batch).
        out: list[Task | BaseException | None] = [None] * len(msgs)
        listed = {
            ids[i]: _Listed(ids[i], running.lease_token or "", at + lease, msgs[i].reply)
            for i, _, running, _ in claims
        }
        self._batch_count += 1
        key = f"{self._batch_prefix}{self._batch_count}"
        replies = await self.inbox.ask([
            *puts(self._tasks_bucket, [(token(ids[i]), encoder.encode(running), rev) for i, _, running, rev in claims]),
            *puts(f"{self.prefix}_leases", [(key, encoder.encode(list(listed.values())), None)]),
        ]) if claims else []
        revs = revisions(replies)
        won: list[tuple[int, Task, int]] = []
        for (i, _, running, _), rev in zip(claims, revs):
            if rev == WRONG_REVISION:
                slow[i] = None  # changed since the read: read again
                listed.pop(ids[i], None)
            else:
                won.append((i, running, rev))
        if claims and not won:
            with contextlib.suppress(nats.errors.Error):  # best effort: a sweep drops it later
                await self._remove_entries([(key, revs[-1])])
        if won:
            self._batches[key] = (listed, revs[-1])
            stale = [self._forget(ids[i]) for i, _, _ in won if ids[i] in self._held]  # an older lease of ours
            for i, running, rev in won:
                self._held[ids[i]] = _Held(listed[ids[i]].lease(), 0, running, rev, key)
                out[i] = running
            if stale:
                with contextlib.suppress(nats.errors.Error):  # best effort: a sweep drops it later
                    await self._remove_entries(stale)
        others = list(slow)
        claimed = await asyncio.gather(
            *(self._claim(msgs[i], worker_id, lease, at, slow[i]) for i in others), return_exceptions=True
        )
        for i, task in zip(others, claimed):
            out[i] = task
        return out

    def _running(self, task: Task, worker_id: str, lease: float, at: float) -> Task:
        return _replace(
            task,
            state=TaskState.RUNNING,
            attempts=task.attempts + 1,
            lease_owner=worker_id,
            lease_token=uuid.uuid4().hex,
            lease_deadline=at + lease,
            started_at=at,
        )

    async def _claim(
        self, msg: Msg, worker_id: str, lease: float, at: float, found: tuple[Task, int] | None = None
    ) -> Task | None:
        """Check one delivered message against its record (``found``: as just read) and
        lease the task, or put the message back (nak with a delay) or away (ack) as the
        record says."""
        task_id = _message_task_id(msg)
        if not task_id:  # not one of ours: never let it block the queue
            await confirm(self.nc, msg.reply, _ACK)
            return None
        while True:
            if found is None:
                found = await self._read(task_id)
            if found is None or found[0].state in TERMINAL_STATES:
                await confirm(self.nc, msg.reply, _ACK)  # purged or finished: a stale message
                return None
            task, rev = found
            if task.state is TaskState.WAITING:
                settled = await self._settle(task_id)
                if settled is not None and settled.state in READY_STATES:
                    found = None
                    continue
                await confirm(self.nc, msg.reply, _ACK)  # its real message comes when it settles
                return None
            if task.state is TaskState.RUNNING:
                await self._recheck_running(task, msg, at)
                return None
            if task.expires_at is not None and task.expires_at <= at:
                await confirm(self.nc, msg.reply, _ACK)  # cleanup() marks it expired
                return None
            if task.eta is not None and task.eta > at:
                await confirm(self.nc, msg.reply, nak_delay(task.eta - at))
                return None
            found = None  # a retry reads again
            running = self._running(task, worker_id, lease, at)
            try:
                rev = await self._tasks.update(token(task_id), encoder.encode(running), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            await self._put_lease(task_id, _Lease(running.lease_token or "", at + lease, msg.reply), (running, rev))
            return running

    async def _recheck_running(self, task: Task, msg: Msg, at: float) -> None:
        """A message for a running task: its own, redelivered after AckWait, or a
        duplicate. Keep it until the lease may end; recreate a missing lease entry
        (a reserve that died between record and entry) so the lease can lapse."""
        deadline = task.lease_deadline or at
        if deadline <= at:
            key = token(task.id)
            try:
                entry = await self._leases.get(key)
                assert entry.value is not None
                missing = _lease_decoder.decode(entry.value).token != task.lease_token
            except nats.js.errors.KeyNotFoundError:
                missing = True
            if missing:
                await self._leases.put(key, encoder.encode(_Lease(task.lease_token or "", deadline, msg.reply)))
        await confirm(self.nc, msg.reply, nak_delay(max(deadline - at, _MIN_RECHECK)))

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wakes on enqueue, release, retry, lapse and dependency release (core NATS
        messages on ``<prefix>.wake.<queue>``); delayed tasks are found by the next poll."""
        for queue in queues:
            if queue not in self._wake_subs:
                self._wake_subs[queue] = await self.nc.subscribe(
                    f"{self.prefix}.wake.{token(queue)}", cb=self._on_wake
                )
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            pass
        self._work.clear()

    async def _on_wake(self, _msg: Msg) -> None:
        self._work.set()

    # -- lease holders -----------------------------------------------------------------

    async def heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        at = await self.now()
        held = await asyncio.gather(*(self._extend(tid, tok, at + lease) for tid, tok in leases))
        # The batch entries listing extended leases, rewritten once each.
        keys = {h.batch for (tid, _), ok in zip(leases, held) if ok and (h := self._held.get(tid)) and h.batch}
        rewrite = [(k, self._batches[k][0]) for k in keys if k is not None and k in self._batches]
        if rewrite:
            revs = await self.inbox.write(
                f"{self.prefix}_leases", [(k, encoder.encode(list(listed.values())), None) for k, listed in rewrite]
            )
            for (key, listed), rev in zip(rewrite, revs):
                if key in self._batches:
                    self._batches[key] = (listed, rev)
        return [tid for (tid, _), ok in zip(leases, held) if ok]

    async def _extend(self, task_id: str, lease_token: str, deadline: float) -> bool:
        (changed,) = await self._change_many(
            [(task_id, lambda t: _replace(t, lease_deadline=deadline) if _holds(t, lease_token) else None)]
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
            await self.nc.publish(cached.lease.reply, _WPI)  # resets AckWait; a lost one costs nothing
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

    async def _finish(
        self, task_id: str, lease_token: str | None, change: Callable[[Task], Task], verb: bytes = _ACK
    ) -> tuple[Task, Task] | None:
        """Fenced transition out of ``RUNNING``, then the held message and dependents."""
        (done,) = await self._finish_many([_Finish(task_id, lease_token, change, verb)])
        return done

    async def _finish_many(self, jobs: Sequence[_Finish], also: Sequence[Request] = ()) -> list[tuple[Task, Task] | None]:
        """:meth:`_finish` for a batch, step by step: records (with the stream publishes
        ``also``), messages, dependents."""
        changed = await self._change_many([(job.task_id, job.fenced) for job in jobs], also)
        await self._remove_entries([self._forget(job.task_id) for job, done in zip(jobs, changed) if done is None])
        moved = [job for job, done in zip(jobs, changed) if done is not None]
        ended = [done[1] for done in changed if done is not None and done[1].state in TERMINAL_STATES]
        _, dependents = await asyncio.gather(
            self._settle_messages(moved), self._any_dependents() if ended else _false()
        )
        if dependents:
            await _windowed(ended, self._after_end)
        return changed

    async def _any_dependents(self) -> bool:
        """Whether any task has dependents: one call instead of a lookup per task.
        Asked after the records changed, so a dependent registering later reads the
        parent's new state itself (see :meth:`_store`)."""
        return await self.inbox.stream_messages(f"KV_{self.prefix}_children") > 0

    async def complete(self, task_id: str, token: str, state: TaskState, error: ErrorInfo | None = None) -> bool:
        (done,) = await self.complete_many([(task_id, token, state, error)])
        return done

    async def complete_many(self, items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]]) -> list[bool]:
        jobs = await self._completions(items)
        return [done is not None for done in await self._finish_many(jobs)]

    async def _completions(self, items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]]) -> list[_Finish]:
        states = [check_completable(state, tid) for tid, _, state, _ in items]
        at = await self.now()
        return [
            _Finish(tid, tok, functools.partial(finished, state=state, error=error, at=at))
            for (tid, tok, _, error), state in zip(items, states, strict=True)
        ]

    async def retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None = None) -> bool:
        at = await self.now()
        done = await self._finish(
            task_id,
            token,
            lambda t: lifecycle.retried(t, eta, error),
            nak_delay(eta - at),
        )
        if done is not None and eta <= at:
            await self._wake([done[1].queue])
        return done is not None

    async def release(self, task_id: str, token: str) -> bool:
        done = await self._finish(
            task_id,
            token,
            lifecycle.released,
            nak_delay(0),
        )
        if done is not None:
            await self._wake([done[1].queue])
        return done is not None

    async def dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None = None) -> bool:
        at = await self.now()
        if token is not None:
            done = await self._finish(
                task_id, token, lambda t: finished(t, TaskState.DEAD, error, at)
            )
            return done is not None
        changed = await self._mutate(
            task_id,
            lambda t: None if t.state in TERMINAL_STATES
            else finished(t, TaskState.DEAD, error, at),
        )
        if changed is None:
            return False
        old, new = changed
        await self._settle_message(task_id, old.lease_token, _ACK)
        await self._after_end(new)
        return True

    async def release_expired_leases(self) -> list[Task]:
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
        )
        out = [t for group in returned for t in group]
        await self._wake(t.queue for t in out if t.state is TaskState.PENDING)
        return out

    async def _lapse(self, key: str, lease: _Lease, rev: int, at: float) -> list[Task]:
        """A lapsed lease with an entry of its own."""
        new, held = await self._lapse_task(untoken(key), lease, at)
        if not held:
            await self._remove("leases", untoken(key), rev)  # ended, or outlived its lease (a crash)
        return [new] if new is not None else []

    async def _lapse_batch(self, key: str, listed: list[_Listed], rev: int, at: float) -> list[Task]:
        """The lapsed leases of a batch entry; the entry goes once none is held."""
        due = [e for e in listed if e.deadline <= at]
        done = await asyncio.gather(*(self._lapse_task(e.task_id, e.lease(), at) for e in due))
        if len(due) == len(listed) and not any(held for _, held in done):
            await self.remove_key(f"{self.prefix}_leases", key, rev)
        return [new for new, _ in done if new is not None]

    async def _lapse_task(self, task_id: str, lease: _Lease, at: float) -> tuple[Task | None, bool]:
        """Return a task whose lease lapsed (or dead-letter it after too many
        deliveries) and move its held message. Answers the task so changed, and whether
        the lease is still held (the record shows it running with a later deadline)."""

        def change(t: Task) -> Task | None:
            if not _holds(t, lease.token) or (t.lease_deadline or 0.0) > at:
                return None
            return lifecycle.lapsed(t, at)

        changed = await self._mutate(task_id, change)
        if changed is None:
            found = await self._read(task_id)
            return None, found is not None and _holds(found[0], lease.token)
        new = changed[1]
        await self._remove_entries([self._forget(task_id)])  # if this instance held it
        if new.state is TaskState.DEAD:
            await self.nc.publish(lease.reply, _ACK)
            await self._after_end(new)
        else:
            await confirm(self.nc, lease.reply, nak_delay(0))
        return new, False

    # -- user actions ------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        at = await self.now()
        changed = await self._mutate(
            task_id,
            lambda t: None if t.state in TERMINAL_STATES else _unleased(t, state=TaskState.CANCELLED, finished_at=at),
        )
        if changed is None:
            if await self._read(task_id) is None:
                raise TaskNotFoundError(task_id)
            return False
        old, new = changed
        if old.state is TaskState.RUNNING:
            await self._settle_message(task_id, old.lease_token, _ACK)
        await self._after_end(new)
        return True

    async def get(self, task_id: str) -> Task | None:
        found = await self._read(task_id)
        return found[0] if found else None

    async def list(
        self, queue: str | None = None, states: Iterable[TaskState] | None = None, limit: int = 100
    ) -> list[Task]:
        wanted = None if states is None else set(states)
        tasks = [
            t for t, _ in await self._all_tasks()
            if (queue is None or t.queue == queue) and (wanted is None or t.state in wanted)
        ]
        tasks.sort(key=lambda t: (t.created_at, t.id))
        return tasks[:limit]

    async def stats(self) -> dict[str, dict[TaskState, int]]:
        out: dict[str, dict[TaskState, int]] = {}
        for task, _ in await self._all_tasks():
            counts = out.setdefault(task.queue, {})
            counts[task.state] = counts.get(task.state, 0) + 1
        return out

    async def purge(self, queue: str | None = None, states: Iterable[TaskState] | None = None) -> int:
        wanted = None if states is None else set(states)
        doomed = [
            t for t, _ in await self._all_tasks()
            if (queue is None or t.queue == queue) and (wanted is None or t.state in wanted)
        ]
        if queue is None and wanted is None:
            # Everything: empty the streams themselves (schedules stay).
            await asyncio.gather(*(
                self.js.purge_stream(name)
                for name in (self.stream, *(f"KV_{self.prefix}_{b}" for b in ("tasks", "leases", "children")))
            ))
            return len(doomed)
        # Messages left behind for these tasks find no record and are acked away.
        await _windowed(doomed, self._delete)
        return len(doomed)

    async def _delete(self, task: Task) -> None:
        await asyncio.gather(self._remove("tasks", task.id), self._remove("children", task.id))

    async def cleanup(self) -> builtins.list[Task]:
        at = await self.now()
        records = await self._all_tasks()
        states = {t.id: t.state for t, _ in records}
        expired: list[Task] = []
        for task, rev in records:
            if task.state in READY_STATES or task.state is TaskState.WAITING:
                if task.expires_at is not None and task.expires_at <= at:
                    changed = await self._mutate(
                        task.id,
                        lambda t: _unleased(t, state=TaskState.EXPIRED, finished_at=at)
                        if (t.state in READY_STATES or t.state is TaskState.WAITING)
                        and t.expires_at is not None and t.expires_at <= at else None,
                    )
                    if changed:
                        expired.append(changed[1])
                        await self._after_end(changed[1])
                elif task.state is TaskState.WAITING and all(
                    states.get(p) in TERMINAL_STATES for p in task.depends_on
                ):
                    await self._settle(task.id)  # repairs a parent that died before settling it
            elif task.state in TERMINAL_STATES and task.finished_at is not None:
                if task.finished_at + task.retention() <= at:
                    if await self._remove("tasks", task.id, rev):  # unless re-enqueued since
                        await self._remove("children", task.id)
        return expired


async def _false() -> bool:
    return False


def _message_task_id(msg: Msg) -> str:
    """The task id a delivery message carries ("" for a message not of ours)."""
    return _carried(msg)[0]


def _stand_in(task_id: str, exc: Exception) -> Task:
    """A record that does not decode, as a ready stand-in: reserve leases it (writing
    it over the bad record) and the worker dead-letters it (:mod:`omniq.records`)."""
    return stand_in(task_id, exc, "the tasks bucket")


def _carried(msg: Msg) -> tuple[str, tuple[Task, int] | None]:
    """The task id a delivery message carries ("" for a message not of ours) and the
    record with its revision when it carries that too (see ``_hint``)."""
    rev = msg.headers.get(_REV) if msg.headers else None
    try:
        if rev is not None:
            task = task_decoder.decode(msg.data)
            return task.id, (task, int(rev))
        return msg.data.decode(), None
    except (UnicodeDecodeError, msgspec.DecodeError, ValueError):
        return "", None
