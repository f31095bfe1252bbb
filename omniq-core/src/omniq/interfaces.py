"""The three storage interfaces and the execution-pool interface.

These are the contracts every backend plugin implements and the conformance suite
(:mod:`omniq.testing`) checks. As fsspec keeps ``open`` public and has implementations
write ``_open``, callers use the public methods of each base class, which check their
arguments once and call protected ``_`` hooks that a backend implements. The hooks are
batch-first (one ``_enqueue`` for every way of enqueueing, one ``_finish`` for every way of
completing); the single-item forms are built on them in the base. A backend may also
override a concrete hook (``_wait_for_work``, ``_wait``, ``_shares_home``) when its engine
does better.

Backend authors: all times are UTC epoch seconds; judge leases, ETAs and expiry by the
backend's own clock where it has one (``now()`` below), never by the caller's.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import enum
import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, ClassVar, Self

import msgspec

from ._deprecated import renamed
from .errors import ConfigError
from .lifecycle import COMPLETABLE_STATES, check_completable
from .limits import Limits, Reservation
from .models import (
    PURGE_DEFAULT_STATES,
    ErrorInfo,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    new_id,
)
from .models import now as _wall_clock
from .options import OptionSchema

__all__ = [
    "COMPLETABLE_STATES",
    "MAX_PAGE",
    "REQUEUE_STATES",
    "BaseEventStorage",
    "BasePool",
    "BaseResultStorage",
    "BaseStore",
    "BaseTaskQueue",
    "Batch",
    "Capability",
    "Completion",
    "EventCount",
    "LeaseRef",
    "TaskPage",
    "accepted_writes",
    "as_stored",
    "check_event_order",
    "check_page_limit",
    "check_seq_cursor",
    "gather_batches",
    "write_accepted",
]

#: (task id, lease token) — what a worker holds for a reserved task.
LeaseRef = tuple[str, str]

#: The states :meth:`BaseTaskQueue.requeue` takes a task from: it ended without success.
REQUEUE_STATES = frozenset(
    {TaskState.DEAD, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED}
)
#: ``list`` with this limit returns every match (the default ``list_page`` reads all).
_EVERYTHING = 2**31 - 1
#: The largest page ``list_page`` hands out.
MAX_PAGE = 1000


class TaskPage(msgspec.Struct, frozen=True):
    """One page of :meth:`BaseTaskQueue.list_page`: tasks newest first, and the cursor
    of the next page (None on the last)."""

    tasks: list[Task]
    cursor: str | None = None


class EventCount(msgspec.Struct, frozen=True, array_like=True):
    """How many events of one type one queue had in one time bucket (its start)."""

    bucket: float
    queue: str
    type: str
    count: int


def check_page_limit(limit: int) -> int:
    """The one check of ``list_page(limit=...)``, shared by every backend."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        from .errors import ConfigError

        raise ConfigError(f"page limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    return limit


def check_seq_cursor(cursor: str | None) -> int | None:
    """A ``list_page`` cursor that is a task's enqueue-order number, as backends that keep
    one hand out (PostgreSQL, Redis, SQLite); None for the first page."""
    if cursor is None:
        return None
    if cursor.isdigit() and len(cursor) < 20:
        return int(cursor)
    from .errors import ConfigError

    raise ConfigError(f"malformed page cursor {cursor!r}: pass back the cursor of a previous page")


def _default_cursor(cursor: str | None) -> tuple[float, str] | None:
    """The default ``list_page`` cursor, ``"created_at|id"`` of the last task shown."""
    if cursor is None:
        return None
    at, sep, task_id = cursor.partition("|")
    try:
        if sep and task_id:
            return float(at), task_id
    except ValueError:
        pass
    from .errors import ConfigError

    raise ConfigError(f"malformed page cursor {cursor!r}: pass back the cursor of a previous page")


class Capability(str, enum.Enum):
    """What a store supports beyond the required core (capabilities are data)."""

    DELAYED = "delayed"  # eta / delay
    PRIORITY = "priority"  # reserve returns higher priority first
    SCHEDULES = "schedules"  # cron / interval schedules
    DEPENDENCIES = "dependencies"  # depends_on
    CROSS_PROCESS = "cross_process"  # several processes may share the store
    BLOCKING_RESERVE = "blocking_reserve"  # wait_for_work wakes on new work (no polling)
    NATIVE_TTL = "native_ttl"  # the engine expires data by itself
    RESULT_NOTIFY = "result_notify"  # wait() wakes on the write (no polling)
    LIMITS = "limits"  # reserve_limited() enforces global rate and concurrency limits


def as_stored(event: TaskEvent, task: Task, state: TaskState | None = None) -> TaskEvent:
    """An ``enqueued`` event made before ``task`` was stored, saying how it was stored:
    its queue, and its name and state (``task.state`` unless given) in the detail (see
    ``BaseTaskQueue._enqueue``). An event that says so already is returned as is (no copy: a
    bulk enqueue's events usually do)."""
    said = (task.state if state is None else state)._value_  # (not the enum's property)
    detail = event.detail
    if (
        event.queue == task.queue
        and detail.get("state") == said
        and detail.get("name") == task.name
    ):
        return event
    return msgspec.structs.replace(
        event, queue=task.queue, detail={**detail, "name": task.name, "state": said}
    )


def accepted_writes(
    items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]],
    accepted: Sequence[bool],
    results: Sequence[TaskResult],
    events: Sequence[TaskEvent],
) -> tuple[Sequence[TaskResult], Sequence[TaskEvent]]:
    """The ``results`` and ``events`` of a :meth:`BaseTaskQueue.finish_many` that may be
    written once ``accepted`` (the answer for each of ``items``) is known: all but those
    of a task whose completion was refused. Without a refusal (the usual case) the
    sequences are returned as they are, without a copy."""
    if all(accepted):
        return results, events
    refused = {item[0] for item, ok in zip(items, accepted, strict=True) if not ok}
    return (
        [r for r in results if r.task_id not in refused],
        [e for e in events if e.task_id not in refused],
    )


