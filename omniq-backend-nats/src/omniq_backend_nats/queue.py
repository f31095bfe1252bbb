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
after, and a crash in between is repaired by redelivery. The exception is a ``delay()``
under an id the app made (:meth:`NatsTaskQueue._enqueue_fresh`): record and message go
in one send, and a reader waits a bounded while for the record of a message that came
first.

The class is layered from one module per seam, lowest first: :mod:`.leases` (the lease
index and this instance's cache of it), :mod:`.records` (compare-and-set of records),
:mod:`.delivery` (messages and consumers), :mod:`.dependencies`, :mod:`.reserve` and
:mod:`.lapse` (heartbeats and lapsed leases); this module adds enqueue, finishing and the
user's actions.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, cast

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from omniq import lifecycle
from omniq.errors import OmniQError, TaskNotFoundError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseStore,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    accepted_writes,
    as_stored,
    write_accepted,
)
from omniq.lifecycle import finished
from omniq.models import (
    READY_STATES,
    TERMINAL_STATES,
    ErrorInfo,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    encoder,
)
from omniq.options import Option

from .batch import (
    _WINDOW,
    WRONG_REVISION,
    Inbox,
    Request,
    Sent,
    _windowed,
    found,
    publishes,
    purged,
    puts,
    revisions,
    sequences,
)
from .batch import removals as batch_removals
from .connection import OPTIONS, UNREACHABLE, nak_delay
from .delivery import _ACK, _Finish
from .events import NatsEventStorage
from .lapse import LeaseDeadlines
from .limits import LimitedReserve
from .names import token
from .records import _replace, _unleased
from .results import NatsResultStorage
from .schedules import ScheduleBucket
from .workers import WorkerBucket

__all__ = ["NatsTaskQueue"]

#: Tasks per window of an enqueue (the app hands over batches of 500: one window each).
_ENQUEUE_WINDOW = 512
#: How many windows of an enqueue may have messages and events unacknowledged.
_IN_FLIGHT = 2


