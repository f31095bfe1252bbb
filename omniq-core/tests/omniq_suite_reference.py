"""A minimal in-memory reference implementation of the three stores, and deliberately
broken variants of it: test scaffolding proving that :mod:`omniq.testing` can pass and
that it catches real mistakes. Not a product backend (no persistence, one process).

State lives in module-level namespaces keyed by the URL's path, so every instance built
from the same ref shares it, as instances of a real backend share a database.
Refs: ``suite-memory://NAME`` once the test module registers the plugin, or
``{"url": "omniq_suite_reference:MemoryTaskQueue", "namespace": NAME}`` (what the
subprocess runs of the broken variants use).
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import functools
import os
import pickle
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import msgspec
import pytest

from omniq import BackendSpec, hookimpl, lifecycle
from omniq.errors import ConfigError, TaskNotFoundError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    LeaseRef,
    gather_batches,
)
from omniq.models import (
    READY_STATES,
    TERMINAL_STATES,
    ErrorInfo,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    new_id,
    now,
)
from omniq.options import Option, OptionSchema
from omniq.records import stand_in

BACKEND = "suite-memory"


@dataclass
class Namespace:
    tasks: dict[str, Task] = field(default_factory=dict)  # insertion order = enqueue order
    schedules: dict[str, Schedule] = field(default_factory=dict)
    results: dict[str, TaskResult] = field(default_factory=dict)
    events: list[TaskEvent] = field(default_factory=list)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)


NAMESPACES: dict[str, Namespace] = {}


OPTIONS = OptionSchema(
    BACKEND,
    (Option("namespace", "str", None, "The namespace (else the URL's rest).", optional=True),),
)


def namespace_of(url: str, options: dict[str, Any], store: Any = None) -> Namespace:
    name = OPTIONS.parse(url, options, store)["namespace"] or url.partition("://")[2]
    if not name:
        raise ConfigError(f"{BACKEND}: the URL {url!r} names no namespace: use {BACKEND}://NAME")
    return NAMESPACES.setdefault(name, Namespace())


class MemoryStore:
    local_only: ClassVar[bool] = True
    option_schema: ClassVar[OptionSchema] = OPTIONS

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return cls(namespace_of(url, options, cls))


def copy(task: Task) -> Task:
    return msgspec.structs.replace(task)


class MemoryTaskQueue(MemoryStore, BaseTaskQueue):
    capabilities = frozenset(
        {Capability.DELAYED, Capability.PRIORITY, Capability.SCHEDULES, Capability.DEPENDENCIES}
    )

    def _put(self, task: Task, **changes: Any) -> Task:
        task = msgspec.structs.replace(task, **changes)
        self.ns.tasks[task.id] = task
        return copy(task)

    def _held(self, task_id: str, token: str | None) -> Task | None:
        task = self.ns.tasks.get(task_id)
        if task is None or task.state is not TaskState.RUNNING or task.lease_token != token:
            return None
        return task

    def _end(self, task: Task, state: TaskState, error: ErrorInfo | None, at: float) -> None:
        self._store(lifecycle.finished(task, state, error, at))
        self._settle_dependents(task.id, at)

    def _store(self, task: Task) -> Task:
        self.ns.tasks[task.id] = task
        return copy(task)

    def _settle_dependents(self, parent_id: str, at: float) -> None:
        parent = self.ns.tasks[parent_id]
        states = {t.id: t.state for t in self.ns.tasks.values()}
        for dep in list(self.ns.tasks.values()):
            if dep.state is not TaskState.WAITING or parent_id not in dep.depends_on:
                continue
            changed = lifecycle.settled(dep, parent, states, at)
            if changed is None:
                continue
            self._store(changed)
            if changed.state is TaskState.CANCELLED:
                self._settle_dependents(dep.id, at)

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[list[Task]]:
        tasks, _ = gather_batches(batches)  # one step: all or nothing
        yield await self._store_many(tasks)

    async def _store_many(self, tasks: Sequence[Task]) -> list[Task]:
        return [self._admit(task) for task in tasks]

    def _admit(self, task: Task) -> Task:
        if task.id in self.ns.tasks:
            return copy(self.ns.tasks[task.id])
        at = now()
        parents = []
        for pid in task.depends_on:
            if pid not in self.ns.tasks:
                raise TaskNotFoundError(pid, f" (named in depends_on of task {task.id})")
            parents.append(self.ns.tasks[pid])
        state, error = lifecycle.initial_state(task, {p.id: p.state for p in parents}, at)
        changes: dict[str, Any] = {"created_at": task.created_at or at, "state": state}
        if error is not None:
            changes.update(finished_at=at, error=error)
        return self._put(task, **changes)

    def _ready(self, queues: Sequence[str], at: float) -> list[Task]:
        ready = [t for t in self.ns.tasks.values() if t.queue in queues and t.is_ready(at)]
        return sorted(ready, key=lambda t: -t.priority)  # stable: FIFO within a priority

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        at = now()
        return [
            self._store(lifecycle.leased(t, worker_id, new_id(), lease, at))
            for t in self._ready(queues, at)[:limit]
        ]

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> list[str]:
        held = []
        for task_id, token in leases:
            task = self._held(task_id, token)
            if task is not None:
                self._put(task, lease_deadline=now() + lease)
                held.append(task_id)
        return held

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        answers = []
        for task_id, token, state, error in items:
            task = self._held(task_id, token)
            if task is not None:
                self._end(task, state, error, now())
            answers.append(task is not None)
        return answers

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._store(lifecycle.retried(task, eta, error))
        return True

    async def _release(self, task_id: str, token: str) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._store(lifecycle.released(task))
        return True

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        task = self.ns.tasks.get(task_id)
        if token is not None:
            task = self._held(task_id, token)
        if task is None or task.state in TERMINAL_STATES:
            return False
        self._end(task, TaskState.DEAD, error, now())
        return True

    async def _release_expired_leases(self) -> list[Task]:
        at = now()
        updated = []
        for task in list(self.ns.tasks.values()):
            if task.state is not TaskState.RUNNING or (task.lease_deadline or 0) > at:
                continue
            lapsed = self._store(lifecycle.lapsed(task, at))
            if lapsed.state is TaskState.DEAD:
                self._settle_dependents(task.id, at)
            updated.append(copy(self.ns.tasks[task.id]))
        return updated

    async def _cancel(self, task_id: str) -> bool:
        task = self.ns.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if task.state in TERMINAL_STATES:
            return False
        self._end(task, TaskState.CANCELLED, task.error, now())
        return True

    async def _get(self, task_id: str) -> Task | None:
        task = self.ns.tasks.get(task_id)
        return None if task is None else copy(task)

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        found = [t for t in self.ns.tasks.values() if task_id in t.depends_on]
        return sorted((copy(t) for t in found), key=lambda t: t.id)

    async def _list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        wanted = None if states is None else set(states)
        found = [
            t
            for t in self.ns.tasks.values()
            if (queue is None or t.queue == queue) and (wanted is None or t.state in wanted)
        ]
        return [copy(t) for t in found[:limit]]

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        counts: dict[str, dict[TaskState, int]] = {}
        for t in self.ns.tasks.values():
            by_state = counts.setdefault(t.queue, {})
            by_state[t.state] = by_state.get(t.state, 0) + 1
        return counts

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        doomed = [t.id for t in await self._list(queue, states, len(self.ns.tasks))]
        at = now()
        for task_id in doomed:
            self._settle_purged(task_id, at)
            del self.ns.tasks[task_id]
        return len(doomed)

    def _settle_purged(self, parent_id: str, at: float) -> None:
        """Before a parent that had not succeeded goes: its waiting dependents end as a
        cancelled parent's do, naming the purge (``lifecycle.settled_by_purge``)."""
        parent = self.ns.tasks[parent_id]
        if parent.state is TaskState.SUCCEEDED:
            return
        states = {t.id: t.state for t in self.ns.tasks.values()}
        for dep in list(self.ns.tasks.values()):
            if parent_id not in dep.depends_on:
                continue
            changed = lifecycle.settled_by_purge(dep, parent, states, at)
            if changed is not None:
                self._store(changed)
                if changed.state is TaskState.CANCELLED:
                    self._settle_dependents(dep.id, at)

    async def _cleanup(self) -> builtins.list[Task]:
        at = now()
        expired = []
        for task in list(self.ns.tasks.values()):
            if (task.state in READY_STATES or task.state is TaskState.WAITING) and (
                task.expires_at is not None and task.expires_at <= at
            ):
                self._end(task, TaskState.EXPIRED, task.error, at)
                expired.append(copy(self.ns.tasks[task.id]))
        for task in list(self.ns.tasks.values()):
            if task.state in TERMINAL_STATES and (task.finished_at or at) + task.retention() <= at:
                del self.ns.tasks[task.id]
        return expired

    async def corrupt(self, task_id: str) -> None:
        """The suite's ``corrupt_task`` here: the record reads as garbage from now on, so
        every read gets the stand-in a decoder makes of it (this store keeps objects)."""
        t = self.ns.tasks[task_id]
        self.ns.tasks[task_id] = stand_in(
            task_id,
            "not msgpack",
            "the namespace",
            name=t.name,
            queue=t.queue,
            state=t.state.value,
            attempts=t.attempts,
            lease_owner=t.lease_owner,
            lease_token=t.lease_token,
            lease_deadline=t.lease_deadline,
        )

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        self.ns.schedules[schedule.id] = schedule
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.ns.schedules.get(schedule_id)

    async def _list_schedules(self) -> builtins.list[Schedule]:
        return [self.ns.schedules[k] for k in sorted(self.ns.schedules)]

    async def _delete_schedule(self, schedule_id: str) -> bool:
        return self.ns.schedules.pop(schedule_id, None) is not None

    async def _set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None
    ) -> bool:
        schedule = self.ns.schedules.get(schedule_id)
        if schedule is None:
            return False
        changes: dict[str, Any] = {"paused": paused}
        if next_run is not None:
            changes["next_run"] = next_run
        self.ns.schedules[schedule_id] = msgspec.structs.replace(schedule, **changes)
        return True

    async def _claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        won: builtins.list[tuple[Schedule, builtins.list[float]]] = []
        for schedule in await self.list_schedules():
            if len(won) == limit:
                break
            times, nxt = schedule.due_firings(at)
            if times:
                self.ns.schedules[schedule.id] = msgspec.structs.replace(
                    schedule, next_run=nxt, last_run=times[-1]
                )
                won.append((schedule, times))
        return won

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        stored = msgspec.structs.replace(info, expires_at=now() + ttl)
        self.ns.workers[info.id] = stored
        return stored

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        at = now()
        return [w for k, w in sorted(self.ns.workers.items()) if w.expires_at > at]

    async def _unregister_worker(self, worker_id: str) -> bool:
        return self.ns.workers.pop(worker_id, None) is not None


