"""The worker's runtime loop: one loop, any execution pool.

The loop reserves tasks in batches up to its free capacity, hands each to the pool,
heartbeats the leases it holds, and writes results, completions and events in batches
from one writer coroutine (whatever finishes while a write is in flight goes into the
next batch, so batching costs no latency; an event no finish follows, such as a long
task's ``started``, waits at most ``EVENT_WINDOW``). A maintenance coroutine fires due schedules,
returns lapsed leases and enforces TTLs.

Order of writes per task: the fenced state change first, then the attempt's result and
events, only when the change was accepted (in one step where the stores share a server):
an attempt whose lease was lost leaves nothing visible. A crash in between leaves a task
that reads as finished without its result (docs/architecture.md,
"Finishing a task: fencing results and events").
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..config import mask_url
from ..context import TaskContext, attempt_started, body_started, body_starting, set_current
from ..errors import ConfigError, SerializationError, UnknownTaskError
from ..events import build_event, event_of, write_events
from ..groups import PARENT_RESULT_WAIT
from ..interfaces import BasePool, Capability, write_accepted
from ..limits import Limits
from ..models import (
    ACTIVE_STATES,
    ErrorInfo,
    EventType,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    now,
)
from ..registry import registry
from ..remote_errors import error_info
from ..retries import DEFAULT_POLICY, RetryDecision, asks_retry
from ..retries import decide as decide_retry
from ..schedules import fire_due_schedules
from ..serialization import binding
from .outcomes import failure_outcome, log_outcome, log_started, log_stopped
from .pools import PoolBrokenError
from .presence import Presence

if TYPE_CHECKING:
    from ..app import AsyncOmniQ

__all__ = ["Worker"]

log = logging.getLogger("omniq.worker")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes in MiB (Linux /proc; 0 where unavailable)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total / (1 << 20)


#: Default prefetch, per unit of concurrency (Celery's worker_prefetch_multiplier is 4 too).
#: Short tasks need it: each reserve and each write is a round trip with a fixed cost, so
#: bigger batches are cheaper per task (PostgreSQL, 10,000 no-ops: ~6,500/s with 1, ~9,000/s
#: with 4). Held tasks are heartbeated; long tasks or many workers on a short queue want less.
PREFETCH_MULTIPLIER = 4

#: Longest an event waits for the writer (seconds). A finish wakes the writer at once and
#: carries the events emitted before it; this window only matters for events no finish
#: follows soon (``started`` of a long task), so short tasks add no round trip.
EVENT_WINDOW = 0.05

#: First wait for work (seconds) after a reserve that drained the queues, doubled after
#: each empty reserve up to ``poll_interval``. Where the wait wakes on new work
#: (``reserve_drains``) the reserve it ends in only catches what no wake-up announces (a
#: lost notification; on PostgreSQL, a delayed task or a retry falling due, which its
#: wait also times by their eta): a 5 ms first wait sent an empty reserve out just before
#: the next task when tasks came ~8 ms apart, and that task's wake-up then waited for it
#: and a second reserve. 20 ms is PostgreSQL's ``DRAINED_WAIT``, the longest wait that
#: skips its ``next_ready()`` read (how late a delayed task may start after a drain).
WOKEN_IDLE_WAIT = 0.02
#: The same for a backend that polls: its next reserve is the check.
POLLED_IDLE_WAIT = 0.005

#: How often a worker runs the cleanup (retention of tasks, results and events; TTLs).
CLEANUP_EVERY = 60.0
#: The longest a starting worker waits for its first tasks' cleanup before it reserves
#: (see ``Worker._after_sweep``): NATS reads every task record, ~0.2-0.6 s per 10,000
#: on the development VM, so a store of millions is not held up for minutes.
START_SWEEP_WAIT = 5.0

#: How long a stopping worker waits for the pool to stop the bodies it cancelled (a
#: process pool kills the child) before it decides which tasks it may release.
BODY_STOP_WAIT = 1.0


def first_cleanup_delay(burst: bool) -> float:
    """Seconds from a worker's start to its first cleanup of results and events: none
    for a burst worker (it may be gone within the minute), else a random point of its
    first :data:`CLEANUP_EVERY`. Workers started together (a deploy) then do not all
    scan at once, and a worker's first tasks do not wait behind its scan: on NATS,
    reading 2,000 results and ~8,000 events took ~0.4 s, during which an idle worker's
    latency was about doubled. The tasks' cleanup still runs as a worker starts, before
    its first reserve (``Worker._after_sweep``): it repairs what a crashed worker left
    (dependents it had not settled)."""
    return 0.0 if burst else random.uniform(0.0, CLEANUP_EVERY)


#: The state each kind of finished attempt changes its task to, by which its change is
#: recognised after its answer was lost (a requeue is written as a retry or a dead
#: letter: :meth:`Worker._requeue`).
_CHANGED_TO = {
    "success": TaskState.SUCCEEDED,
    "retry": TaskState.RETRYING,
    "dead": TaskState.DEAD,
}


@dataclass
class _Done:
    """A finished attempt waiting for the writer."""

    task: Task
    kind: str  # "success" | "retry" | "dead"
    result: TaskResult | None = None
    error: ErrorInfo | None = None
    eta: float = 0.0
    #: This attempt's outcome events, recorded only if its state change is accepted.
    events: list[TaskEvent] = field(default_factory=list)
    #: Whether the state change was accepted, once known (a write retried after a failure
    #: must not repeat it: the token is spent, a repeat would be refused).
    accepted: bool | None = None


@dataclass
class _Report:
    """How a failed attempt is reported once the store has answered its retry or dead
    letter (:meth:`Worker._failure_reported`), as a success is once its completion is
    answered: nothing of it is logged, counted or told the middleware's
    ``after_failure_completion`` before, so a refused one is never said to have failed."""

    outcome: str  # its outcome line's, if accepted
    started: float | None
    finished: float  # (the line's duration ends when the attempt did, not at the answer)
    error: BaseException | ErrorInfo
    fields: dict[str, Any]
    count: str | None  # the worker's count of it, if accepted
    told: BaseException | None  # what the middleware's on_failure was told (None: nothing)
    will_retry: bool


@dataclass
class _Failed(_Done):
    """A failed attempt (a retry or a dead letter) waiting for the writer. Its own class,
    so a success's :class:`_Done` is made as before, with no field more."""

    report: _Report = field(kw_only=True)