async def write_accepted(
    results: Sequence[TaskResult],
    events: Sequence[TaskEvent],
    result_storage: BaseResultStorage,
    event_storage: BaseEventStorage | None,
    tries: int = 3,
) -> None:
    """Write results and events whose tasks' states already changed, both at once.

    Each write is retried a few times here: the caller must not repeat the state change
    (its token is spent, so a repeat is refused and the result would be dropped)."""
    writes = []
    if results:
        writes.append(_retried(lambda: result_storage.set_many(results), tries))
    if events and event_storage is not None:
        writes.append(_retried(lambda: event_storage.append_many(events), tries))
    if writes:
        await asyncio.gather(*writes)


async def _retried(write: Callable[[], Awaitable[None]], tries: int) -> None:
    for attempt in range(tries):
        try:
            return await write()
        except Exception:
            if attempt + 1 == tries:
                raise
            await asyncio.sleep(0.1 * 4**attempt)


class BaseStore(abc.ABC):
    """What all three stores share: construction from a URL, open/close, capabilities."""

    #: Capabilities this implementation declares.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: True when data never leaves this machine (memory, local files, SQLite). Unsigned
    #: dill payloads are only accepted from such stores (docs/architecture.md,
    #: "Serialization and trust").
    local_only: ClassVar[bool] = False
    #: The options ``from_url`` takes (:mod:`omniq.options`); the conformance suite and
    #: the docs table read it.
    option_schema: ClassVar[OptionSchema] = OptionSchema("custom")
    #: How messages name this kind of store ("redis task queue").
    kind_name: ClassVar[str] = "backend"

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build an unopened store from a URL and backend-specific keyword options.

        Raise :class:`omniq.errors.ConfigError` naming the bad URL part or option (with
        any password masked, see :func:`omniq.config.mask_url`).
        """

    async def open(self) -> None:
        """Connect and create what is missing (tables, streams). Must be idempotent."""

    async def close(self) -> None:
        """Release connections. Must be idempotent."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def now(self) -> float:
        """The backend's clock (Redis TIME, PostgreSQL now()); defaults to this host's."""
        return _wall_clock()


#: ``(task_id, lease token, state, error)``: one completion of :meth:`BaseTaskQueue.finish_many`.
Completion = tuple[str, str, TaskState, "ErrorInfo | None"]
#: ``(tasks, events)``: one batch of :meth:`BaseTaskQueue.enqueue_batches`. ``events`` is
#: empty (events off) or holds ``tasks[i]``'s ``enqueued`` event at ``i``.
Batch = tuple[Sequence[Task], Sequence[TaskEvent]]


_NUMBERS = (int, float)


def _lease(call: str, lease: float) -> float:
    if type(lease) not in _NUMBERS or not 0 < lease < math.inf:  # NaN fails both
        raise ConfigError(f"{call}() got lease={lease!r}; expected a finite number of seconds > 0")
    return lease


def _limit(call: str, limit: int) -> int:
    if type(limit) is not int or limit < 1:
        raise ConfigError(f"{call}() got limit={limit!r}; expected an integer >= 1")
    return limit


def _time(call: str, name: str, value: float) -> float:
    if type(value) not in _NUMBERS or not math.isfinite(value):
        raise ConfigError(f"{call}() got {name}={value!r}; expected a finite epoch time in seconds")
    return value


def _queues(call: str, queues: Sequence[str]) -> builtins.list[str]:
    """The queue names once each, in order; refuses none (or one string: not a list)."""
    if isinstance(queues, str) or not queues:
        raise ConfigError(
            f"{call}() got queues={queues!r}; expected a non-empty list of queue names"
        )
    return builtins.list(dict.fromkeys(queues))


def _states(call: str, states: Iterable[TaskState] | None) -> builtins.list[TaskState] | None:
    if states is None:
        return None
    try:
        return [TaskState(s) for s in states]
    except ValueError:
        raise ConfigError(
            f"{call}() got states={states!r}; valid states: {', '.join(s.value for s in TaskState)}"
        ) from None


def _completions(items: Sequence[Completion]) -> Sequence[Completion]:
    """``items`` with every state a :class:`TaskState` in :data:`COMPLETABLE_STATES`
    (:func:`~omniq.lifecycle.check_completable`); refuses the whole batch, nothing
    changed, on the first that is not. No copy when all are members already."""
    for _, _, state, _ in items:
        if type(state) is not TaskState or state not in COMPLETABLE_STATES:
            return [(t, k, check_completable(s, t), e) for t, k, s, e in items]
    return items


def gather_batches(batches: Iterable[Batch]) -> tuple[Sequence[Task], Sequence[TaskEvent]]:
    """All tasks and all events of ``batches``, for an :meth:`BaseTaskQueue._enqueue` that
    writes everything in one step (``events[i]`` is ``tasks[i]``'s when events are on)."""
    if isinstance(batches, Sequence) and len(batches) == 1:
        only: Batch = batches[0]
        return only  # the usual case (delay(), one bulk): no copy
    tasks: builtins.list[Task] = []
    events: builtins.list[TaskEvent] = []
    for batch_tasks, batch_events in batches:
        tasks += batch_tasks
        events += batch_events
    return tasks, events