class MemoryResultStorage(MemoryStore, BaseResultStorage):
    def _live(self, result: TaskResult | None) -> TaskResult | None:
        return (
            None
            if result is None or (result.expires_at is not None and result.expires_at <= now())
            else result
        )

    async def _set_many(self, results: Sequence[TaskResult]) -> None:
        for result in results:
            self.ns.results[result.task_id] = result

    async def _get_many(self, task_ids: Sequence[str]) -> dict[str, TaskResult]:
        found = {tid: self._live(self.ns.results.get(tid)) for tid in task_ids}
        return {tid: r for tid, r in found.items() if r is not None}

    async def _delete(self, task_id: str) -> bool:
        return self.ns.results.pop(task_id, None) is not None

    async def _cleanup(self) -> int:
        doomed = [k for k, r in self.ns.results.items() if self._live(r) is None]
        for k in doomed:
            del self.ns.results[k]
        return len(doomed)


class MemoryEventStorage(MemoryStore, BaseEventStorage):
    async def _append_many(self, events: Sequence[TaskEvent]) -> None:
        self.ns.events.extend(events)

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
        wanted = None if types is None else {str(getattr(t, "value", t)) for t in types}
        found = [
            e
            for e in self.ns.events
            if (task_id is None or e.task_id == task_id)
            and (queue is None or e.queue == queue)
            and (wanted is None or e.type.value in wanted)
            and (since is None or e.timestamp >= since)
            and (until is None or e.timestamp < until)
        ]
        found.sort(key=lambda e: e.timestamp, reverse=order == "desc")
        return found if limit is None else found[:limit]

    async def _cleanup(self, older_than: float) -> int:
        before = len(self.ns.events)
        self.ns.events[:] = [e for e in self.ns.events if e.timestamp >= older_than]
        return before - len(self.ns.events)