class _Unsettled(Exception):
    """A write of a batch that failed after its state changes and its writes were done,
    but for ``left`` (refused successes not yet told apart from a lost lease) and
    ``events`` (theirs, of the worker's own, dropped with the refusal): the writer tries
    only those again, so nothing else of the batch is written twice."""

    def __init__(self, left: list[_Done], events: list[TaskEvent]) -> None:
        super().__init__(f"{len(left)} refused completions not yet checked")
        self.left, self.events = left, events


def _one_attempt_per_task(
    outbox: list[_Done],
) -> tuple[list[_Done], list[_Done]]:
    """The outbox split into a batch with one attempt per task (the earliest) and the
    rest, in order, for the next write. Two attempts of one task wait together when the
    writer was held up (a store away) while the first one's lease lapsed and this worker
    ran the task again; in one ``finish_many`` the stale attempt's refusal would take
    the accepted one's result and events with it (they are told apart by task id only),
    leaving the task finished without either (where the store tries the first item only
    (SQLite), the accepted one is not tried and the task runs once more)."""
    if len({d.task.id for d in outbox}) == len(outbox):  # (always, but after a hold-up)
        return outbox, []
    seen: set[str] = set()
    batch: list[_Done] = []
    later: list[_Done] = []
    for d in outbox:
        if d.task.id in seen:
            later.append(d)
        else:
            seen.add(d.task.id)
            batch.append(d)
    return batch, later


def _not_of(events: list[TaskEvent], later: list[_Done]) -> tuple[list[TaskEvent], list[TaskEvent]]:
    """``events`` split into those to write now and those of the tasks of ``later``,
    kept for the write that carries those attempts (a refusal in this one would drop
    them)."""
    if not later:
        return events, []
    ids = {d.task.id for d in later}
    return [e for e in events if e.task_id not in ids], [e for e in events if e.task_id in ids]


@dataclass
class _Running:
    task: Task
    handle: asyncio.Task[None] | None = None
    lost: bool = False  # lease lost or released: nothing more is written for it
    started: bool = False  # handed to the pool (else it waits in the prefetch backlog)
    finished: bool = False  # its outcome waits in the writer's outbox


@dataclass
class WorkerStats:
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return sum(self.counts[k] for k in ("succeeded", "failed", "dead"))