class BaseTaskQueue(BaseStore):
    """Holds tasks and hands them out under leases.

    The delivery contract (docs/architecture.md, "The delivery contract"): at-least-once;
    a reserved task is leased to one worker until its lease deadline; completions are
    fenced by the lease token; a lapsed lease returns the task with its attempt counted.

    Callers use the public methods; a backend implements the ``_`` methods, which the
    public ones call after checking the arguments (once, here, so every backend refuses
    the same calls with the same error). Batch operations are the hooks; the single-item
    forms are built on them.
    """

    kind_name = "task queue"
    #: True when a ``reserve`` that returns fewer tasks than its limit left no ready task
    #: behind, and ``wait_for_work`` wakes on what arrives after it (``BLOCKING_RESERVE``):
    #: the worker then waits instead of reserving again (section 7 of the architecture).
    reserve_drains: ClassVar[bool] = False
    #: True when the class overrides :meth:`_enqueue_fresh` (set per subclass): a
    #: ``delay()`` on a backend that does not goes straight to :meth:`_enqueue_recorded`,
    #: without the default's extra coroutine (~3,000 instructions per call).
    _fresh_hook: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fresh_hook = cls._enqueue_fresh is not BaseTaskQueue._enqueue_fresh

    # -- enqueue -----------------------------------------------------------------------

    async def enqueue(self, task: Task) -> Task:
        """Store ``task`` and return it as stored (see :meth:`_enqueue` for how)."""
        return (await self._enqueued([([task], ())], None))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[Task]:
        """Enqueue in order (a task may depend on one earlier in the same batch)."""
        return await self._enqueued([(tasks, ())], None) if tasks else []

    def enqueue_recorded(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
        *,
        fresh: bool = False,
    ) -> Coroutine[Any, Any, builtins.list[Task]]:
        """:meth:`enqueue_many`, plus each task's ``enqueued`` event: ``events[i]`` is
        ``tasks[i]``'s, recorded with the queue, ``detail["name"]`` and
        ``detail["state"]`` of the task as stored (a task that existed already keeps its
        own). What ``delay()`` calls. ``event_storage`` is None when events are off.

        ``fresh``: every id was made by the app just now (no task under it can exist),
        so a backend may write the task without first finding out whether it exists
        (:meth:`_enqueue_fresh`).

        Awaited like any async method; a plain one that hands back its hook's coroutine,
        so that a ``delay()`` runs one coroutine less (~2,500 instructions)."""
        if fresh and self._fresh_hook:
            return self._enqueue_fresh(tasks, events, event_storage)
        return self._enqueue_recorded(tasks, events, event_storage)

    async def _enqueue_fresh(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """:meth:`enqueue_recorded` of tasks under fresh ids: by default the same as any
        other. A backend whose create of a record could otherwise race nothing may send
        the record with its other writes at once; should the create still find the id
        taken, it raises rather than return the existing task."""
        return await self._enqueue_recorded(tasks, events, event_storage)

    async def _enqueue_recorded(
        self,
        tasks: Sequence[Task],
        events: Sequence[TaskEvent],
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[Task]:
        """:meth:`enqueue_recorded`: by default one batch through :meth:`enqueue_batches`;
        a backend may write a ``delay()``'s task more directly (without that machinery)
        and hand the rest to this."""
        return await self.enqueue_batches([(tasks, events)], event_storage)

    async def enqueue_batches(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> builtins.list[Task]:
        """:meth:`enqueue_recorded` over ``(tasks, events)`` batches that the caller
        builds as they are taken (what ``enqueue_many()`` calls): the stored tasks, in
        order. When it raises part way, what is stored is a prefix of the tasks, each
        with its event.

        Where :meth:`_shares_home` says so, the backend writes the events in the step
        that stores their tasks; otherwise they are appended here, after the tasks.
        """
        if event_storage is None or self._shares_home(event_storage):
            return await self._enqueued(batches, event_storage)
        taken: builtins.list[tuple[int, Sequence[TaskEvent]]] = []

        def tasks_only() -> Iterator[Batch]:
            for tasks, events in batches:
                taken.append((len(tasks), events))
                yield tasks, ()

        plain: Iterable[Batch]
        if isinstance(batches, Sequence):  # known whole: the backend may see it is one step
            taken = [(len(tasks), events) for tasks, events in batches]
            plain = [(tasks, ()) for tasks, _ in batches]
        else:
            plain = tasks_only()
        stored: builtins.list[Task] = []
        failure: Exception | None = None
        try:
            async for part in self._enqueue(plain, None):
                stored += part
        except Exception as exc:  # record the prefix that was stored, then raise
            failure = exc
        held: builtins.list[TaskEvent] = []
        at = 0
        for count, events in taken:
            if events:
                done = stored[at : at + count]  # shorter when this batch was not stored
                held += [as_stored(e, t) for e, t in zip(events[: len(done)], done, strict=True)]
            at += count
        if held:
            await event_storage.append_many(held)
        if failure is not None:
            raise failure
        return stored

    async def _enqueued(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> builtins.list[Task]:
        stored: builtins.list[Task] = []
        async for part in self._enqueue(batches, event_storage):
            stored += part
        return stored

    @abc.abstractmethod
    def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[builtins.list[Task]]:
        """Store the tasks of ``batches``, in order, yielding each step's stored tasks
        (one per task given, in order) as soon as that step is stored: the base then
        knows what a failure part way left stored. An async generator. ``batches`` may be
        a lazy iterable the caller builds as it is taken (a backend whose server works
        while the client goes on sends each batch as soon as it is built); write each
        batch, or all, in one step, so that a failure stores a prefix.

        Idempotent by ``task.id``: when a task with that id exists, nothing changes and
        the stored task is returned (schedules rely on this to fire once). The stored
        state is decided here, from the task as given: ``WAITING`` if any id in
        ``depends_on`` is not yet succeeded; ``CANCELLED`` (with ``error`` naming the
        parent) if a parent ended in failed/dead/cancelled/expired; ``SCHEDULED`` if
        ``eta`` is in the future; else ``PENDING``. A ``depends_on`` id that does not
        exist raises :class:`omniq.errors.TaskNotFoundError`. ``created_at`` is set by
        the backend if it is 0.

        ``event_storage`` is given only when :meth:`_shares_home` said True for it (and
        events are on): then write each batch's events in the same step as its tasks,
        each as :func:`as_stored` says for its task as stored. Otherwise it is None and
        the batches carry no events.
        """

    def _shares_home(self, store: BaseStore) -> bool:
        """True when ``store`` (a result or event storage) lives where this queue does
        (the same database or server connection), so that this queue's hooks write its
        records in their own step: :meth:`_enqueue` the ``enqueued`` events,
        :meth:`_finish` the results and events. One cheap check per call (no I/O).
        Default: False, the base writes those stores through their public methods."""
        return False

    # -- leases ------------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int = 1
    ) -> builtins.list[Task]:
        """Lease up to ``limit`` (>= 1) ready tasks from ``queues`` (not empty) to
        ``worker_id`` for ``lease`` seconds (> 0); see :meth:`_reserve`."""
        return await self._reserve(
            _queues("reserve", queues),
            worker_id,
            _lease("reserve", lease),
            _limit("reserve", limit),
        )

    @abc.abstractmethod
    async def _reserve(
        self, queues: builtins.list[str], worker_id: str, lease: float, limit: int
    ) -> builtins.list[Task]:
        """Lease up to ``limit`` ready tasks from ``queues`` (distinct names) to
        ``worker_id``.

        Ready: state in ``READY_STATES``, eta passed, not expired (see
        :meth:`omniq.models.Task.is_ready`). Order: highest ``priority`` first, then
        oldest first (FIFO by enqueue order within a priority). Each returned task is
        ``RUNNING`` with ``attempts`` incremented, a fresh unique ``lease_token``,
        ``lease_owner=worker_id``, ``lease_deadline = now + lease`` and ``started_at``
        set. Atomic: no two concurrent reservers ever receive the same task.
        Returns ``[]`` when nothing is ready; never blocks waiting for work.

        A stored task that cannot be decoded must not make reserve fail forever:
        lease it as a stand-in with its id, queue, name and lease, an empty payload and
        ``error`` explaining what is wrong; the worker dead-letters it with that error.
        """

    async def reserve_limited(
        self,
        queues: Sequence[str],
        worker_id: str,
        lease: float,
        limit: int,
        limits: Limits,
    ) -> Reservation:
        """:meth:`reserve`, holding back every ready task a rate or concurrency limit of
        ``limits`` does not allow now (see :meth:`_reserve_limited`). Only stores that
        declare :attr:`Capability.LIMITS` have it; a worker whose app declares no limits
        calls :meth:`reserve`, so unlimited work never pays for limits."""
        if Capability.LIMITS not in self.capabilities:
            raise ConfigError(
                f"{type(self).__name__} does not enforce rate or concurrency limits "
                f"(it does not declare Capability.LIMITS); use a store that does "
                f"(see docs/limits.md) or remove the limits"
            )
        if not isinstance(limits, Limits):
            raise ConfigError(f"reserve_limited() got limits={limits!r}; expected a Limits")
        return await self._reserve_limited(
            _queues("reserve_limited", queues),
            worker_id,
            _lease("reserve_limited", lease),
            _limit("reserve_limited", limit),
            limits,
        )

    async def _reserve_limited(
        self,
        queues: builtins.list[str],
        worker_id: str,
        lease: float,
        limit: int,
        limits: Limits,
    ) -> Reservation:
        """:meth:`_reserve`, except that a ready task is leased only when every limit
        that applies to it (:meth:`omniq.limits.Limits.keys_of`) allows it now, judged
        by the store's clock in the same atomic step as the lease, against state every
        reserver of the store shares:

        - a rate key (``task:<name>``, ``queue:<queue>``) allows a start when its next
          allowed time has come; each start sets that time to ``now + seconds``;
        - a task name's concurrency limit allows a start while fewer tasks of that name
          are ``RUNNING`` with an unexpired lease (a lease that lapsed frees its slot at
          its deadline, before lease recovery runs).

        A task held back stays ready where it is (no lease, no attempt counted, its
        order kept). Look at no more than ``limit + omniq.limits.SCAN_AHEAD`` ready tasks
        in reserve order. Answer the leased tasks and ``retry_in``: seconds until the
        earliest rate that held a task back allows a start, or None.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no Capability.LIMITS")

    async def heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
        """Extend the leases still held to ``now + lease``; return their task ids."""
        _lease("heartbeat", lease)
        return await self._heartbeat(leases, lease) if leases else []

    @abc.abstractmethod
    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
        """Extend the leases (never empty) still held to ``now + lease``; return their
        task ids.

        A lease is held while the task is ``RUNNING`` with that token. Ids missing from
        the answer were lost (lapsed and re-delivered, or cancelled): the worker stops
        them and its completion will be refused.
        """

    # -- finishing ---------------------------------------------------------------------

    async def complete(
        self, task_id: str, token: str, state: TaskState, error: ErrorInfo | None = None
    ) -> bool:
        """Finish a reserved task as ``SUCCEEDED`` or ``CANCELLED`` (fenced by token);
        False, nothing changed, when the lease is no longer held."""
        return (await self.complete_many([(task_id, token, state, error)]))[0]

    async def complete_many(self, items: Sequence[Completion]) -> builtins.list[bool]:
        """Batch of :meth:`complete` calls: ``(task_id, token, state, error)`` each."""
        items = _completions(items)
        return await self._finish(items, (), (), None, None) if items else []

    async def finish_many(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[bool]:
        """:meth:`complete_many`, plus storing the tasks' ``results`` and ``events``:
        the worker's hot path, one call per batch of finished tasks. ``event_storage`` is
        None when events are off.

        A refused completion (the lease was lost) stores nothing of its attempt: neither
        its result nor its events (the events of tasks not in ``items`` are stored).
        Where :meth:`_shares_home` says so, :meth:`_finish` writes a store's records in
        the completions' step; otherwise they are written here, after the completions,
        for the accepted ones only (:func:`accepted_writes`, :func:`write_accepted`): a
        crash in between leaves a task that reads as finished without its result or event
        (docs/architecture.md, "Finishing a task: fencing results and events"), never a
        fenced-out attempt's result.
        """
        items = _completions(items)
        if not items:  # events of other tasks (lease lost, started): nothing to fence
            await write_accepted(results, events, result_storage, event_storage)
            return []
        own_results = self._shares_home(result_storage)
        own_events = event_storage is not None and self._shares_home(event_storage)
        accepted = await self._finish(
            items,
            results if own_results else (),
            events if own_events else (),
            result_storage if own_results else None,
            event_storage if own_events else None,
        )
        theirs = events and event_storage is not None and not own_events
        if (results and not own_results) or theirs:
            results, events = accepted_writes(items, accepted, results, events)
            await write_accepted(
                () if own_results else results,
                () if own_events else events,
                result_storage,
                event_storage,
            )
        return accepted

    @abc.abstractmethod
    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> builtins.list[bool]:
        """Finish each reserved task of ``items`` (never empty; states checked to be in
        :data:`COMPLETABLE_STATES`), fenced by its token; answer, per item, whether it
        was accepted.

        A refused item (the lease is no longer held) changes nothing; a task listed twice
        is finished once (the first). An accepted one gets ``finished_at`` set and its
        lease cleared. Dependents: on success, each ``WAITING`` dependent whose parents
        all succeeded becomes ready (``PENDING``, or ``SCHEDULED`` if its eta is in the
        future); on cancel they are cancelled, as in :meth:`dead_letter`. Dependents
        change in the same atomic step as the parent.

        ``result_storage`` and ``event_storage`` are given only when
        :meth:`_shares_home` said True for them (else None, and their records empty):
        then store ``results`` and ``events`` in the same step, except those of the
        refused items' tasks.
        """

    async def retry(
        self, task_id: str, token: str, eta: float, error: ErrorInfo | None = None
    ) -> bool:
        """Return a reserved task for another attempt at ``eta`` (see :meth:`_retry`)."""
        return await self._retry(task_id, token, _time("retry", "eta", eta), error)

    @abc.abstractmethod
    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        """Return a reserved task for another attempt at ``eta`` (fenced by token).

        State becomes ``RETRYING`` (``eta`` set, ``error`` kept, lease cleared);
        ``attempts`` is kept. Returns False when the lease is no longer held.
        """

    async def release(self, task_id: str, token: str) -> bool:
        """Hand a reserved task back untouched (see :meth:`_release`)."""
        return await self._release(task_id, token)

    @abc.abstractmethod
    async def _release(self, task_id: str, token: str) -> bool:
        """Hand a reserved task back untouched: ``PENDING``, lease cleared, and the
        attempt NOT counted (``attempts`` decremented). For graceful drain and for
        infrastructure failures such as a broken process pool. Fenced by token."""

    async def dead_letter(
        self, task_id: str, token: str | None, error: ErrorInfo | None = None
    ) -> bool:
        """Move a task to ``DEAD`` (see :meth:`_dead_letter`)."""
        return await self._dead_letter(task_id, token, error)

    @abc.abstractmethod
    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        """Move a task to ``DEAD`` with ``error`` kept (``finished_at`` set).

        With a token, fenced like :meth:`_finish`; with ``None`` (a task that cannot
        even be decoded), unconditional for a task in any non-terminal state, and
        False (nothing changed) for a task that already finished.
        ``WAITING`` dependents become ``CANCELLED``, recursively, in the same atomic
        step; each one's ``error`` names its own direct parent.
        """

    async def release_expired_leases(self) -> builtins.list[Task]:
        """Return every task whose lease lapsed to its queue (see the hook)."""
        return await self._release_expired_leases()

    @abc.abstractmethod
    async def _release_expired_leases(self) -> builtins.list[Task]:
        """Return every ``RUNNING`` task whose lease deadline passed to its queue.

        The task becomes ready again (a state in ``READY_STATES``, usually
        ``PENDING``) and the attempt stays counted. A task whose ``attempts`` reached
        ``max(max_deliveries, max_retries + 1)`` goes to ``DEAD`` instead (its worker
        keeps dying), cancelling its dependents. Returns the tasks as updated.
        """

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not finished (see :meth:`_cancel`)."""
        return await self._cancel(task_id)

    @abc.abstractmethod
    async def _cancel(self, task_id: str) -> bool:
        """Cancel a task that has not finished; dependents are cancelled too.

        A ``RUNNING`` task is cancelled at once and its lease dropped, so the worker's
        next heartbeat sees it lost. Sets ``finished_at`` (as does every move to a
        terminal state, cascades included, so cleanup can apply retention). Returns
        False when the task is already terminal. Raises
        :class:`omniq.errors.TaskNotFoundError` for an unknown id.
        """

    # -- reading and housekeeping -------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The task with that id, or None."""
        return await self._get(task_id)

    @abc.abstractmethod
    async def _get(self, task_id: str) -> Task | None:
        """The task with that id, or None."""

    async def list(
        self,
        queue: str | None = None,
        states: Iterable[TaskState] | None = None,
        limit: int = 100,
    ) -> builtins.list[Task]:
        """Tasks filtered by queue and states, oldest first, at most ``limit`` (>= 1)."""
        return await self._list(queue, _states("list", states), _limit("list", limit))

    @abc.abstractmethod
    async def _list(
        self, queue: str | None, states: builtins.list[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        """Tasks filtered by queue and states (None: any), oldest first, at most ``limit``."""

    async def stats(self) -> dict[str, dict[TaskState, int]]:
        """Count of tasks per queue name and state (states with zero may be left out)."""
        return await self._stats()

    @abc.abstractmethod
    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        """Count of tasks per queue name and state (states with zero may be left out)."""

    async def purge(
        self, queue: str | None = None, states: Iterable[TaskState] | None = None
    ) -> int:
        """Delete tasks (all queues when ``queue`` is None); return how many.
        ``states`` None means :data:`~omniq.models.PURGE_DEFAULT_STATES`: every state
        but ``running``, whose worker still holds the task; a running task is deleted
        only when ``running`` is among ``states``. Schedules are not touched."""
        wanted = PURGE_DEFAULT_STATES if states is None else states
        return await self._purge(queue, _states("purge", wanted))

    @abc.abstractmethod
    async def _purge(self, queue: str | None, states: builtins.list[TaskState] | None) -> int:
        """Delete the tasks in ``states`` (every state when None; the base passes the
        default set) of ``queue`` (all queues when None); return how many."""

    async def cleanup(self) -> builtins.list[Task]:
        """TTL enforcement, run periodically by workers (see :meth:`_cleanup`)."""
        return await self._cleanup()

    @abc.abstractmethod
    async def _cleanup(self) -> builtins.list[Task]:
        """TTL enforcement, run periodically by workers.

        1. A task in ``READY_STATES`` or ``WAITING`` whose ``expires_at`` passed becomes
           ``EXPIRED`` with ``finished_at`` set (dependents cancelled); these tasks are
           returned so the caller can record ``expired`` events.
        2. A terminal task whose ``finished_at + task.retention()`` passed is deleted.
        """

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when work may be ready in ``queues`` or after ``timeout`` seconds."""
        if type(timeout) not in _NUMBERS or not 0 <= timeout < math.inf:
            raise ConfigError(
                f"wait_for_work() got timeout={timeout!r}; expected a finite number of seconds >= 0"
            )
        await self._wait_for_work(_queues("wait_for_work", queues), timeout)

    async def _wait_for_work(self, queues: builtins.list[str], timeout: float) -> None:
        """Return when work may be ready in ``queues`` or after ``timeout`` seconds.

        The default sleeps (polling); backends with notifications (LISTEN/NOTIFY,
        blocking pops, JetStream pull) return as soon as something is enqueued.
        """
        await asyncio.sleep(timeout)

    # -- schedules ---------------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace the schedule with ``schedule.id``; return it."""
        return await self._add_schedule(schedule)

    @abc.abstractmethod
    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace the schedule with ``schedule.id``; return it."""

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule with that id, or None."""
        return await self._get_schedule(schedule_id)

    @abc.abstractmethod
    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule with that id, or None."""

    async def list_schedules(self) -> builtins.list[Schedule]:
        """All schedules, ordered by id."""
        return await self._list_schedules()

    @abc.abstractmethod
    async def _list_schedules(self) -> builtins.list[Schedule]:
        """All schedules, ordered by id."""

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False when there was none."""
        return await self._delete_schedule(schedule_id)

    @abc.abstractmethod
    async def _delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False when there was none."""

    async def set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None = None
    ) -> bool:
        """Pause or resume (see :meth:`_set_schedule_paused`)."""
        if next_run is not None:
            _time("set_schedule_paused", "next_run", next_run)
        return await self._set_schedule_paused(schedule_id, paused, next_run)

    @abc.abstractmethod
    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        """Pause or resume; when ``next_run`` is given, store it too (the app passes
        the next firing after now on resume, so missed firings are not replayed).
        False when there is no such schedule."""

    async def claim_due_schedules(
        self, at: float, limit: int = 100
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        """Claim firings of unpaused schedules due at ``at`` (see the hook)."""
        return await self._claim_due_schedules(
            _time("claim_due_schedules", "at", at), _limit("claim_due_schedules", limit)
        )

    @abc.abstractmethod
    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        """Claim firings of up to ``limit`` unpaused schedules whose ``next_run <= at``.

        For each, compute ``times, nxt = schedule.due_firings(at)`` and store
        ``next_run = nxt`` and ``last_run = times[-1]`` with a compare-and-set on the
        old ``next_run``, so that of several schedulers claiming at once exactly one
        wins each firing. Return the won schedules (as they were before the update)
        with their firing times. The caller enqueues one task per firing with
        :meth:`Schedule.firing_task_id` as id, which makes a crash between claim and
        enqueue safe to repeat.
        """

    # -- operator views and actions (defaults built from the core) ----------------------

    async def list_page(
        self,
        *,
        queue: str | None = None,
        states: Iterable[TaskState] | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """One page of tasks matching every filter given, newest first: what a dashboard
        or an operator pages through, so it is paged by key, never by offset.

        ``name`` matches the task name exactly; ``since`` (inclusive) and ``until``
        (exclusive) bound ``created_at``. The answer's ``cursor`` is None on the last
        page; passed back with the same filters it gives the next page, and tasks
        enqueued meanwhile never shift a page (they sort before the cursor). A cursor
        is opaque, meaningful only to the store that made it; a malformed one raises
        :class:`omniq.errors.ConfigError`. A backend may bound the work of one call: a
        page can then hold fewer than ``limit`` tasks with a cursor still following.
        """
        for label, value in (("since", since), ("until", until)):
            if value is not None:
                _time("list_page", label, value)
        return await self._list_page(
            queue=queue,
            states=_states("list_page", states),
            name=name,
            since=since,
            until=until,
            cursor=cursor,
            limit=check_page_limit(limit),
        )

    async def _list_page(
        self,
        *,
        queue: str | None,
        states: builtins.list[TaskState] | None,
        name: str | None,
        since: float | None,
        until: float | None,
        cursor: str | None,
        limit: int,
    ) -> TaskPage:
        """One page of :meth:`list_page` (``limit`` checked, ``states`` a list or None).

        The default reads every task through :meth:`_list` and sorts by
        ``(created_at, id)``: right for small stores; a backend with an index on its
        enqueue order overrides it (see the PostgreSQL and Redis backends).
        """
        after = _default_cursor(cursor)
        found = [
            t
            for t in await self._list(queue, states, _EVERYTHING)
            if (name is None or t.name == name)
            and (since is None or t.created_at >= since)
            and (until is None or t.created_at < until)
            and (after is None or (t.created_at, t.id) < after)
        ]
        found.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        page = found[:limit]
        more = len(found) > limit
        return TaskPage(
            tasks=page, cursor=f"{page[-1].created_at!r}|{page[-1].id}" if more else None
        )

    async def requeue(self, task_id: str) -> Task:
        """Enqueue a task that ended badly again; the new task (see :meth:`requeue_many`)."""
        return (await self.requeue_many([task_id]))[0]

    async def requeue_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Enqueue tasks that ended badly (``DEAD``, ``FAILED``, ``CANCELLED`` or
        ``EXPIRED``) again, and return the new tasks as stored, in the order given
        (an id given twice is requeued once).

        Each new task has a new id and the original's name, queue, payload, priority
        and options, with ``attempts`` 0, no error, no eta and no dependencies (its
        parents already ended); a time to live it had counts again from now. The
        originals stay as they were, so their history (error, traceback, events) is
        kept; the caller records a ``requeued`` event on each naming who requeued and
        the new id. Every id is checked before any task is enqueued: an unknown one
        raises :class:`omniq.errors.TaskNotFoundError`, one in another state
        :class:`omniq.errors.QueueError`, and nothing is requeued.
        """
        from .errors import QueueError, TaskNotFoundError

        olds: builtins.list[Task] = []
        refused: builtins.list[str] = []
        for task_id in dict.fromkeys(task_ids):
            task = await self.get(task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if task.state not in REQUEUE_STATES:
                refused.append(f"{task_id!r} is {task.state.value}")
            olds.append(task)
        if refused:
            raise QueueError(
                f"task {', '.join(refused)}; only tasks in "
                f"{sorted(s.value for s in REQUEUE_STATES)} can be requeued (nothing was)"
            )
        return await self._requeue(olds) if olds else []

    async def _requeue(self, tasks: builtins.list[Task]) -> builtins.list[Task]:
        """Enqueue a fresh copy of each task (all in ``REQUEUE_STATES``, checked by the
        base) in one batch; the new tasks as stored. A backend may override it to
        check and enqueue in one step of its engine."""
        at = await self.now()
        fresh = [
            msgspec.structs.replace(
                task,
                id=new_id(),
                state=TaskState.PENDING,
                created_at=at,
                eta=None,
                expires_at=(
                    None if task.expires_at is None else at + task.expires_at - task.created_at
                ),
                attempts=0,
                depends_on=(),
                lease_owner=None,
                lease_token=None,
                lease_deadline=None,
                started_at=None,
                finished_at=None,
                error=None,
            )
            for task in tasks
        ]
        return await self.enqueue_many(fresh)

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """The stored tasks that depend on ``task_id`` (whose ``depends_on`` names it),
        ordered by id; [] for a task without dependents or an unknown id. Part of the
        ``DEPENDENCIES`` capability: a backend declaring it implements
        :meth:`_dependents`."""
        return await self._dependents(task_id)

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        """The stored tasks whose ``depends_on`` names ``task_id``, ordered by id, also
        after ``task_id`` ended (until it or they are deleted)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list the dependents of a task")

    # -- live workers (omniq workers, omniq health) ------------------------------------
    # Not abstract, so a backend written before the registry still loads; the
    # conformance suite (omniq.testing.queue_workers) fails one that lacks it.

    async def register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        """Insert or replace the worker ``info.id``; return it as stored, with
        ``expires_at = now() + ttl`` by the store's clock. Workers call this at start
        and on their heartbeat cadence, never per task."""
        if type(ttl) not in _NUMBERS or not 0 < ttl < math.inf:
            raise ConfigError(
                f"register_worker() got ttl={ttl!r}; expected a finite number of seconds > 0"
            )
        return await self._register_worker(info, float(ttl))

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        """Insert or replace ``info.id`` with ``expires_at = now() + ttl`` (store clock)."""
        raise NotImplementedError(f"{type(self).__name__} has no worker registry")

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """The registered workers whose ``expires_at`` has not passed by the store's
        clock, ordered by id (expired entries may be deleted here)."""
        return await self._list_workers()

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        """The unexpired workers by the store's clock, ordered by id."""
        raise NotImplementedError(f"{type(self).__name__} has no worker registry")

    async def unregister_worker(self, worker_id: str) -> bool:
        """Remove a worker (it stopped); False when it was not registered."""
        return await self._unregister_worker(worker_id)

    async def _unregister_worker(self, worker_id: str) -> bool:
        """Remove a worker; False when it was not registered."""
        raise NotImplementedError(f"{type(self).__name__} has no worker registry")


class BaseResultStorage(BaseStore):
    """Results keyed by task id: a re-run overwrites, never adds.

    Callers use the public methods; a backend implements the ``_`` methods (batch
    first: ``set`` and ``get`` are built on ``_set_many`` and ``_get_many``).
    """

    kind_name = "result storage"

    async def set(self, result: TaskResult) -> None:
        """Store (or overwrite) the result of ``result.task_id``."""
        await self._set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or overwrite) each result."""
        if results:
            await self._set_many(results)

    @abc.abstractmethod
    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or overwrite) each result (never empty) under ``result.task_id``.
        ``expires_at`` is when it may disappear; None keeps it until deleted."""

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when there is none or it has expired."""
        return (await self._get_many([task_id])).get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        """Results found, by task id (missing ids are left out)."""
        return await self._get_many(task_ids) if task_ids else {}

    @abc.abstractmethod
    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        """Results found, by task id (``task_ids`` never empty; missing ids left out).
        An expired result is missing even if the cleanup sweep has not deleted it yet."""

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        return await self._delete(task_id)

    @abc.abstractmethod
    async def _delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""

    async def cleanup(self) -> int:
        """Delete expired results; return how many."""
        return await self._cleanup()

    @abc.abstractmethod
    async def _cleanup(self) -> int:
        """Delete expired results; return how many. (A no-op with native TTL.)"""

    #: The default :meth:`_wait`'s first poll interval (seconds), and how long it polls
    #: at that pace before the interval grows: a polling backend trades a few cheap reads
    #: in a task's first moments for the latency of a short task.
    wait_poll: float = 0.002
    wait_poll_flat: float = 0.0

    def expect(self, task_id: str) -> None:
        """Note that a task under the fresh id ``task_id`` (made by the app for it, so no
        result under it can exist yet) is about to be enqueued, before the enqueue is
        sent: a storage whose notifications reach this process may start catching its
        result now, and the first :meth:`wait` for it then need not read before it
        sleeps. Nothing to undo when the enqueue fails (the wait just finds nothing)."""
        self._expect(task_id)

    def _expect(self, task_id: str) -> None:
        """:meth:`expect`; the default does nothing (every wait reads first). A backend
        that keeps an expectation keeps few (a producer may never wait), and its
        :meth:`_wait` may skip the first read only for a result it would have caught, and
        still reads before it gives up (a notification can be late or lost)."""

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """The result as soon as it exists, or None after ``timeout`` seconds (>= 0)."""
        if type(timeout) not in _NUMBERS or not 0 <= timeout < math.inf:
            raise ConfigError(
                f"wait() got timeout={timeout!r}; expected a finite number of seconds >= 0"
            )
        return await self._wait(task_id, timeout)

    async def _wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """The result as soon as it exists, or None after ``timeout`` seconds.

        The default polls every :attr:`wait_poll` seconds for the first
        :attr:`wait_poll_flat` seconds, then at a growing interval (up to 100 ms);
        backends with notifications override it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        grow_after = loop.time() + self.wait_poll_flat
        delay = self.wait_poll
        while True:
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            if loop.time() >= grow_after:
                delay = min(delay * 1.5, 0.1)


def check_event_order(order: str) -> str:
    """The one check of ``query(order=...)``, shared by the app and every backend."""
    if order not in ("asc", "desc"):
        raise ConfigError(f"event order must be 'asc' or 'desc', got {order!r}")
    return order


class BaseEventStorage(BaseStore):
    """An append-only log of what happened to tasks.

    Callers use the public methods; a backend implements the ``_`` methods.
    """

    async def append(self, event: TaskEvent) -> None:
        await self._append_many([event])

    kind_name = "event storage"

    async def append_many(self, events: Sequence[TaskEvent]) -> None:
        """Append events (workers buffer and flush them in batches)."""
        if events:
            await self._append_many(events)

    @abc.abstractmethod
    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        """Append ``events`` (never empty)."""

    async def query(
        self,
        *,
        task_id: str | None = None,
        queue: str | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 1000,
        order: str = "asc",
    ) -> builtins.list[TaskEvent]:
        """Events matching every filter given (see :meth:`_query`); ``limit`` None or
        >= 1, ``order`` "asc" or "desc"."""
        check_event_order(order)
        if limit is not None:
            _limit("query", limit)
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                _time("query", name, value)
        kinds = None if types is None else [getattr(t, "value", t) for t in types]
        return await self._query(
            task_id=task_id,
            queue=queue,
            types=kinds,
            since=since,
            until=until,
            limit=limit,
            order=order,
        )

    @abc.abstractmethod
    async def _query(
        self,
        *,
        task_id: str | None,
        queue: str | None,
        types: builtins.list[str] | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        order: str,
    ) -> builtins.list[TaskEvent]:
        """Events matching every filter given, by timestamp (``order`` "asc" or
        "desc"; among equal timestamps the order is unspecified), at most ``limit``
        (None: no limit; with "desc" the newest ``limit``).
        ``since`` is inclusive, ``until`` exclusive."""

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; return how many."""
        return await self._cleanup(_time("cleanup", "older_than", older_than))

    @abc.abstractmethod
    async def _cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; return how many."""

    async def counts(
        self,
        *,
        since: float,
        until: float,
        step: float,
        queue: str | None = None,
        types: Iterable[str] | None = None,
    ) -> list[EventCount]:
        """Events per time bucket, queue and type: what charts of throughput and failures
        draw. Buckets are ``step`` seconds wide starting at ``since`` (bucket ``i`` holds
        ``since + i*step <= timestamp < since + (i+1)*step``), over
        ``since <= timestamp < until``; only non-zero counts are returned, ordered by
        bucket, then queue, then type.

        """
        if not step > 0 or not until >= since:
            raise ConfigError(
                f"counts needs step > 0 and until >= since, got step={step!r}, "
                f"since={since!r}, until={until!r}"
            )
        return await self._counts(
            since=_time("counts", "since", since),
            until=_time("counts", "until", until),
            step=step,
            queue=queue,
            types=None if types is None else [getattr(t, "value", t) for t in types],
        )

    async def _counts(
        self,
        *,
        since: float,
        until: float,
        step: float,
        queue: str | None,
        types: builtins.list[str] | None,
    ) -> builtins.list[EventCount]:
        """What :meth:`counts` returns (its arguments checked, ``types`` as strings).

        The default counts what :meth:`_query` returns; a backend that can count on its
        server overrides it.
        """
        tally: dict[tuple[float, str, str], int] = {}
        for e in await self._query(
            task_id=None,
            queue=queue,
            types=types,
            since=since,
            until=until,
            limit=None,
            order="asc",
        ):
            key = (since + ((e.timestamp - since) // step) * step, e.queue, e.type.value)
            tally[key] = tally.get(key, 0) + 1
        return [EventCount(b, q, t, n) for (b, q, t), n in sorted(tally.items())]


class BasePool(abc.ABC):
    """An execution pool (async, thread, process, gevent): runs task functions for the
    worker's runtime loop (:class:`omniq.worker.runtime.Worker`).

    The runtime loop owns reserving, leases, results, events and retries; a pool only
    runs calls. Plugins add pools through ``omniq_register_pools``.
    """

    #: The name used by ``--pool`` and ``run_worker(pool=...)``.
    name: ClassVar[str]
    #: Whether :meth:`run` calls :func:`omniq.context.body_starting` itself when the body
    #: starts (the process pool, whose child first starts up); else the runtime calls it
    #: right after the middleware's ``before_run``.
    calls_body_start: ClassVar[bool] = False

    def __init__(self, concurrency: int, **options: Any) -> None:
        self.concurrency = concurrency

    @classmethod
    def prepare_process(cls) -> None:
        """Called once by ``omniq worker`` after ``--pool`` is resolved and before
        ``--app`` is imported, in the process that will run the pool: the moment to
        monkey-patch (gevent). Default: nothing."""

    async def start(self) -> None:
        """Start threads/processes. Called once before the first :meth:`run`."""

    async def stop(self, wait: bool = True) -> None:
        """Shut down; with ``wait=False`` do not wait for running calls."""

    def bodies_running(self) -> int:
        """How many calls' bodies run now, counting calls that were cancelled or timed out
        but could not be stopped (a thread cannot be killed). A stopping worker hands the
        tasks it cancelled back to their queue only when this is 0, so that no task runs
        twice at once. Default 0: the pool stops whatever it cancels."""
        return 0

    @abc.abstractmethod
    async def run(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run one call and return its value, raising what it raised.

        ``func`` may be a coroutine function or a plain one. ``timeout`` must be
        enforced: raise :class:`omniq.errors.TaskTimeoutError` when it passes. Pools that
        run in another process send ``func`` there themselves (the process pool uses dill).
        Cancelling the awaiting coroutine (the lease was lost) should stop the call
        where the pool can.
        """


__getattr__ = renamed(__name__, {"BaseWorker": ("BasePool", "BasePool")}, globals())