class FileTaskQueue(MemoryTaskQueue):
    """The same queue with its namespace in a pickle file, locked for each call, so
    several processes can share it (``CROSS_PROCESS``). Ref:
    ``{"url": "omniq_suite_reference:FileTaskQueue", "path": FILE}``."""

    capabilities = MemoryTaskQueue.capabilities | {Capability.CROSS_PROCESS}
    option_schema = OptionSchema(
        "FileTaskQueue",
        (Option("path", "str", None, "The pickle file holding the namespace.", optional=True),),
    )

    def __init__(self, path: str) -> None:
        super().__init__(Namespace())
        self.path = path
        self.depth = 0  # a hook may call another (purge calls list): lock once

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        path = cls.option_schema.parse(url, options, cls)["path"]
        if not path:
            raise ConfigError("FileTaskQueue: needs option 'path'")
        return cls(path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if os.path.exists(self.path):
                    with open(self.path, "rb") as f:
                        self.ns = pickle.load(f)
                yield
                with open(self.path + ".tmp", "wb") as f:
                    pickle.dump(self.ns, f)
                os.replace(self.path + ".tmp", self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _under_lock(name: str) -> None:
    method = getattr(MemoryTaskQueue, name)

    @functools.wraps(method)
    async def wrapper(self: FileTaskQueue, *args: Any, **kwargs: Any) -> Any:
        if self.depth:
            return await method(self, *args, **kwargs)
        with self.locked():
            self.depth += 1
            try:
                return await method(self, *args, **kwargs)  # never suspends: the lock is short
            finally:
                self.depth -= 1

    setattr(FileTaskQueue, name, wrapper)


# (_enqueue, an async generator, stores through _store_many)
_LOCKED = {"_store_many", "corrupt", "register_worker", "list_workers", "unregister_worker"}
for _name in sorted(BaseTaskQueue.__abstractmethods__ - {"from_url", "_enqueue"} | _LOCKED):
    _under_lock(_name)


async def corrupt_task(contract: Any, store: MemoryTaskQueue, task_id: str) -> None:
    """The ``corrupt_task`` hook of a test class on these stores."""
    await store.corrupt(task_id)


async def corrupt_result(contract: Any, store: MemoryResultStorage, task_id: str) -> None:
    """Nothing to corrupt: these stores keep TaskResult objects, which no read decodes."""
    pytest.skip("the reference stores keep TaskResult objects, not bytes: nothing to corrupt")


async def corrupt_event(contract: Any, store: MemoryEventStorage, event: TaskEvent) -> None:
    """Nothing to corrupt: these stores keep TaskEvent objects, which no read decodes."""
    pytest.skip("the reference stores keep TaskEvent objects, not bytes: nothing to corrupt")


async def corrupt_schedule(contract: Any, store: MemoryTaskQueue, schedule_id: str) -> None:
    """Nothing to corrupt: these stores keep Schedule objects, which no read decodes."""
    pytest.skip("the reference stores keep Schedule objects, not bytes: nothing to corrupt")


# -- deliberately broken variants (each breaks one documented rule) ----------------------------


class ReserveIgnoresPriority(MemoryTaskQueue):
    """Breaks: "highest priority first" (while still declaring PRIORITY)."""

    def _ready(self, queues: Sequence[str], at: float) -> list[Task]:
        return [t for t in self.ns.tasks.values() if t.queue in queues and t.is_ready(at)]


class CompleteIgnoresToken(MemoryTaskQueue):
    """Breaks: completions fenced by the lease token."""

    async def _finish(
        self,
        items: Sequence[Completion],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        answers = []
        for task_id, _, state, error in items:
            task = self.ns.tasks.get(task_id)
            held = task is not None and task.state is TaskState.RUNNING
            if held:
                self._end(task, state, error, now())
            answers.append(held)
        return answers


class CompleteAcceptsAnyEnd(MemoryTaskQueue):
    """Breaks: complete() takes succeeded or cancelled only (this one ends a task in any
    state it is given, as PostgreSQL's once did)."""

    async def complete(  # a public override: it skips the base's check
        self, task_id: str, token: str, state: TaskState, error: ErrorInfo | None = None
    ) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._end(task, TaskState(state), error, now())
        return True

    async def complete_many(
        self, items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]]
    ) -> list[bool]:
        return [await self.complete(*item) for item in items]


class FinishWritesBeforeFencing(MemoryTaskQueue):
    """Breaks: a fenced-out attempt leaves nothing visible (this finish_many writes the
    results and events whatever the completions' answers, as every store once did)."""

    async def finish_many(
        self,
        items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]],
        results: Sequence[TaskResult],
        events: Sequence[TaskEvent],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None,
    ) -> list[bool]:
        for task_id, _, state, _ in items:  # (a public override: it checks, as the base does)
            lifecycle.check_completable(state, task_id)
        await result_storage.set_many(results)
        accepted = await self.complete_many(items)
        if event_storage is not None:
            await event_storage.append_many(events)
        return accepted