class NatsTaskQueue(LimitedReserve, LeaseDeadlines, ScheduleBucket, WorkerBucket, BaseTaskQueue):
    """The task queue: the layers above, with enqueue, finishing and the user's actions."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.SCHEDULES,
            Capability.DEPENDENCIES,
            Capability.CROSS_PROCESS,
            Capability.BLOCKING_RESERVE,
            Capability.LIMITS,
        }
    )
    #: A short reserve pulled every band that held a message (or its waiting pull said
    #: the band was drained), and a wait keeps a pull open on every band (``.pulls``).
    reserve_drains = True
    option_schema = OPTIONS.extend(
        Option(
            "ack_wait",
            "duration",
            None,
            "AckWait of the consumers: how long a message held by a process that died "
            "silently stays away; none (the default) follows the lease of the worker that "
            "reserves (see *Leases*).",
            minimum=0,
            above=True,
            optional=True,
        )
    )

    _tasks: KeyValue
    _leases: KeyValue
    _children: KeyValue
    _schedules: KeyValue
    #: :meth:`_shares_home`'s last store and answer.
    _home: tuple[BaseStore, bool] | None = None

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
            *(
                self.ensure_bucket(f"{self.prefix}_{name}")
                for name in ("tasks", "leases", "children", "schedules")
            )
        )

    # -- enqueue -----------------------------------------------------------------------

    def _initial(self, task: Task, parents: Sequence[Task], at: float) -> Task:
        state, error = lifecycle.initial_state(task, {p.id: p.state for p in parents}, at)
        base = _unleased(task, created_at=task.created_at or at, state=state)
        if error is not None:
            return _replace(base, finished_at=at, error=error)
        return base

    async def _store(self, task: Task, at: float) -> tuple[Task, Request | None]:
        """Create the record (idempotent by id) one by one, for a task with dependencies
        or one whose id is taken; the task as stored and its delivery message to publish,
        if any (a record that exists already but never got its message gets it now)."""
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
                if (
                    existing.state in (TaskState.PENDING, TaskState.SCHEDULED)
                    and existing.attempts == 0
                ):
                    # Repairs an enqueue that died between record and message;
                    # deduplicated when the first one did publish.
                    return existing, self._hint_request(existing, created=rev)
                return existing, None
        return await self._created(stored, created, record)

    async def _enqueue_fresh(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """A ``delay()`` under an id the app just made: the record's create, the delivery
        message and the ``enqueued`` event in one send, one wait (a record-first enqueue
        waits twice). The message is a hint that may be delivered before the record is
        stored; it says so (``Omniq-Early``) and a reader waits for the record a while
        (:func:`.delivery._early_delay`). Should the create fail, the call raises, and
        the message (dropped after that wait) and the event stay: the crash table of
        docs/architecture.md says what they mean. Anything else (dependencies, several
        tasks, events elsewhere) goes the record-first way."""
        storage = cast(NatsEventStorage | None, event_storage)
        if (
            len(tasks) != 1
            or tasks[0].depends_on
            or (storage is not None and events and not self._shares_home(storage))
        ):
            return await self._enqueue_recorded(tasks, events, event_storage)
        stored = self._initial(tasks[0], (), await self.now())
        if stored.state not in READY_STATES:  # (born finished: no message to send)
            return await self._enqueue_recorded(tasks, events, event_storage)
        record = encoder.encode(stored)
        if len(record) > self.nc.max_payload:
            raise self.too_large(f"the record of task {stored.id!r}", len(record))
        requests = [
            *puts(self._tasks_bucket, [(token(stored.id), record, 0)]),
            self._early_request(stored),
        ]
        if events and storage is not None:
            requests += publishes(storage.messages([as_stored(events[0], stored)]))
        # Sent and awaited in place (Inbox.post), the wake-up too: no coroutine of the
        # client's per publish, none of reaching() per call.
        inbox = self.inbox
        try:
            replies = await (inbox.post(requests) or await inbox.send(requests)).replies()
        except UNREACHABLE as exc:
            raise self.unreachable(exc) from exc
        (created,) = revisions(replies[:1])
        if created == WRONG_REVISION:
            raise OmniQError(
                f"task id {stored.id!r}, made fresh for this enqueue, is taken on the NATS "
                f"server at {self.settings.masked}; nothing was enqueued"
            )
        sequences(replies[1:])
        if inbox.post((), tell=self._wakes([stored])) is None:
            await self._wake([stored])
        return [stored]

    async def _created(
        self, stored: Task, created: int, record: bytes | None = None
    ) -> tuple[Task, Request | None]:
        """A record just created at revision ``created`` (``record``: its bytes, when
        known): settle a waiting task, or give the delivery message of a ready one."""
        if stored.state is TaskState.WAITING:
            return await self._settle(stored.id) or stored, None
        if stored.state in READY_STATES:
            return stored, self._hint_request(stored, created, record)
        return stored, None

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[builtins.list[Task]]:
        """Each batch in windows of :data:`_ENQUEUE_WINDOW` tasks, pipelined: a window's records
        are created and their acknowledgements awaited (:meth:`_store_many`), then its
        delivery messages and events are sent (published through this queue's
        connection; ``event_storage`` is given only when it shares the server; the
        window's events in one message per queue and type, :meth:`.NatsEventStorage.bundles`) and,
        while the server stores them, the next window's records go out and the next
        batch is built. A batch is yielded, and its queues woken, once its messages and
        events are acknowledged; at most :data:`_IN_FLIGHT` windows wait so.

        A delivery message goes after its record, never with it: the two are on
        different streams, which the server may store in either order. A failure
        raises once the batches before it are yielded (when their sends succeed), so
        what is reported stored is a prefix; the records of the failing batch, and of
        one window past it, may exist without their messages (the crash window
        "record created and message published" of docs/architecture.md)."""
        storage = cast(NatsEventStorage | None, event_storage)
        flying: deque[_Flight] = deque()
        landing = False
        try:
            for tasks, events in batches:
                flight = _Flight()
                flying.append(flight)
                for start in range(0, len(tasks), _ENQUEUE_WINDOW):
                    window = tasks[start : start + _ENQUEUE_WINDOW]
                    stored, requests = await self.reaching(self._store_many(window))
                    if events and storage is not None:
                        part = events[start : start + _ENQUEUE_WINDOW]
                        requests += publishes(
                            storage.bundles(
                                [as_stored(e, t) for e, t in zip(part, stored, strict=True)],
                                self.nc.max_payload,
                            )
                        )
                    flight.stored += stored
                    flight.sends.append(await self.reaching(self.inbox.send(requests)))
                    await self._bound(flying)
                flight.complete = True
                while len(flying) > 1:
                    landing = True
                    yield await self._land(flying.popleft())
                    landing = False
            while flying:
                landing = True
                yield await self._land(flying.popleft())
                landing = False
        except Exception:
            # Storing a later batch failed (or building it did): report the ones before
            # it. After a batch that failed to land, nothing more is reported.
            while not landing and flying and flying[0].complete:
                try:
                    done = await self._land(flying.popleft())
                except Exception:
                    break
                yield done
            raise
        finally:
            for flight in flying:
                for sent in flight.sends:
                    sent.forget()

    async def _bound(self, flying: deque[_Flight]) -> None:
        """Wait for the oldest windows in flight while more than :data:`_IN_FLIGHT` are."""
        waiting = [sent for flight in flying for sent in flight.sends if not sent.checked]
        for sent in waiting[: max(len(waiting) - _IN_FLIGHT, 0)]:
            await self._check(sent)

    async def _check(self, sent: Sent) -> None:
        """Wait for the acknowledgements of publishes sent; raises the first error."""
        sequences(await self.reaching(sent.replies()))
        sent.checked = True

    async def _land(self, flight: _Flight) -> builtins.list[Task]:
        """A batch whose sends are all out: wait for their acknowledgements (raising
        the first error), then wake its queues."""
        for sent in flight.sends:
            if not sent.checked:
                await self._check(sent)
        await self._wake(flight.stored)
        return flight.stored

    async def _store_many(self, tasks: Sequence[Task]) -> tuple[list[Task], list[Request]]:
        """The records of ``tasks``; the tasks as stored and the delivery messages to
        publish. Tasks without dependencies are created with one batch of
        compare-and-sets per window (one wait each); a taken id, and the tasks with
        dependencies, go one by one in order after them (a task may depend on one
        earlier in the batch)."""
        at = await self.now()
        out: list[Task | None] = [None] * len(tasks)
        hints: list[Request] = []
        free = [i for i, t in enumerate(tasks) if not t.depends_on]
        taken: set[int] = set()
        for start in range(0, len(free), _WINDOW):
            part = free[start : start + _WINDOW]
            initial = [self._initial(tasks[i], (), at) for i in part]
            records = [encoder.encode(t) for t in initial]
            revs = await self._create(initial, records)
            for i, stored, record, rev in zip(part, initial, records, revs, strict=True):
                if rev == WRONG_REVISION:
                    taken.add(i)
                    continue
                # (The message carries the record's bytes as created: encoded once.)
                out[i], hint = await self._created(stored, rev, record)
                if hint is not None:
                    hints.append(hint)
        for i, task in enumerate(tasks):
            if task.depends_on or i in taken:
                out[i], hint = await self._store(task, at)
                if hint is not None:
                    hints.append(hint)
        return [t for t in out if t is not None], hints

    async def _create(self, tasks: Sequence[Task], records: Sequence[bytes]) -> list[int]:
        """Create the records of ``tasks``, encoded as ``records`` (a compare-and-set on
        "no message yet" each): their revisions, :data:`.batch.WRONG_REVISION` for an id
        taken (or once deleted with a marker: :meth:`_store` looks closer)."""
        # Refused before anything is sent, so a window is stored whole or not at all.
        for task, record in zip(tasks, records, strict=True):
            if len(record) > self.nc.max_payload:
                raise self.too_large(f"the record of task {task.id!r}", len(record))
        return await self.inbox.write(
            self._tasks_bucket, [(token(t.id), r, 0) for t, r in zip(tasks, records, strict=True)]
        )

    async def _send(self, requests: Sequence[Request]) -> None:
        """Puts and publishes on this queue's connection, in windows; raises the first error."""
        for start in range(0, len(requests), _WINDOW):
            sequences(await self.inbox.ask(requests[start : start + _WINDOW]))

    # -- finish ----------------------------------------------------------------------

    def _shares_home(self, store: BaseStore) -> bool:
        """NATS result and event stores on this queue's server: their records go out on
        this queue's connection, with the queue's own steps. (The answer for the last
        store asked is kept: every ``delay()`` asks it of the same one.)"""
        last = self._home
        if last is not None and last[0] is store:
            return last[1]
        siblings = (NatsResultStorage, NatsEventStorage)
        shares = isinstance(store, siblings) and self.shares_server(store)
        self._home = (store, shares)
        return shares

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[bool]:
        """The fenced completions in one batch of compare-and-sets; then, at once, the
        held messages and the results and events of the accepted items (the stores are
        given only when they share this queue's server: one wait for all)."""

        async def write(accepted: builtins.list[bool]) -> Awaitable[None]:
            """Send the accepted items' results and events now (no wait: a waiting
            ``get_result`` sees its result sooner), and return the wait for them."""
            kept_results, kept_events = accepted_writes(items, accepted, results, events)
            requests: builtins.list[Request] = []
            if kept_results and result_storage is not None:
                assert isinstance(result_storage, NatsResultStorage)
                requests += puts(result_storage.bucket, result_storage.entries(kept_results))
            if kept_events and event_storage is not None:
                assert isinstance(event_storage, NatsEventStorage)
                requests += publishes(event_storage.messages(kept_events))
            sent: Sent | None = None
            if 0 < len(requests) <= _WINDOW:
                with contextlib.suppress(Exception):  # (sent again below, windowed)
                    sent = await self.inbox.send(requests)

            async def landed() -> None:
                try:
                    if sent is not None:
                        sequences(await sent.replies())
                    else:
                        await self._send(requests)
                except Exception:
                    # The states changed already (their tokens are spent): never repeat
                    # that, write again through the stores, retried. Results imply their
                    # store.
                    sink = cast(BaseResultStorage, result_storage)
                    await write_accepted(kept_results, kept_events, sink, event_storage)

            return landed()

        changed = await self._finish_jobs(await self._completions(items), write)
        return [done is not None for done in changed]

    async def _finish_one(
        self,
        task_id: str,
        lease_token: str | None,
        change: Callable[[Task], Task],
        verb: bytes = _ACK,
    ) -> tuple[Task, Task] | None:
        """Fenced transition out of ``RUNNING``, then the held message and dependents."""
        (done,) = await self._finish_jobs([_Finish(task_id, lease_token, change, verb)])
        return done

    async def _finish_jobs(
        self,
        jobs: Sequence[_Finish],
        then: Callable[[builtins.list[bool]], Awaitable[Awaitable[None]]] | None = None,
    ) -> builtins.list[tuple[Task, Task] | None]:
        """:meth:`_finish_one` for a batch, step by step: records; messages, together with
        ``then`` (told which jobs were accepted; it sends its writes, the results, and
        returns their wait), whose writes go out first, before the loop hop of the
        gather, so that a waiting ``get_result`` sees them sooner; dependents."""
        changed = await self._change_many([(job.task_id, job.fenced) for job in jobs])
        await self._remove_entries(
            [
                self._forget(job.task_id, job.lease_token)
                for job, done in zip(jobs, changed, strict=True)
                if done is None
            ]
        )
        moved = [job for job, done in zip(jobs, changed, strict=True) if done is not None]
        ended = [
            done[1] for done in changed if done is not None and done[1].state in TERMINAL_STATES
        ]
        accepted = [done is not None for done in changed]
        inbox = self.inbox
        # The results first, then the acks, lease entry removals and the dependents
        # check, all in one write: sent one or two loop turns later (by the gather's
        # tasks), they reached the server as the waiting client's next task did.
        with inbox.one_write():
            landing = await then(accepted) if then is not None else _none()
            acks, removals, others = self._settling(moved)
            keys = [e for e in removals if e is not None]
            settling: Awaitable[None]
            try:
                sent = (
                    await inbox.send(batch_removals(f"{self.prefix}_leases", keys), tell=acks)
                    if keys or acks
                    else None
                )
                settling = self._settled(sent, others)
            except Exception:
                settling = self._settle_messages(moved)  # (the way it fails is raised there)
            # Nothing raised in here may skip the waits below: the results' own fallback
            # (written again, retried) is in ``landing``, and a raise would leave it
            # unawaited while a retried completion is refused (its token spent).
            asking: Awaitable[bool]
            if not ended:
                asking = _false()
            else:
                check = self._any_dependents()
                try:
                    asking = _answered(await inbox.send([check]))
                except Exception:
                    asking = _asked(inbox, check)  # (the way it fails is raised there)
        _, _, dependents = await asyncio.gather(landing, settling, asking)
        if dependents:
            await _windowed(ended, self._after_end)
        return changed

    async def _settled(self, sent: Sent | None, others: Sequence[_Finish]) -> None:
        """The rest of :meth:`_settle_messages` once its acks and removals are sent."""
        if sent is not None:
            purged(await sent.replies())
        await self._settle_others(others)

    async def _completions(self, items: Sequence[Completion]) -> list[_Finish]:
        at = await self.now()
        return [
            _Finish(tid, tok, functools.partial(finished, state=state, error=error, at=at))
            for tid, tok, state, error in items
        ]

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        at = await self.now()
        done = await self._finish_one(
            task_id,
            token,
            lambda t: lifecycle.retried(t, eta, error),
            nak_delay(eta - at),
        )
        if done is not None and eta <= at:
            await self._wake([done[1]])
        return done is not None

    async def _release(self, task_id: str, token: str) -> bool:
        done = await self._finish_one(
            task_id,
            token,
            lifecycle.released,
            nak_delay(0),
        )
        if done is not None:
            await self._wake([done[1]])
        return done is not None

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        at = await self.now()
        if token is not None:
            done = await self._finish_one(
                task_id, token, lambda t: finished(t, TaskState.DEAD, error, at)
            )
            return done is not None
        changed = await self._mutate(
            task_id,
            lambda t: (
                None if t.state in TERMINAL_STATES else finished(t, TaskState.DEAD, error, at)
            ),
        )
        if changed is None:
            return False
        old, new = changed
        await self._settle_message(task_id, old.lease_token, _ACK)
        await self._after_end(new)
        return True

    # -- user actions ------------------------------------------------------------------

    async def _cancel(self, task_id: str) -> bool:
        at = await self.now()
        changed = await self._mutate(
            task_id,
            lambda t: (
                None
                if t.state in TERMINAL_STATES
                else _unleased(t, state=TaskState.CANCELLED, finished_at=at)
            ),
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

    async def _get(self, task_id: str) -> Task | None:
        found = await self._read(task_id)
        return found[0] if found else None

    async def _list(
        self, queue: str | None, states: builtins.list[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        wanted = None if states is None else set(states)
        tasks = [
            t
            for t, _ in await self._all_tasks()
            if (queue is None or t.queue == queue) and (wanted is None or t.state in wanted)
        ]
        tasks.sort(key=lambda t: (t.created_at, t.id))
        return tasks[:limit]

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        out: dict[str, dict[TaskState, int]] = {}
        for task, _ in await self._all_tasks():
            counts = out.setdefault(task.queue, {})
            counts[task.state] = counts.get(task.state, 0) + 1
        return out

    async def _purge(self, queue: str | None, states: builtins.list[TaskState] | None) -> int:
        wanted = set(TaskState) if states is None else set(states)
        doomed = [
            t
            for t, _ in await self._all_tasks()
            if (queue is None or t.queue == queue) and t.state in wanted
        ]
        if queue is None and wanted >= set(TaskState):
            # Everything: empty the streams themselves (schedules stay).
            await asyncio.gather(
                *(
                    self.js.purge_stream(name)
                    for name in (
                        self.stream,
                        *(f"KV_{self.prefix}_{b}" for b in ("tasks", "leases", "children")),
                    )
                )
            )
            return len(doomed)
        # Messages left behind for these tasks find no record and are acked away (an
        # early one at once too, being older than the mark).
        await self._mark_purge()
        await _windowed(doomed, self._delete)
        return len(doomed)

    async def _delete(self, task: Task) -> None:
        await self._settle_purged(task)
        await asyncio.gather(self._remove("tasks", task.id), self._remove("children", task.id))

    async def _cleanup(self) -> builtins.list[Task]:
        at = await self.now()
        records = await self._all_tasks()
        states = {t.id: t.state for t, _ in records}
        self._suspect((t for t, _ in records), at)  # running records no sweep reaches
        expired: list[Task] = []
        for task, rev in records:
            if task.state in READY_STATES or task.state is TaskState.WAITING:
                if task.expires_at is not None and task.expires_at <= at:
                    changed = await self._mutate(
                        task.id,
                        lambda t: (
                            _unleased(t, state=TaskState.EXPIRED, finished_at=at)
                            if (t.state in READY_STATES or t.state is TaskState.WAITING)
                            and t.expires_at is not None
                            and t.expires_at <= at
                            else None
                        ),
                    )
                    if changed:
                        expired.append(changed[1])
                        await self._after_end(changed[1])
                elif task.state is TaskState.WAITING and all(
                    states.get(p) in TERMINAL_STATES for p in task.depends_on
                ):
                    await self._settle(task.id)  # repairs a parent that died before settling it
            elif (
                task.state in TERMINAL_STATES
                and task.finished_at is not None
                and task.finished_at + task.retention() <= at
                and await self._remove("tasks", task.id, rev)  # unless re-enqueued since
            ):
                await self._remove("children", task.id)
        return expired


@dataclass
class _Flight:
    """One batch of an enqueue: its tasks as stored, and the sends of its windows'
    messages and events; ``complete`` once every window is sent."""

    stored: builtins.list[Task] = field(default_factory=list)
    sends: builtins.list[Sent] = field(default_factory=list)
    complete: bool = False


async def _answered(asked: Sent) -> bool:
    """Whether the dependents check (:meth:`Dependencies._any_dependents`) found any."""
    return found((await asked.replies())[0])


async def _asked(inbox: Inbox, check: Request) -> bool:
    """The dependents check sent again, after its first send failed."""
    return found((await inbox.ask([check]))[0])


async def _false() -> bool:
    return False


async def _none() -> None:
    return None