class Worker:
    """Runs tasks of an app's queues until stopped (signal, burst idle, recycling)."""

    def __init__(
        self,
        app: AsyncOmniQ,
        *,
        pool: str | BasePool | None = None,
        concurrency: int | None = None,
        queues: list[str] | tuple[str, ...] | None = None,
        burst: bool | None = None,
        poll_interval: float | None = None,
        grace_period: float | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_mb: float | None = None,
        prefetch: int | None = None,
        worker_id: str | None = None,
        health_file: str | os.PathLike[str] | None = None,
    ) -> None:
        from ..models import validate_name

        wc = app.config.worker
        self.app = app  # for plugins' hooks and to open the stores; the loop uses what follows
        self.config = app.config
        self.task_queue, self.result_storage = app.task_queue, app.result_storage
        self.event_storage = app.event_storage
        self._event_storage = app.event_storage if app.config.events else None
        self.serializer, self.tasks = app.serializer, app.tasks
        self.concurrency = concurrency if concurrency is not None else wc.concurrency
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        self.queues = [validate_name("queue name", q) for q in (queues or wc.queues)]
        self.burst = wc.burst if burst is None else burst
        self.poll_interval = poll_interval or wc.poll_interval
        self.grace_period = wc.grace_period if grace_period is None else grace_period
        self.max_tasks = max_tasks_per_child or wc.max_tasks_per_child
        self.max_memory_mb = max_memory_mb or wc.max_memory_mb
        self.reconnect_timeout = wc.reconnect_timeout
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        pool = pool or wc.pool
        if isinstance(pool, BasePool):
            self.pool = pool
        else:
            cls = registry.pool(pool)
            options: dict[str, Any] = {}
            if self.max_tasks and pool == "process":
                options["max_tasks_per_child"] = self.max_tasks
                self.max_tasks = None  # the children recycle; this process need not
            self.pool = cls(self.concurrency, **options)
        self.lease = app.config.lease
        self.heartbeat_interval = app.config.heartbeat_interval
        self.stats = WorkerStats()
        self._mw = app.middleware or None  # None: no per-task middleware work at all
        self.stop_reason: str | None = None
        self._running: dict[str, _Running] = {}  # every task this worker holds a lease on
        self._executing = 0  # of those, the ones still running in the pool
        self._backlog: deque[_Running] = deque()  # reserved, waiting for a free slot
        prefetch = wc.prefetch if prefetch is None else prefetch
        self.prefetch = PREFETCH_MULTIPLIER * self.concurrency if prefetch is None else prefetch
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ConfigError(f"prefetch must be an integer >= 0, got {self.prefetch!r}")
        self._max_held = (self.concurrency + self.prefetch) * 2 + 100
        self._outbox: list[_Done] = []
        self._events: list[TaskEvent] = []
        self._stopping: asyncio.Event | None = None
        #: one wait on _stopping for every wait of the reserve loop (see _reserve_step)
        self._stop_waiter: asyncio.Future[Any] | None = None
        #: the reserve loop's task while it awaits wait_for_work itself (see
        #: _wait_for_work), and whether request_stop cancelled that wait
        self._waiting: asyncio.Task[Any] | None = None
        self._stop_cancelled = False
        self._force = False
        self._wake_writer: asyncio.Event | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._slot_freed: asyncio.Event | None = None
        #: set once the maintenance's first tasks' cleanup is over: the reserve loop
        #: starts then (see _after_sweep)
        self._swept: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox_closed = False
        self._helpers_done = False
        self._presence = Presence(self, health_file)
        self._limits: Limits | None = None
        self._wakes = False  # wait after a short reserve (the queue's reserve_drains)
        self._first_wait = POLLED_IDLE_WAIT  # the idle wait after work (WOKEN_IDLE_WAIT)

    # -- control -----------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    def request_stop(self, reason: str = "signal", force: bool = False) -> None:
        """Stop reserving and drain. A second request (or ``force``) stops at once: the
        running tasks are stopped and released, except those whose bodies the pool cannot
        stop (threads), which are left to their leases (see :meth:`_drain`)."""
        if self._stopping is None:
            self.stop_reason = self.stop_reason or reason
            return
        if self._stopping.is_set():
            force = force or reason == "signal"
        self.stop_reason = self.stop_reason or reason
        self._force = self._force or force
        self._stopping.set()
        if self._waiting is not None and not self._stop_cancelled:
            self._stop_cancelled = True
            self._waiting.cancel()
        log.info("worker %s stopping (%s%s)", self.id, reason, ", at once" if self._force else "")

    def _install_signals(self) -> list[signal.Signals]:
        assert self._loop is not None
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self.request_stop, "signal", False)
            except (NotImplementedError, RuntimeError, ValueError):
                break  # not the main thread: the caller handles signals
            installed.append(sig)
        return installed

    # -- main --------------------------------------------------------------------------

    async def run(self, install_signals: bool = True) -> str:
        """Run until stopped; return the reason. Raises on fatal errors (a store that
        cannot be opened, a pool that cannot start)."""
        self._loop = asyncio.get_running_loop()
        already = self.stop_reason
        self._stopping = asyncio.Event()
        if already:
            self._stopping.set()
        self._wake_writer = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._swept = asyncio.Event()
        await self.app.open()
        # The app's global limits, read once its tasks are registered; None (no limits)
        # keeps reserve on the plain path, which pays nothing for them.
        self._limits = self.app.limits() or None
        # (a burst worker keeps every wake-up: a freed slot is how it sees it is done)
        self._wakes = (
            self.task_queue.reserve_drains
            and not self.burst
            and Capability.BLOCKING_RESERVE in self.task_queue.capabilities
        )
        self._first_wait = WOKEN_IDLE_WAIT if self._wakes else POLLED_IDLE_WAIT
        if self._limits is not None and Capability.LIMITS not in self.task_queue.capabilities:
            raise ConfigError(
                f"the app declares rate or concurrency limits, which "
                f"{type(self.task_queue).__name__} cannot enforce (it does not declare "
                f"Capability.LIMITS); use SQLite, PostgreSQL, Redis or NATS, or remove them"
            )
        self._presence.check()
        await self.pool.start()
        signals = self._install_signals() if install_signals else []
        await self._hook("omniq_worker_started", worker=self)
        await self._presence.beat()
        log_started(self)
        writer = asyncio.create_task(self._writer(), name="omniq-writer")
        helpers = [
            asyncio.create_task(self._heartbeats(), name="omniq-heartbeat"),
            asyncio.create_task(self._maintenance(), name="omniq-maintenance"),
            asyncio.create_task(self._presence.run(), name="omniq-presence"),
        ]
        try:
            await self._reserve_loop()
        except Exception as exc:
            self.stop_reason = f"error: {type(exc).__name__}: {exc}"
            log.exception("worker %s: fatal error, draining", self.id)
            raise
        finally:
            await self._hook(
                "omniq_worker_stopping", worker=self, reason=self.stop_reason or "stopped"
            )
            await self._drain()
            # Some clients swallow a cancellation (nats-py's flush does): the loops also
            # watch this flag, and a helper that still runs is cancelled again.
            self._helpers_done = True
            for _ in range(10):
                for h in helpers:
                    h.cancel()
                _, alive = await asyncio.wait(helpers, timeout=0.5)
                if not alive:
                    break
            self._outbox_closed = True
            self._wake_writer.set()
            await writer
            await self.pool.stop(wait=not self._force)
            await self._presence.leave()
            for sig in signals:
                self._loop.remove_signal_handler(sig)
            log_stopped(self)
        return self.stop_reason or "stopped"

    async def _hook(self, name: str, **kwargs: Any) -> None:
        """Lifecycle hooks: a plugin that fails is logged, never fatal to the worker."""
        for plugin, result in registry.call_hook_each(name, **kwargs):
            try:
                if isinstance(result, BaseException):
                    raise result
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:
                log.exception("worker %s: plugin %r failed in %s", self.id, plugin, name)

    async def _reserve_loop(self) -> None:
        """Reserve and wait, until stopped. A store that fails (a server restarting) is
        retried with backoff; only an outage longer than ``reconnect_timeout`` is fatal."""
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        idle_wait, backoff = POLLED_IDLE_WAIT, 0.1
        outage_since: float | None = None
        try:
            await self._after_sweep()
            while not self._stopping.is_set():
                try:
                    idle_wait = await self._reserve_step(idle_wait)
                except Exception as exc:
                    at = loop.time()
                    outage_since = at if outage_since is None else outage_since
                    if at - outage_since > self.reconnect_timeout:
                        raise
                    log.warning(
                        "worker %s: task queue failed (%s: %s); retrying in %.1f s",
                        self.id,
                        type(exc).__name__,
                        mask_url(str(exc)),
                        backoff,
                    )
                    try:
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    except TimeoutError:
                        pass
                    backoff = min(backoff * 2, 5.0)
                    continue
                if outage_since is not None:
                    log.info("worker %s: task queue is back", self.id)
                outage_since, backoff = None, 0.1
        finally:
            if self._stop_waiter is not None:
                self._stop_waiter.cancel()
                self._stop_waiter = None

    async def _after_sweep(self) -> None:
        """Wait for the maintenance's first tasks' cleanup, which repairs what a
        crashed worker left (dependents it had not settled) and expires what outlived
        its ttl, before the first reserve (or until stopped). Running beside the first
        tasks it held them up: on NATS it reads every task record, and after 10,000
        tasks (``compare.py -n 10000``) the first ~0.6 s of an idle worker's latency
        samples took ~3x the median. A sweep longer than :data:`START_SWEEP_WAIT` (a
        large store) goes on beside the tasks, as any later one does."""
        assert self._stopping is not None and self._swept is not None
        if self._swept.is_set():
            return
        stop = self._stop_waiter
        if stop is None:
            stop = self._stop_waiter = asyncio.ensure_future(self._stopping.wait())
        swept = asyncio.ensure_future(self._swept.wait())
        await asyncio.wait(
            [swept, stop], timeout=START_SWEEP_WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        swept.cancel()

    async def _reserve_step(self, idle_wait: float) -> float:
        """One reserve, or one wait for work or a free slot; returns the next idle wait."""
        assert self._stopping is not None and self._slot_freed is not None
        queue = self.task_queue
        # Reserve up to concurrency + prefetch so one round trip feeds several slots.
        # Finished tasks wait for the writer without holding a slot, so reserving and
        # writing overlap; the cap on held tasks is the backpressure.
        free = min(
            self.concurrency + self.prefetch - self._executing - len(self._backlog),
            self._max_held - len(self._running),
        )
        if self.max_tasks:
            free = min(free, self.max_tasks - self.stats.processed - len(self._running))
        waiter: asyncio.Future[Any]
        held_back: float | None = None  # set when limits deferred ready tasks
        if free > 0:
            if self._limits is None:
                tasks = await queue.reserve(self.queues, self.id, self.lease, limit=free)
            else:
                got = await queue.reserve_limited(
                    self.queues, self.id, self.lease, free, self._limits
                )
                tasks = got.tasks
                if got.deferred:
                    held_back = idle_wait if got.retry_in is None else got.retry_in
            for task in tasks:
                old = self._running.get(task.id)
                if old is not None and not old.finished:  # its lease lapsed while it ran here
                    old.lost = True
                    if old.handle is not None:
                        old.handle.cancel()
                    self._forget(old.task)
                entry = _Running(task)
                self._running[task.id] = entry
                self._backlog.append(entry)
            self._start_backlog()
            # Fewer tasks than asked for drained the queue: a backend that wakes on new
            # work waits for it now, instead of a reserve that finds nothing and would go
            # out before the tasks just started can send their results.
            if tasks:
                if held_back is not None:  # (a limit's back-off keeps the polled pace)
                    return POLLED_IDLE_WAIT
                if len(tasks) >= free or not self._wakes:
                    return self._first_wait
                idle_wait = self._first_wait
            if held_back is not None:
                # Ready work a limit holds back: wait until the rate allows a start (or,
                # for a concurrency limit, back off), not for work, which is there.
                waiter = asyncio.ensure_future(asyncio.sleep(min(held_back, self.poll_interval)))
                idle_wait = min(idle_wait * 2, self.poll_interval)
            elif self.burst and not self._running and await self._queues_empty():
                self.request_stop("burst")
                return idle_wait
            elif self._wakes:  # nothing but the wait: awaited here, no task for it
                await self._wait_for_work(min(idle_wait, self.poll_interval))
                self._slot_freed.clear()
                return min(idle_wait * 2, self.poll_interval)
            else:
                waiter = asyncio.ensure_future(
                    queue.wait_for_work(self.queues, min(idle_wait, self.poll_interval))
                )
                idle_wait = min(idle_wait * 2, self.poll_interval)
        else:
            waiter = asyncio.ensure_future(self._slot_freed.wait())
        # One wait on the stop for all the loop's waits: a new one per wait, cancelled
        # after it, cost loop hops between a wake-up and the reserve it starts.
        stop = self._stop_waiter
        if stop is None:
            stop = self._stop_waiter = asyncio.ensure_future(self._stopping.wait())
        # (a slot freed while the queue is drained brings no work a wake-up would not)
        slot = (
            asyncio.ensure_future(self._slot_freed.wait())
            if free > 0 and (held_back is not None or not self._wakes)
            else None
        )
        pending = [f for f in (waiter, slot) if f is not None]
        await asyncio.wait([*pending, stop], return_when=asyncio.FIRST_COMPLETED)
        left = []
        for f in pending:
            if not f.done():
                f.cancel()
                left.append(f)
            elif not f.cancelled():
                f.exception()  # (a failed wait is not an error: the next step reserves)
        if left:  # only what did not finish needs a hop to take its cancellation
            await asyncio.gather(*left, return_exceptions=True)
        elif free <= 0:
            # A slot freed: two loop steps let the attempts ending with it free theirs
            # too, and one reserve then takes a batch for all (a reserve for the first
            # slot alone, one or two tasks a transaction, cost SQLite ~10 % of its
            # processing rate; these are the hops the cancelled stop wait used to take).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        self._slot_freed.clear()
        return idle_wait

    async def _wait_for_work(self, timeout: float) -> None:
        """The backend's wait, awaited by the reserve loop itself: in a task of its own
        under ``asyncio.wait`` with the stop, the wake-up took two more loop hops to
        reach the reserve. :meth:`request_stop` cancels it instead. A failed wait is no
        error (the next reserve says whether the store is there)."""
        assert self._stopping is not None
        if self._stopping.is_set():  # (a stop during the reserve: nothing would cancel this)
            return
        task = asyncio.current_task()
        assert task is not None
        self._waiting, self._stop_cancelled = task, False
        reached = False
        try:
            await self.task_queue.wait_for_work(self.queues, timeout)
        except asyncio.CancelledError:
            reached = True
            if not self._stop_cancelled or task.uncancel() > 0:
                raise  # (cancelled from outside, not only by the stop)
        except Exception:
            pass
        finally:
            if self._stop_cancelled and not reached:
                task.uncancel()  # the wait took the stop's cancellation itself
            self._waiting, self._stop_cancelled = None, False

    async def _queues_empty(self) -> bool:
        stats = await self.task_queue.stats()
        return not any(
            n
            for q in self.queues
            for state, n in stats.get(q, {}).items()
            if TaskState(state) in ACTIVE_STATES
        )

    # -- executing ---------------------------------------------------------------------

    def _start_backlog(self) -> None:
        while self._backlog and self._executing < self.concurrency:
            if self._stopping is not None and self._stopping.is_set():
                return
            entry = self._backlog.popleft()
            if entry.lost or entry.finished:
                continue
            entry.started = True
            self._executing += 1
            task = entry.task
            if self.config.events:
                detail = {"name": task.name, "attempt": task.attempts}
                self._record(event_of(task, EventType.STARTED, self.id, detail))
            # (the loop's own create_task: asyncio.create_task names the task twice, a
            # default name and then ours, through two more Python-level calls)
            assert self._loop is not None
            entry.handle = self._loop.create_task(
                self._execute(entry), name=f"omniq-task-{task.id}"
            )

    def _emit(self, task: Task, type: EventType, **detail: Any) -> None:
        if self.config.events:
            self._record(build_event(task, type, self.id, **detail))

    def _record(self, event: TaskEvent) -> None:
        """Hold ``event`` for the writer, which writes it within :data:`EVENT_WINDOW`."""
        self._events.append(event)
        if self._flush_timer is None and self._loop is not None and self._wake_writer:
            self._flush_timer = self._loop.call_later(EVENT_WINDOW, self._wake_writer.set)

    def _outcome(self, task: Task, type: EventType, **detail: Any) -> list[TaskEvent]:
        """An outcome event of an attempt, held with its :class:`_Done` until the state
        change is accepted (none when events are off)."""
        return [build_event(task, type, self.id, **detail)] if self.config.events else []

    def _finish(self, done: _Done) -> None:
        entry = self._running.get(done.task.id)
        if entry is not None and not entry.finished and entry.task is done.task:
            entry.finished = True
            self._executing -= 1
            self._start_backlog()
            self._slot_freed_set()
        self._outbox.append(done)
        assert self._wake_writer is not None
        self._wake_writer.set()

    async def _execute(self, entry: _Running) -> None:
        task = entry.task
        try:
            try:
                # (the signature must be for this task: its name, queue and id)
                args, kwargs, func = self.serializer.loads_call(
                    task.payload,
                    local_only=self.task_queue.local_only,
                    origin=f"task {task.id} in {type(self.task_queue).__name__}",
                    bind=binding(task.name, task.queue, task.id) if self.serializer.keys else None,
                )
            except SerializationError as exc:
                if task.error is not None and not task.payload:  # the backend's stand-in
                    self._dead_with(task, task.error, reason="undecodable")
                else:
                    self._fail_for_good(task, exc, reason="undecodable")
                return
            if func is None:
                registered = self.tasks.get(task.name)
                if registered is None:
                    known = ", ".join(sorted(self.tasks)) or "none"
                    self._fail_for_good(
                        task,
                        UnknownTaskError(
                            f"task {task.name!r} is not registered in this worker's app "
                            f"(registered: {known}); import its module with --app or the "
                            f"'imports' config key"
                        ),
                        reason="unknown task",
                    )
                    return
                func = registered.fn
            started = now()
            set_current(
                TaskContext(
                    task.id,
                    task.name,
                    task.queue,
                    task.attempts,
                    started + task.timeout if task.timeout else None,
                    task.created_at,
                    task.headers or None,
                    started,
                )
            )
            mw = self._mw
            try:
                if task.pass_results:  # a fan-in callback: its parents' results come first
                    args = [await self._parent_results(task), *args]
                    body_started()  # (a wait for them is not the body's: nor its timeout's)
                if mw is not None:
                    await mw.before_run(task)
                    if not self.pool.calls_body_start:  # (see omniq.context.at_body_start)
                        body_starting(False)
                value = await self.pool.run(func, args, kwargs, task.timeout)
            except asyncio.CancelledError as exc:
                if mw is not None:  # lease lost or worker stopping: the task runs again
                    await mw.on_failure(task, exc, True)
                if entry.lost:
                    return
                raise
            except PoolBrokenError as exc:
                if mw is not None:
                    await mw.on_failure(task, exc, task.attempts < lifecycle.attempts_allowed(task))
                self._requeue(task, error_info(exc), told=exc if mw is not None else None)
                return
            except Exception as exc:
                started = attempt_started(started)  # (a pool may have moved it on)
                decision = self._retry_decision(task, exc)
                if mw is not None:
                    await mw.on_failure(task, exc, decision.eta is not None)
                self._failed(task, exc, started, decision, told=mw is not None)
                return
            started = attempt_started(started)
            try:
                encoded = self.serializer.dumps(
                    value,
                    local_only=self.result_storage.local_only,
                    what=f"return value of {task.name}",
                )
            except SerializationError as exc:  # a failure of the attempt, told as one
                decision = self._retry_decision(task, exc)
                if mw is not None:
                    await mw.on_failure(task, exc, decision.eta is not None)
                self._failed(task, exc, started, decision, told=mw is not None)
                return
            if mw is not None:  # (then its completion goes to the writer: after_completion)
                await mw.after_success(task, value)
            finished = now()
            # (its outcome is logged and counted when the store accepts it: _succeeded)
            events: list[TaskEvent] = []  # (as _outcome, by event_of)
            if self.config.events:
                detail = {"name": task.name, "duration": round(finished - started, 6)}
                events.append(event_of(task, EventType.SUCCEEDED, self.id, detail))
            self._finish(
                _Done(
                    task,
                    "success",
                    result=TaskResult(
                        task_id=task.id,
                        state=TaskState.SUCCEEDED,
                        value=encoded,
                        attempts=task.attempts,
                        started_at=started,
                        finished_at=finished,
                        worker_id=self.id,
                        expires_at=finished + task.result_ttl,
                    ),
                    events=events,
                )
            )
        except asyncio.CancelledError:
            if not entry.lost:
                self._forget(task)
            raise
        except Exception as exc:  # a bug of ours: never let one task take the worker down
            log.exception("worker %s: internal error while running task %s", self.id, task.id)
            self._requeue(task, error_info(exc))

    async def _parent_results(self, task: Task) -> list[Any]:
        """The outcomes of ``task``'s parents in ``depends_on`` order (values, and the
        exceptions of those that failed: see :meth:`omniq.AsyncOmniQ.chord`), read in one
        batch. A result not stored yet (a result store apart from the queue is written
        just after the completion that released this task) is waited for up to
        ``PARENT_RESULT_WAIT`` s; past that the attempt fails, and retries as configured."""
        return await self.app.gather_results(task.depends_on, PARENT_RESULT_WAIT)

    def _retry_decision(self, task: Task, exc: BaseException) -> RetryDecision:
        """Whether and when ``task`` runs again, by the policy of its registration here
        (the core decides; the backend only stores the eta)."""
        registered = self.tasks.get(task.name)
        policy = registered.options.retry if registered is not None else DEFAULT_POLICY
        return decide_retry(task, exc, now(), policy)

    def _failed(
        self,
        task: Task,
        exc: BaseException,
        started: float,
        decision: RetryDecision | None = None,
        told: bool = False,
    ) -> None:
        """A failed attempt, handed to the writer: retried or ended, as ``decision`` says;
        reported once the store answers (:meth:`_failure_reported`). ``told``: the
        middleware's ``on_failure`` was told ``exc``."""
        info = error_info(exc)
        if decision is None:
            decision = self._retry_decision(task, exc)
        eta = decision.eta
        at = eta - decision.delay if eta is not None else now()
        asked = asks_retry(exc) and eta is not None  # not a failure: no failed event
        events = (
            []
            if asked
            else self._outcome(
                task,
                EventType.FAILED,
                error=f"{info.type}: {info.message}",
                attempt=task.attempts,
                duration=round(at - started, 6),
            )
        )
        if eta is not None:
            report = _Report(
                failure_outcome(exc, True),
                started,
                at,
                exc,
                {"retry_in": round(decision.delay, 6), "reason": decision.reason},
                "retried",
                exc if told else None,
                True,
            )
            events += self._outcome(
                task,
                EventType.RETRYING,
                delay=decision.delay,
                reason=decision.reason,
                attempt=task.attempts,
            )
            self._finish(_Failed(task, "retry", error=info, eta=eta, events=events, report=report))
        else:
            report = _Report(
                failure_outcome(exc, False),
                started,
                at,
                exc,
                {},
                "failed",
                exc if told else None,
                False,
            )
            self._dead(task, info, TaskState.FAILED, report, events=events, reason=decision.reason)

    def _fail_for_good(self, task: Task, exc: BaseException, reason: str) -> None:
        self._dead_with(task, error_info(exc), reason)

    def _dead_with(
        self,
        task: Task,
        info: ErrorInfo,
        reason: str,
        started: float | None = None,
        told: BaseException | None = None,
    ) -> None:
        report = _Report("dead", started, now(), info, {"reason": reason}, "dead", told, False)
        self._dead(task, info, TaskState.DEAD, report, reason=reason)

    def _dead(
        self,
        task: Task,
        info: ErrorInfo,
        state: TaskState,
        report: _Report,
        events: list[TaskEvent] | None = None,
        **detail: Any,
    ) -> None:
        dead = self._outcome(task, EventType.DEAD, error=f"{info.type}: {info.message}", **detail)
        events = [*(events or ()), *dead]
        finished = now()
        self._finish(
            _Failed(
                task,
                "dead",
                report=report,
                error=info,
                result=TaskResult(
                    task_id=task.id,
                    state=state,
                    error=info,
                    attempts=task.attempts,
                    started_at=task.started_at,
                    finished_at=finished,
                    worker_id=self.id,
                    expires_at=finished + task.dead_ttl,
                ),
                events=events,
            )
        )

    def _forget(self, task: Task) -> None:
        """Drop a task this worker no longer holds, freeing its slot. Only the entry of
        this very reservation (same lease token) goes: a retry due at once may already
        have been reserved again by this worker, and that new entry must stay."""
        entry = self._running.get(task.id)
        if entry is None or entry.task.lease_token != task.lease_token:
            self._slot_freed_set()
            return
        del self._running[task.id]
        if not entry.finished:
            entry.finished = True
            if entry.started:
                self._executing -= 1
                self._start_backlog()
        self._slot_freed_set()

    def _slot_freed_set(self) -> None:
        if self._slot_freed is not None:
            self._slot_freed.set()

    # -- writing -----------------------------------------------------------------------

    async def _writer(self) -> None:
        assert self._wake_writer is not None
        backoff, failures = 0.1, 0
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            batch, self._outbox = _one_attempt_per_task(self._outbox)
            events, self._events = _not_of(self._events, self._outbox)
            try:
                await self._write(batch, events)
                backoff, failures = 0.1, 0
                if self._outbox:  # (a later attempt of a task of this batch: next)
                    self._wake_writer.set()
            except Exception as exc:
                if isinstance(exc, _Unsettled):  # the rest of the batch is written
                    batch, events = exc.left, exc.events
                failures += 1
                if self._outbox_closed and failures > 5:
                    log.error(
                        "worker %s: giving up on %d completions after %d tries; their leases "
                        "will lapse and the tasks run again",
                        self.id,
                        len(batch),
                        failures,
                    )
                    # (their successes were told after_success: they end as not accepted;
                    # so do their failures whose change was not answered yet)
                    left = (*batch, *self._outbox)
                    self._succeeded(
                        [d for d in left if d.kind == "success"],
                        accepted=False,
                        reason="it returned, but its completion could not be written",
                    )
                    for d in left:
                        if d.kind != "success" and d.accepted is None:
                            self._failure_reported(d, False, "could not be written")
                    return
                log.exception(
                    "worker %s: writing %d completions failed; retrying in %.1fs",
                    self.id,
                    len(batch),
                    backoff,
                )
                self._outbox[:0] = batch
                self._events[:0] = events
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake_writer.set()
                continue
            if self._outbox_closed and not self._outbox and not self._events:
                return
            if self._events and self._flush_timer is None and self._loop is not None:
                # events recorded while the write ran (a `started`) go out soon too
                self._flush_timer = self._loop.call_later(EVENT_WINDOW, self._wake_writer.set)

    async def _write(self, batch: list[_Done], events: list[TaskEvent]) -> None:
        """One :meth:`~omniq.interfaces.BaseTaskQueue.finish_many` call per batch: the
        successes' completions with every result and event due. The rarer outcomes change
        state one by one before it, fenced by their tokens; only those accepted have their
        result and events written, so an attempt whose lease was lost leaves nothing
        visible (and ``finish_many`` does the same for the successes)."""
        queue = self.task_queue
        outcome: dict[str, bool] = {}
        results: list[TaskResult] = []
        due = list(events)
        for d in batch:
            if d.kind == "success":
                continue
            if d.accepted is None:
                token = d.task.lease_token or ""
                if d.kind == "retry":
                    ok = await queue.retry(d.task.id, token, d.eta, d.error)
                else:
                    ok = await queue.dead_letter(d.task.id, token, d.error)
                if not ok:
                    # (known only once the record is read: a read that fails leaves it
                    # unknown, and the writer's next try asks again)
                    ok = bool(await self._made_before([d]))
                d.accepted = ok
                self._failure_reported(d, ok)
            outcome[d.task.id] = bool(d.accepted)
            if d.accepted:
                if d.result is not None:
                    results.append(d.result)
                due += d.events
        successes = [d for d in batch if d.kind == "success"]
        for d in successes:
            if d.result is not None:
                results.append(d.result)
            due += d.events
        if successes or due or results:
            accepted = await queue.finish_many(
                [
                    (d.task.id, d.task.lease_token or "", TaskState.SUCCEEDED, None)
                    for d in successes
                ],
                results,
                due if self.config.events else [],
                self.result_storage,
                self._event_storage,
            )
            outcome.update(zip((d.task.id for d in successes), accepted, strict=True))
            if all(accepted):
                self._succeeded(successes)
            else:  # (rare: a lost lease, or an answer lost)
                refused = [d for d, ok in zip(successes, accepted, strict=True) if not ok]
                self._succeeded([d for d, ok in zip(successes, accepted, strict=True) if ok])
                try:
                    mine = await self._made_before(refused)
                    if mine:
                        await self._write_after_lost_answer(mine, due)
                        outcome.update((d.task.id, True) for d in mine)
                    self._succeeded(mine)
                    kept = {id(d) for d in mine}
                    self._succeeded([d for d in refused if id(d) not in kept], accepted=False)
                except Exception as exc:
                    # The rest of the batch is written: only these are tried again.
                    left = {id(d) for d in refused}
                    for d in batch:
                        if id(d) not in left:
                            self._forget(d.task)
                    ids = {d.task.id for d in refused}  # (their events went unwritten)
                    raise _Unsettled(refused, [e for e in events if e.task_id in ids]) from exc
        for task_id, ok in outcome.items():
            if not ok:
                log.warning(
                    "worker %s: completion of task %s refused: its lease was lost (it was "
                    "cancelled or its lease lapsed and it was delivered again)",
                    self.id,
                    task_id,
                )
        for d in batch:
            self._forget(d.task)

    def _succeeded(
        self,
        done: list[_Done],
        accepted: bool = True,
        reason: str = "it returned, but its completion was refused",
    ) -> None:
        """Report successes once the store has answered their completions: counted and
        logged ``succeeded`` if accepted, else logged ``lease_lost`` (the lease was lost
        while the body ran: paused or cut off past it; or, ``reason`` says, a stopping
        worker gave up writing it), and told to the middleware (``after_completion``).
        Here rather than when the body returned, so a refused attempt is never reported
        as a success; no wait is added, the answer is the batch's own."""
        mw = self._mw
        completes = mw is not None and mw.completes
        for d in done:
            result = d.result
            assert result is not None  # (a success always has its result)
            if accepted:
                self.stats.counts["succeeded"] += 1
                log_outcome(
                    self.id, d.task, "succeeded", result.started_at, finished=result.finished_at
                )
            else:
                log_outcome(
                    self.id,
                    d.task,
                    "lease_lost",
                    result.started_at,
                    finished=result.finished_at,
                    reason=reason,
                )
            if completes:
                assert mw is not None
                mw.after_completion(d.task, accepted)

    def _failure_reported(self, d: _Done, accepted: bool, refused: str = "was refused") -> None:
        """Report a failed attempt once the store has answered its retry or dead letter,
        as :meth:`_succeeded` reports a success: logged with its outcome and counted if
        accepted, else logged ``lease_lost`` (its lease was lost while it ran: the task
        is another attempt's, or cancelled; or, ``refused`` says, a stopping worker gave
        up writing it), and told to the middleware told ``on_failure``
        (``after_failure_completion``)."""
        assert isinstance(d, _Failed)  # (every retry and dead letter is one)
        r = d.report
        if accepted:
            if r.count is not None:
                self.stats.counts[r.count] += 1
            log_outcome(
                self.id, d.task, r.outcome, r.started, r.error, finished=r.finished, **r.fields
            )
        else:
            what = "retry" if d.kind == "retry" else "dead letter"
            log_outcome(
                self.id,
                d.task,
                "lease_lost",
                r.started,
                r.error,
                finished=r.finished,
                reason=f"it failed, but its {what} {refused}",
            )
        mw = self._mw
        if r.told is not None and mw is not None and mw.fails:
            mw.after_failure_completion(d.task, r.told, r.will_retry, accepted)

    async def _made_before(self, refused: list[_Done]) -> list[_Done]:
        """Of these refused changes, those the store shows as made by this very attempt:
        an earlier try whose answer was lost (``lifecycle.applied``; a record read per
        refusal, which is rare)."""
        mine = []
        for d in refused:
            record = await self.task_queue.get(d.task.id)
            error = d.error or d.task.error
            if lifecycle.applied(record, d.task, _CHANGED_TO[d.kind], error):
                log.warning(
                    "worker %s: task %s was already %s by this attempt: its answer was "
                    "lost, not its lease",
                    self.id,
                    d.task.id,
                    _CHANGED_TO[d.kind].value,
                )
                mine.append(d)
        return mine

    async def _write_after_lost_answer(self, mine: list[_Done], due: list[TaskEvent]) -> None:
        """The results and events (of ``due``, the batch's) of successes made before
        (:meth:`_made_before`) that are not stored yet: a store that writes them with the
        change (one step, stores sharing a server) has them, and so may an earlier try of
        the batch whose write failed after the change; nothing is written twice (events
        are told by their ids)."""
        results = [d.result for d in mine if d.result is not None]
        stored = await self.result_storage.get_many([r.task_id for r in results])
        events: list[TaskEvent] = []
        if self._event_storage is not None:
            ids = {d.task.id for d in mine}
            known: set[str] = set()
            for task_id in ids:
                stored_events = await self._event_storage.query(task_id=task_id, limit=None)
                known.update(e.id for e in stored_events)
            events = [e for e in due if e.task_id in ids and e.id not in known]
        await write_accepted(
            [r for r in results if r.task_id not in stored],
            events,
            self.result_storage,
            self._event_storage,
        )

    def _requeue(self, task: Task, error: ErrorInfo, told: BaseException | None = None) -> None:
        """Infrastructure failure: like a lapsed lease, the delivery counts but no retry is
        used (a retry due at once, with a ``lease_lost`` event); after max deliveries the
        task is dead-lettered instead of looping. Written as the retry or dead letter it
        is, so a change whose answer was lost is recognised as theirs are. ``told``:
        what the middleware's ``on_failure`` was told."""
        if task.attempts >= lifecycle.attempts_allowed(task):
            self._dead_with(task, error, "too many deliveries", task.started_at, told)
            return
        at = now()
        report = _Report("lease_lost", task.started_at, at, error, {}, None, told, True)
        events = self._outcome(task, EventType.LEASE_LOST, error=error.message)
        self._finish(_Failed(task, "retry", error=error, eta=at, events=events, report=report))

    # -- leases and housekeeping -------------------------------------------------------

    async def _heartbeats(self) -> None:
        while not self._helpers_done:
            await asyncio.sleep(self.heartbeat_interval)
            leases = [
                (tid, r.task.lease_token or "") for tid, r in self._running.items() if not r.lost
            ]
            if not leases:
                continue
            try:
                held = set(await self.task_queue.heartbeat(leases, self.lease))
            except Exception:
                log.exception("worker %s: heartbeat failed", self.id)
                continue
            for tid, token in leases:
                entry = self._running.get(tid)
                # A finished task may have been completed (lease dropped) before the
                # writer forgets it: not lost. Nor is a new reservation of the same id.
                if (
                    tid not in held
                    and entry is not None
                    and not entry.lost
                    and not entry.finished
                    and (entry.task.lease_token or "") == token
                ):
                    log_outcome(
                        self.id,
                        entry.task,
                        "lease_lost",
                        entry.task.started_at,
                        reason="cancelled or lapsed; stopping it",
                    )
                    entry.lost = True
                    if entry.handle is not None:
                        entry.handle.cancel()
                    self._forget(entry.task)

    async def _maintenance(self) -> None:
        lease_every = max(min(self.lease / 3, 5.0), 0.05)
        last_lease = 0.0
        next_cleanup = now()
        next_retention = next_cleanup + first_cleanup_delay(self.burst)
        swept = self._swept
        assert swept is not None
        while True:
            t = now()
            try:
                if t >= next_cleanup:  # (first: the reserve loop waits for the first one)
                    next_cleanup = t + CLEANUP_EVERY
                    await self._cleanup()
                swept.set()
                await fire_due_schedules(
                    self.task_queue, self._event_storage, self.serializer, self._mw
                )
                if t - last_lease >= lease_every:
                    last_lease = t
                    await self._recover_leases()
                if t >= next_retention:
                    next_retention = t + CLEANUP_EVERY
                    await self._retention()
            except Exception:
                log.exception("worker %s: maintenance failed", self.id)
            swept.set()  # (also after a failed round)
            self._check_recycle()
            if self._helpers_done:
                # Checked after the step, not before the sleep only: a cancel can be
                # swallowed mid-step (Python 3.11's wait_for, used by redis-py, returns
                # a result that lands with the cancel), and the loop then stops on the
                # flag instead of sleeping until the stop's next round of cancels.
                return
            await asyncio.sleep(min(1.0, lease_every))

    async def _recover_leases(self) -> None:
        events, results = [], []
        for task in await self.task_queue.release_expired_leases():
            if task.state is TaskState.DEAD:
                info = task.error or ErrorInfo(
                    type="WorkerLost", message="lease lapsed too many times"
                )
                log_outcome(self.id, task, "dead", None, info, reason="too many deliveries")
                events.append(
                    build_event(task, EventType.DEAD, self.id, reason="too many deliveries")
                )
                results.append(
                    TaskResult(
                        task_id=task.id,
                        state=TaskState.DEAD,
                        error=info,
                        attempts=task.attempts,
                        finished_at=now(),
                        expires_at=now() + task.dead_ttl,
                    )
                )
            else:
                log_outcome(self.id, task, "lease_lost", None, reason="lease lapsed")
                events.append(
                    build_event(task, EventType.LEASE_LOST, self.id, attempt=task.attempts)
                )
        if results:
            await self.result_storage.set_many(results)
        await write_events(self._event_storage, events)

    async def _cleanup(self) -> None:
        """The task queue's cleanup: TTLs, retention of finished tasks, and dependents
        whose parents all ended (a worker that crashed between the two steps)."""
        expired = await self.task_queue.cleanup()
        if expired:
            at = now()
            await self.result_storage.set_many(
                [
                    TaskResult(
                        task_id=t.id,
                        state=TaskState.EXPIRED,
                        attempts=t.attempts,
                        finished_at=at,
                        error=ErrorInfo(type="Expired", message="not started before its ttl"),
                        expires_at=at + t.result_ttl,
                    )
                    for t in expired
                ]
            )
            await write_events(
                self._event_storage, [build_event(t, EventType.EXPIRED, self.id) for t in expired]
            )

    async def _retention(self) -> None:
        """Results past their ``expires_at`` and events past ``event_ttl`` go."""
        await self.result_storage.cleanup()
        await self.event_storage.cleanup(now() - self.config.event_ttl)

    def _check_recycle(self) -> None:
        if self.max_tasks and self.stats.processed >= self.max_tasks:
            self.request_stop("max-tasks")
        if self.max_memory_mb:
            pids = [os.getpid(), *getattr(self.pool, "child_pids", list)()]
            used = rss_mb(pids)
            if used > self.max_memory_mb:
                log.warning(
                    "worker %s uses %.0f MiB > max_memory_mb=%g; recycling",
                    self.id,
                    used,
                    self.max_memory_mb,
                )
                self.request_stop("max-memory")

    async def _drain(self) -> None:
        """Wait up to the grace period for running tasks, then stop the rest and release
        them; a task whose body the pool could not stop (a thread) is not released but
        left to its lease, since another worker would run it while it still runs here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if self._force else self.grace_period)
        while self._executing and loop.time() < deadline and not self._force:
            assert self._slot_freed is not None
            self._slot_freed.clear()
            try:
                await asyncio.wait_for(self._slot_freed.wait(), min(0.5, deadline - loop.time()))
            except TimeoutError:
                pass
        leftover = [r for r in self._running.values() if not r.lost and not r.finished]
        cancelled = []
        for entry in leftover:
            if entry.handle is not None and not entry.handle.done():
                entry.lost = True
                entry.handle.cancel()
                cancelled.append(entry.handle)
        bodies = 0
        if any(entry.started for entry in leftover):
            stop_by = loop.time() + BODY_STOP_WAIT
            if cancelled:
                await asyncio.wait(cancelled, timeout=BODY_STOP_WAIT)
            while True:  # a killed child takes a moment to go
                # (a coroutine that ignores its cancellation still runs too)
                bodies = self.pool.bodies_running() + sum(not h.done() for h in cancelled)
                if not bodies or loop.time() >= stop_by:
                    break
                await asyncio.sleep(0.02)
        if bodies:
            log.warning(
                "worker %s: %d task bodies still run and cannot be stopped (threads); "
                "their tasks are not released but left to their leases, which lapse "
                "within %g s once this process has exited",
                self.id,
                bodies,
                self.lease,
            )
        for entry in leftover:
            task = entry.task
            if bodies and entry.started:
                self._forget(task)
                continue
            try:
                if await self.task_queue.release(task.id, task.lease_token or ""):
                    self._emit(task, EventType.RELEASED, reason=self.stop_reason or "stopping")
            except Exception:
                log.exception(
                    "worker %s: could not release task %s; its lease will lapse", self.id, task.id
                )
            self._forget(task)
        if self._wake_writer is not None:
            self._wake_writer.set()