class LapseIgnoresRetries(MemoryTaskQueue):
    """Breaks: the attempts allowed are max(max_deliveries, max_retries + 1) (this one
    dead-letters a lapsed task after max_deliveries, whatever its retries)."""

    async def _release_expired_leases(self) -> list[Task]:
        at = now()
        updated = []
        for task in list(self.ns.tasks.values()):
            if task.state is not TaskState.RUNNING or (task.lease_deadline or 0) > at:
                continue
            if task.attempts >= task.max_deliveries:
                self._end(task, TaskState.DEAD, lifecycle.lapse_error(task), at)
            else:
                self._store(lifecycle.lapsed(task, at))
            updated.append(copy(self.ns.tasks[task.id]))
        return updated


class DependentsOnlyWaiting(MemoryTaskQueue):
    """Breaks: dependents of a parent that ended (it forgets the edges once settled)."""

    async def _dependents(self, task_id: str) -> builtins.list[Task]:
        found = await super()._dependents(task_id)
        return [t for t in found if t.state is TaskState.WAITING]


class ReserveNotAtomic(MemoryTaskQueue):
    """Breaks: atomic reserve (it yields to the loop between choosing and leasing)."""

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> list[Task]:
        chosen = self._ready(queues, now())[:limit]
        await asyncio.sleep(0)
        at = now()
        return [
            self._put(
                t,
                state=TaskState.RUNNING,
                attempts=t.attempts + 1,
                lease_token=new_id(),
                lease_owner=worker_id,
                lease_deadline=at + lease,
                started_at=at,
            )
            for t in chosen
        ]


class ResultsIgnoreExpiry(MemoryResultStorage):
    """Breaks: an expired result is invisible before the cleanup sweep."""

    def _live(self, result: TaskResult | None) -> TaskResult | None:
        return result


class EventsUntilInclusive(MemoryEventStorage):
    """Breaks: ``until`` is exclusive."""

    async def _query(self, **filters: Any) -> list[TaskEvent]:
        until = filters.pop("until", None)
        found = await super()._query(**filters, until=None)
        return found if until is None else [e for e in found if e.timestamp <= until]


# -- plugin registration ---------------------------------------------------------------------


class Plugin:
    """Registers ``suite-memory://`` (through ``omniq.register_plugin`` in the test module)."""

    @hookimpl
    def omniq_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(
            BackendSpec(
                name=BACKEND,
                schemes=(BACKEND,),
                task_queue=f"{__name__}:MemoryTaskQueue",
                result_storage=f"{__name__}:MemoryResultStorage",
                event_storage=f"{__name__}:MemoryEventStorage",
                description="conformance-suite scaffolding: in-memory, one process",
            )
        )
