"""The values that move between the app, the stores and the workers.

All times are UTC epoch seconds (``float``): every engine stores and compares them
natively (SQL REAL, Redis scores, JetStream headers), and no backend has to think about
time zones. Models are msgspec Structs so they encode to msgpack in one pass.
"""

from __future__ import annotations

import enum
import math
import os
import re
import time
from typing import Any, Literal

import msgspec

from .cron import next_firing
from .errors import ConfigError

__all__ = [
    "ACTIVE_STATES",
    "PURGE_DEFAULT_STATES",
    "READY_STATES",
    "TERMINAL_STATES",
    "ErrorInfo",
    "EventType",
    "Schedule",
    "Task",
    "TaskEvent",
    "TaskResult",
    "TaskState",
    "WorkerInfo",
    "id_time",
    "new_id",
    "new_ids",
    "now",
    "validate_name",
]

# Queue names, task ids and schedule ids are hostile input: one strict pattern, checked
# once at the API boundary, so no backend ever sees a path separator, a SQL quote, a
# NATS wildcard or a Redis glob character.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")

PRIORITY_MIN = 0
PRIORITY_MAX = 9


def now() -> float:
    return time.time()


#: Random parts of ids, read from the OS 256 at a time: a worker makes two ids per task
#: (its events), and a read of the OS per id cost more than the rest of making it.
_random_parts: list[str] = []
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    # A forked child must not hand out the ids its parent still holds.
    os.register_at_fork(after_in_child=_random_parts.clear)


def _random_hex(n: int) -> list[str]:
    # (split by bytes.hex's separator, as new_ids does: no Python-level slice per part)
    return os.urandom(8 * n).hex(" ", 8).split()


def new_id() -> str:
    """A time-ordered unique id (sortable, URL- and path-safe)."""
    try:
        part = _random_parts.pop()
    except IndexError:  # list.pop is atomic, so threads never share a part
        _random_parts.extend(_random_hex(256))
        return new_id()
    return f"{time.time_ns():x}-{part}"


