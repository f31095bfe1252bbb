"""Delivery messages: the work-queue stream ``<prefix>_queue`` and its consumers.

One subject per queue and priority band, ``<prefix>.q.<queue>.<band>``, and one durable
pull consumer per subject. A message is a hint, checked against the record on every
delivery; it stays unacknowledged while its task runs, ``-NAK`` with a delay returns it
for a retry or a delayed task, and ``+ACK`` removes it when the task ends. Wake-ups for
blocked reservers are core NATS messages on ``<prefix>.wake.<queue>`` (carrying the id
of the one task they are for, if one), besides their waiting pulls (:mod:`.pulls`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from omniq.models import PRIORITY_MAX, PRIORITY_MIN, Task, encoder, task_decoder

from .batch import Request, _windowed, sequences
from .connection import ACK_DELIVERED, ack_field, confirm, stream_sequence
from .leases import _holds
from .names import consumer_name, token
from .records import TaskRecords

#: The shortest AckWait a lease gives the consumers (a message of a running task that
#: comes back early costs a redelivery and a check).
_MIN_ACK_WAIT = 1.0
_ACK, _WPI = b"+ACK", b"+WPI"
#: Header of a delivery message that carries its task's record: the record's revision.
_REV = "Omniq-Rev"
#: Records up to this size travel in their delivery message.
_CARRY_MAX = 4096
#: Header of a delivery message sent together with its record's create (a ``delay()``
#: under a fresh id): the message may be delivered before the record is stored.
_EARLY = "Omniq-Early"
#: How a reader waits for the record of an early message that finds none: put back
#: after ``_EARLY_FIRST`` seconds, doubling up to ``_EARLY_MAX``, for ``_EARLY_TRIES``
#: deliveries (about 10 s in all); then the message is an orphan and is acked away.
_EARLY_FIRST, _EARLY_MAX, _EARLY_TRIES = 0.005, 1.0, 17
#: Subject level of the purge mark, ``<prefix>.q._purged.0`` in the queue stream: never a
#: queue name's token (which has ``_`` only before two hex digits), so no consumer and no
#: backlog count takes it. (A key in a KV bucket would make the bucket look in use to the
#: checks that skip an empty one: one in ``<prefix>_children`` made every finished task
#: look up its dependents.)
_PURGED = "_purged"


class _Finish(NamedTuple):
    """One fenced transition out of ``RUNNING``: ``change`` applies only while the
    record holds ``lease_token``; ``verb`` then moves the held message."""

    task_id: str
    lease_token: str | None
    change: Callable[[Task], Task]
    verb: bytes = _ACK

    def fenced(self, task: Task) -> Task | None:
        return self.change(task) if _holds(task, self.lease_token) else None


def _band(priority: int) -> int:
    return min(max(priority, PRIORITY_MIN), PRIORITY_MAX)


def _message_task_id(msg: Msg) -> str:
    """The task id a delivery message carries ("" for a message not of ours)."""
    return _carried(msg)[0]


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


def _delivered(msg: Msg) -> int:
    """How many times the server delivered ``msg`` (this delivery included)."""
    tries = ack_field(msg, ACK_DELIVERED)
    return msg.metadata.num_delivered if tries is None else tries


def _early_delay(msg: Msg) -> float | None:
    """For a message that found no record: how long to put it back for, when it was
    sent with its record's create and may simply have come first (the window of
    ``_EARLY_TRIES`` deliveries is not over); None when it is an orphan (the create
    failed), to ack away. Counted in deliveries, not by its timestamp: that is the
    server's clock, the reader's may differ. (A purge's orphans: :meth:`Delivery._early`.)"""
    if not msg.headers or _EARLY not in msg.headers:
        return None
    tries = _delivered(msg)
    if tries >= _EARLY_TRIES:
        return None
    return min(_EARLY_FIRST * 2.0 ** (tries - 1), _EARLY_MAX)


class Delivery(TaskRecords):
    """Publishing, moving and consuming the delivery messages of tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Consumers this instance set up, with the AckWait it gave them.
        self._consumers: dict[str, float] = {}
        #: The last purge's mark as last read: early messages up to it are orphans.
        self._purged_before = 0

    async def close(self) -> None:
        self._consumers.clear()
        await super().close()

    @property
    def stream(self) -> str:
        return f"{self.prefix}_queue"

    def _subject(self, task: Task) -> str:
        return f"{self.prefix}.q.{token(task.queue)}.{_band(task.priority)}"

    async def _hint(self, task: Task, created: int | None = None) -> None:
        """Publish the delivery message of a task that became ready (see
        :meth:`_hint_request`) and wait for its acknowledgement."""
        sequences(await self.inbox.ask([self._hint_request(task, created)]))

    def _hint_request(
        self, task: Task, created: int | None = None, record: bytes | None = None
    ) -> Request:
        """The delivery message of a task that became ready. For an enqueue, ``created``
        (the record's revision) makes ``Nats-Msg-Id`` = ``<id>:<revision>``: an enqueue
        repeated within the stream's duplicate window (two schedulers firing the same
        time) stores one message, while the same id purged and enqueued anew gets a new
        revision and so a new message.

        A small record is carried whole with its revision (``Omniq-Rev``), so the first
        delivery leases the task without reading it: the compare-and-set on that
        revision proves the copy current. Otherwise the message carries the task id.
        ``record`` is ``task`` encoded, when the caller has it already (a bulk enqueue
        encoded it for the create)."""
        if created is None:
            return (self._subject(task), task.id.encode(), None)
        headers = {"Nats-Msg-Id": f"{task.id}:{created}"}
        data = encoder.encode(task) if record is None else record
        if len(data) <= _CARRY_MAX:
            headers[_REV] = str(created)
        else:
            data = task.id.encode()
        return (self._subject(task), data, headers)

    async def _early(self, msg: Msg) -> float | None:
        """:func:`_early_delay`, but None at once for a message stored before the last
        :meth:`_mark_purge` (its task was purged, or would have been): a purge leaves
        its tasks' messages behind, and each would otherwise wait out the window."""
        delay = _early_delay(msg)
        if delay is None:
            return None
        seq = stream_sequence(msg)
        if seq > self._purged_before:
            try:
                mark = await self.js.get_last_msg(self.stream, self._purge_subject)
                self._purged_before = mark.seq or 0
            except nats.js.errors.NotFoundError:
                pass
        return None if seq < self._purged_before else delay

    @property
    def _purge_subject(self) -> str:
        return f"{self.prefix}.q.{_PURGED}.0"

    async def _mark_purge(self) -> None:
        """Before a purge deletes records: store a mark in the queue stream (its sequence
        is the mark), so readers drop the early messages before it that find no record
        (:meth:`_early`); older marks go."""
        (mark,) = sequences(await self.inbox.ask([(self._purge_subject, b"", None)]))
        await self.js.purge_stream(self.stream, subject=self._purge_subject, seq=mark)

    def _early_request(self, task: Task) -> Request:
        """The delivery message of a task whose record is created in the same send (its
        revision is not known yet): it carries the task id and :data:`_EARLY`, which
        tells a reader that finds no record to wait for it a while (:func:`_early_delay`)."""
        return (self._subject(task), task.id.encode(), {_EARLY: "1"})

    async def _wake(self, tasks: Iterable[Task]) -> None:
        """Wake the waiters of the tasks' queues. A queue woken for one task is told its
        id, so a waiter whose waiting pull already delivered that task stays asleep; for
        several, or to a reader older than that, the message just says "work may be
        ready" (an empty one still does)."""
        wakes = self._wakes(tasks)
        if wakes and self.inbox.post((), tell=wakes) is None:
            for subject, data, _ in wakes:
                await self.nc.publish(subject, data)

    def _wakes(self, tasks: Iterable[Task]) -> list[Request]:
        """The wake-up messages of :meth:`_wake`."""
        ids: dict[str, str] = {}
        for task in tasks:
            ids[task.queue] = "" if task.queue in ids else task.id
        return [
            (f"{self.prefix}.wake.{token(queue)}", task_id.encode(), None)
            for queue, task_id in ids.items()
        ]

    async def _settle_messages(self, jobs: Sequence[_Finish]) -> None:
        """:meth:`_settle_message` for many: acks of cached leases go out with one batch
        of lease entry removals; the rest one by one."""
        acks, removals, others = self._settling(jobs)
        await self._remove_entries(removals, tell=acks)
        await self._settle_others(others)

    def _settling(
        self, jobs: Sequence[_Finish]
    ) -> tuple[list[Request], list[tuple[str, int] | None], list[_Finish]]:
        """What :meth:`_settle_messages` sends for ``jobs``: the acks of cached leases and
        their lease entry removals (forgotten here; an ended batch's entry is kept for
        the next reserve, :meth:`_retire`), and the jobs left to :meth:`_settle_others`."""
        acks: list[Request] = []
        removals: list[tuple[str, int] | None] = []
        others: list[_Finish] = []
        for job in jobs:
            held = self._held.get(job.task_id)
            if job.verb != _ACK or held is None or held.lease.token != job.lease_token:
                others.append(job)
                continue
            acks.append((held.lease.reply, _ACK, None))
            removals.append(self._retire(job.task_id))
        return acks, removals, others

    async def _settle_others(self, others: Sequence[_Finish]) -> None:
        await _windowed(
            others, lambda job: self._settle_message(job.task_id, job.lease_token, job.verb)
        )

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
                # Attempts are counted in the record: naks for delay are not failures.
                max_deliver=-1,
                max_ack_pending=-1,  # delayed and running tasks hold messages
                num_replicas=self.settings["replicas"],
            )
            try:
                await self.js.add_consumer(self.stream, config)
            except nats.js.errors.BadRequestError:
                await self.js.consumer_info(self.stream, name)  # exists with other settings: use it
            self._consumers[name] = ack_wait
        return name