def new_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_id` makes them, in order, with the random parts read in
    one call (one id, as for each ``delay()``'s event, from :func:`new_id`'s pool).

    The clock is read once: the ids get its time plus 0, 1, 2... ns, so they sort in
    the order made and each id's time is at most when it was made (what
    :func:`id_time` promises). Times counted up share every hex digit but the last
    two (:data:`_LAST_DIGITS`) for 256 ids, formatted once for them: a time formatted
    per id cost more than the rest of the id (~4,000 -> ~1,750 instructions an id)."""
    if n == 1:
        return [new_id()]
    parts = os.urandom(8 * n).hex(" ", 8).split()
    at = time.time_ns()
    ids: list[str] = []
    while len(ids) < n:
        low = at & 0xFF
        run = min(256 - low, n - len(ids))
        high = f"{at >> 8:x}"
        done = len(ids)
        ids += [
            f"{high}{last}{part}"  # (one string made, not two: ~100 instructions an id)
            for last, part in zip(
                _LAST_DIGITS[low : low + run], parts[done : done + run], strict=True
            )
        ]
        at += run
    return ids


#: The last two hex digits of an id's time and its dash, for each value (see :func:`new_ids`).
_LAST_DIGITS = [f"{low:02x}-" for low in range(256)]


#: Exactly what :func:`new_id` makes: ``time.time_ns()`` in hex (no leading zero; 16
#: digits hold every time until 2554), a dash, 16 random hex digits.
_NEW_ID = re.compile(r"([1-9a-f][0-9a-f]{0,15})-[0-9a-f]{16}")


def id_time(task_id: str) -> float | None:
    """When :func:`new_id` made ``task_id`` (seconds since the epoch, by the clock of the
    host that made it), or None for an id of any other form (one the application
    gave). A store may skip what was written before that time, less the clock skew:
    nothing about the id can be written earlier."""
    match = _NEW_ID.fullmatch(task_id)
    return None if match is None else int(match[1], 16) / 1e9


def validate_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value) or ".." in value:
        raise ConfigError(
            f"invalid {kind} {value!r}: use 1-200 characters from letters, digits, '_', '-', "
            f"'.', ':' starting with a letter or digit (no '..')"
        )
    return value


class TaskState(str, enum.Enum):
    """Where a task is in its lifecycle (the value is what stores and the CLI show).

    Ready states: ``pending``, ``scheduled``, ``retrying`` (:data:`READY_STATES`). Active:
    those plus ``waiting`` and ``running`` (:data:`ACTIVE_STATES`). Terminal: ``succeeded``,
    ``failed``, ``cancelled``, ``expired``, ``dead`` (:data:`TERMINAL_STATES`). A task itself
    never ends ``failed``: its last failed attempt leaves it ``dead``, and ``failed`` is the
    state of that attempt's result and event.
    """

    PENDING = "pending"  # ready to run as soon as a worker reserves it
    SCHEDULED = "scheduled"  # eta in the future (delayed task)
    WAITING = "waiting"  # waits for its dependencies to succeed
    RUNNING = "running"  # leased to a worker
    RETRYING = "retrying"  # failed an attempt, waits for its backoff eta
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a result/event state: the attempt (or the task, for results) failed
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not started before its ttl ran out
    DEAD = "dead"  # dead-lettered: retries used up, undecodable, unknown, too many deliveries


#: States a reserve may pick from (when their eta has passed).
READY_STATES = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRYING})
#: States that will still change without user action.
ACTIVE_STATES = READY_STATES | {TaskState.WAITING, TaskState.RUNNING}
#: What ``purge`` deletes when no states are named: all but ``running`` (its worker
#: still holds it; purge it by naming the state).
PURGE_DEFAULT_STATES = frozenset(TaskState) - {TaskState.RUNNING}
#: States a task never leaves (until cleanup deletes it).
TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED, TaskState.DEAD}
)


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """An exception as it travels between processes: enough to show it and, when its type
    is importable on the caller's side, to raise it again.

    :ivar type: the exception's class name (``"ValueError"``).
    :ivar message: ``str()`` of the exception.
    :ivar traceback: the formatted traceback from the worker, or empty.
    :ivar module: the module of the exception's type, empty for builtins.
    :ivar args: the arguments that build the exception again (its ``__reduce__``'s, as
        pickle would call its class), when they are plain values of a bounded size and
        differ from ``(message,)``; None otherwise and in records of older workers (a
        reader without this field skips it). See :mod:`omniq.remote_errors`.
    """

    type: str
    message: str
    traceback: str = ""
    module: str = ""  # module of the exception type, to rebuild it on the caller's side
    args: tuple[Any, ...] | None = None


class Task(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """One unit of work and everything a backend needs to deliver it.

    ``payload`` is the serializer's envelope of the call (args, kwargs and, for
    functions that have no importable name, the function itself); backends store it as
    opaque bytes.

    ``gc=False``: a task's fields are strings, numbers, a tuple of ids and a frozen
    ErrorInfo, so it can never be part of a reference cycle; untracked, the thousands a
    bulk enqueue or a worker makes cost the cyclic garbage collector nothing (~2 us per
    task of a bulk enqueue went to collections).

    :ivar id: unique task id (:func:`new_id`, or the caller's ``task_id``); enqueue is
        idempotent by it.
    :ivar name: the registered task name the worker looks up (never imported from it).
    :ivar queue: the queue it waits in.
    :ivar payload: the serialized call, opaque bytes to a store.
    :ivar priority: 0-9, higher is reserved first.
    :ivar state: a :class:`TaskState`; the store decides it on enqueue.
    :ivar created_at: when it was enqueued (set by the store if 0).
    :ivar eta: not before this time (delayed tasks, retry backoff), or None.
    :ivar expires_at: not started after this time (``ttl``): it becomes ``expired``.
    :ivar timeout: seconds one attempt may run before it fails with
        :class:`~omniq.errors.TaskTimeoutError`, or None.
    :ivar max_retries: failed attempts that are retried before the task is ``dead``.
    :ivar retry_backoff: seconds before the first retry, doubled at each attempt.
    :ivar retry_backoff_max: the cap on that delay.
    :ivar max_deliveries: a task whose lease lapses is dead-lettered once it has had
        ``max(max_deliveries, max_retries + 1)`` attempts.
    :ivar attempts: attempts started so far (reserve adds one).
    :ivar depends_on: ids of the parent tasks that must succeed first.
    :ivar on_parent_failure: what a parent that does not succeed does to this task:
        ``"cancel"`` (it is cancelled with
        :class:`~omniq.errors.DependencyFailedError`) or ``"run"`` (it waits until every
        parent ended, however, then runs); see :mod:`omniq.lifecycle`.
    :ivar pass_results: the worker calls it with its parents' results (a list in
        ``depends_on`` order) as the first argument: the callback of a fan-in
        (:meth:`omniq.AsyncOmniQ.chord`).
    :ivar schedule_id: the schedule that enqueued it, or None.
    :ivar lease_owner: the worker holding its lease while ``running``.
    :ivar lease_token: the token that fences completions of the current lease.
    :ivar lease_deadline: when the current lease lapses unless extended by a heartbeat.
    :ivar started_at: when the current or last attempt started.
    :ivar finished_at: when it reached a terminal state.
    :ivar error: the last attempt's error, or None.
    :ivar result_ttl: seconds a finished task (and its result) is kept.
    :ivar dead_ttl: seconds a ``dead`` task is kept.
    :ivar headers: ``str`` to ``str`` metadata carried with the task (middleware put
        trace context here, see :mod:`omniq.middleware`); empty for most tasks, and then
        not encoded at all (``omit_defaults``).
    """

    id: str
    name: str
    queue: str = "default"
    payload: bytes = b""
    priority: int = 0
    state: TaskState = TaskState.PENDING
    created_at: float = 0.0
    eta: float | None = None
    expires_at: float | None = None
    timeout: float | None = None
    max_retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    max_deliveries: int = 5
    attempts: int = 0
    depends_on: tuple[str, ...] = ()
    on_parent_failure: Literal["cancel", "run"] = "cancel"
    pass_results: bool = False
    schedule_id: str | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_deadline: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    result_ttl: float = 86400.0
    dead_ttl: float = 7 * 86400.0
    headers: dict[str, str] = {}

    def is_ready(self, at: float) -> bool:
        """Whether a reserve at time ``at`` may pick this task (backends without a query
        language use this; SQL backends express the same rule in their WHERE clause)."""
        return (
            self.state in READY_STATES
            and (self.eta is None or self.eta <= at)
            and (self.expires_at is None or self.expires_at > at)
        )

    def retention(self) -> float:
        """Seconds a finished task is kept before cleanup deletes it."""
        return self.dead_ttl if self.state is TaskState.DEAD else self.result_ttl

    def backoff(self) -> float:
        """Delay before the next attempt: exponential in attempts, capped."""
        exp = max(self.attempts - 1, 0)
        return min(self.retry_backoff * (2.0**exp), self.retry_backoff_max)


class TaskResult(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The outcome of a task, kept in the result storage.

    :ivar task_id: the task it belongs to.
    :ivar state: ``succeeded``, ``failed``, ``cancelled``, ``expired`` or ``dead``.
    :ivar value: the serialized return value (opaque bytes to a store), or None.
    :ivar error: the error of a task that did not succeed, or None.
    :ivar attempts: attempts the task took.
    :ivar started_at: when the last attempt started.
    :ivar finished_at: when the task finished.
    :ivar worker_id: the worker that ran the last attempt.
    :ivar expires_at: when the result may be deleted; a store answers None from then on.
    """

    task_id: str
    state: TaskState
    value: bytes | None = None  # serializer envelope of the return value
    error: ErrorInfo | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float = 0.0
    worker_id: str | None = None
    expires_at: float | None = None


class EventType(str, enum.Enum):
    """What a :class:`TaskEvent` records (the value is what stores and the CLI show)."""

    ENQUEUED = "enqueued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed (followed by retrying or dead)
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DEAD = "dead"
    LEASE_LOST = "lease_lost"  # a lease lapsed and the task went back to its queue
    RELEASED = "released"  # handed back without counting the attempt (drain, broken pool)
    SCHEDULED = "scheduled"  # a schedule fired and enqueued this task
    REQUEUED = "requeued"  # an operator enqueued a finished task again (detail: by, to)


class TaskEvent(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """What happened to a task. (gc=False, as Task: a bulk enqueue makes one per task and
    keeps them all until stored, and tracked they would set off full collections; an
    event holds strings, numbers and a detail dict, never a reference back to itself.)

    :ivar id: unique event id, time-ordered.
    :ivar task_id: the task it happened to.
    :ivar queue: that task's queue.
    :ivar type: an :class:`EventType`.
    :ivar timestamp: when it happened.
    :ivar worker_id: the worker involved, if any.
    :ivar detail: more about it, e.g. the error of a ``failed`` event, or the task's name
        and state in an ``enqueued`` event.
    """

    id: str
    task_id: str
    queue: str
    type: EventType
    timestamp: float
    worker_id: str | None = None
    detail: dict[str, Any] = {}


class Schedule(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A recurring task: a cron expression or a fixed interval.

    ``template`` holds the task to enqueue at each firing (its id is replaced by a
    deterministic one per firing, so several schedulers enqueue it once).

    :ivar id: the schedule's id (upsert by it).
    :ivar template: the task each firing enqueues.
    :ivar cron: a five-field cron expression, or None.
    :ivar interval: seconds between firings, or None (exactly one of cron and interval).
    :ivar next_run: when it fires next.
    :ivar last_run: when it last fired, or None.
    :ivar paused: a paused schedule does not fire.
    :ivar catch_up: fire every missed time after downtime (bounded), not just the latest.
    :ivar created_at: when it was added.
    :ivar tz: the IANA time zone a ``cron`` expression is read in (UTC when None); see
        :mod:`omniq.cron` for daylight-saving transitions.
    """

    id: str
    template: Task
    cron: str | None = None
    interval: float | None = None
    next_run: float = 0.0
    last_run: float | None = None
    paused: bool = False
    catch_up: bool = False  # fire every missed time after downtime (bounded), not just once
    created_at: float = 0.0
    tz: str | None = None

    def following(self, after: float) -> float:
        """The first firing time strictly after ``after``."""
        if self.interval is not None:
            # Keep the phase of next_run so firings stay on a fixed grid.
            base = self.next_run or after
            if base > after:
                return base
            steps = math.floor((after - base) / self.interval) + 1
            return base + steps * self.interval
        if self.cron is None:
            raise ConfigError(f"schedule {self.id!r} has neither cron nor interval")
        return next_firing(self.cron, after, self.tz)

    def due_firings(self, at: float, limit: int = 100) -> tuple[list[float], float]:
        """Firing times due at ``at`` and the next_run to store after firing them.

        Without ``catch_up`` only the latest missed firing runs: a worker that was down
        for a day does not replay a day of a minutely schedule.
        """
        if self.paused or self.next_run > at:
            return [], self.next_run
        times: list[float] = [self.next_run]
        nxt = self.following(self.next_run)
        while nxt <= at and len(times) < limit:
            times.append(nxt)
            nxt = self.following(nxt)
        if nxt <= at:  # more than limit missed: skip ahead
            nxt = self.following(at)
        if not self.catch_up:
            times = times[-1:]
        return times, nxt

    def firing_task_id(self, fire_time: float) -> str:
        """Deterministic id of the task enqueued for one firing (idempotent enqueue)."""
        return f"{self.id}:{int(fire_time * 1000)}"


def validate_cron(expr: str) -> str:
    """A standard 5-field cron expression. croniter would also take a 6th (seconds) and
    7th (year) field; they are refused so that an expression means what cron says."""
    from croniter import croniter

    fields = len(expr.split()) if isinstance(expr, str) else 0
    if fields != 5 or not croniter.is_valid(expr):
        found = f" (it has {fields} fields)" if fields not in (0, 5) else ""
        raise ConfigError(
            f"invalid cron expression {expr!r}{found}: expected 5 fields 'minute hour day month "
            f"weekday', e.g. '*/5 * * * *'"
        )
    return expr


class WorkerInfo(msgspec.Struct, omit_defaults=True, kw_only=True, frozen=True):
    """A live worker as it registers itself in the task queue's store, so operators can
    list workers and probes can tell whether a queue is served (``omniq workers``,
    ``omniq health``).

    :ivar id: the worker's id (what it writes as ``lease_owner`` and ``worker_id``).
    :ivar host: the host name it runs on.
    :ivar pid: its process id on that host.
    :ivar pool: the execution pool (``async``, ``thread``, ``process``, ...).
    :ivar concurrency: tasks it runs at once.
    :ivar queues: the queues it serves.
    :ivar started_at: when it started.
    :ivar heartbeat_at: when it last registered (its own clock).
    :ivar in_flight: tasks it held at that moment.
    :ivar version: the omniq-core version it runs.
    :ivar expires_at: set by the store (its clock): when the worker stops being listed
        unless it registers again.
    """

    id: str
    host: str = ""
    pid: int = 0
    pool: str = ""
    concurrency: int = 0
    queues: tuple[str, ...] = ()
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    in_flight: int = 0
    version: str = ""
    expires_at: float = 0.0


encoder = msgspec.msgpack.Encoder()
task_decoder = msgspec.msgpack.Decoder(Task)
result_decoder = msgspec.msgpack.Decoder(TaskResult)
event_decoder = msgspec.msgpack.Decoder(TaskEvent)
schedule_decoder = msgspec.msgpack.Decoder(Schedule)
worker_decoder = msgspec.msgpack.Decoder(WorkerInfo)
