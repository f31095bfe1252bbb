"""The task queue: tasks in a dict, scanned on each call (simple, not fast).

Each ``_`` method is a hook of ``omniq.interfaces.BaseTaskQueue`` and follows its
docstring; the base's public methods check the arguments and call them, and the
conformance suite checks the whole. Only the capabilities declared in ``capabilities`` are
promised: this store has no ``DEPENDENCIES`` (it refuses ``depends_on``) and no
``CROSS_PROCESS`` (its data lives in one process).

The result and event stores of the same ``example://NAME`` live in the same namespace, so
``_shares_home`` says True for them and ``_enqueue``/``_finish`` write their records in the
same step as the tasks (here: without an ``await`` in between).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar

import msgspec

from omniq import lifecycle
from omniq.errors import CapabilityError, TaskNotFoundError
from omniq.interfaces import (
    BaseEventStorage,
    BaseResultStorage,
    BaseStore,
    BaseTaskQueue,
    Batch,
    Capability,
    Completion,
    LeaseRef,
    as_stored,
)
from omniq.models import (
    TERMINAL_STATES,
    ErrorInfo,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskState,
    WorkerInfo,
    now,
)

from .namespace import NamespaceStore

__all__ = ["ExampleTaskQueue"]


class ExampleTaskQueue(NamespaceStore, BaseTaskQueue):
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.DELAYED,
            Capability.PRIORITY,
            Capability.SCHEDULES,
            Capability.BLOCKING_RESERVE,
        }
    )
    #: The data never leaves this process, so unsigned dill payloads are acceptable.
    local_only: ClassVar[bool] = True

    # -- helpers --------------------------------------------------------------------------

    def _put(self, task: Task, **changes: Any) -> Task:
        """Store a changed copy (tasks are treated as immutable values)."""
        updated = msgspec.structs.replace(task, **changes)
        self.ns.tasks[task.id] = updated
        return updated

    def _keep(self, task: Task) -> Task:
        """Store ``task`` as changed by a rule of :mod:`omniq.lifecycle`."""
        self.ns.tasks[task.id] = task
        return task

    def _held(self, task_id: str, token: str | None) -> Task | None:
        """The task if ``token`` still holds its lease (the fence of every completion)."""
        task = self.ns.tasks.get(task_id)
        if task is None or task.state is not TaskState.RUNNING or task.lease_token != token:
            return None
        return task

    def _shares_home(self, store: BaseStore) -> bool:
        """The sibling stores of the same namespace: written in the tasks' step."""
        return isinstance(store, NamespaceStore) and store.name == self.name

    # -- enqueue and delivery -----------------------------------------------------------

    async def _enqueue(
        self, batches: Iterable[Batch], event_storage: BaseEventStorage | None
    ) -> AsyncIterator[builtins.list[Task]]:
        for tasks, events in batches:  # each batch in one step (no await inside)
            stored = [self._admit(task) for task in tasks]
            if event_storage is not None and events:  # a sibling: same namespace
                self.ns.events.extend(as_stored(e, t) for e, t in zip(events, stored, strict=True))
            yield stored

    def _admit(self, task: Task) -> Task:
        ns = self.ns
        if task.id in ns.tasks:
            return ns.tasks[task.id]  # idempotent by id
        if task.depends_on:
            raise CapabilityError(
                "the example backend does not support depends_on (no DEPENDENCIES)"
            )
        at = now()
        state = lifecycle.ready_state(task, at)
        stored = self._put(task, state=state, created_at=task.created_at or at)
        ns.order[task.id] = next(ns.counter)
        ns.wake_workers()
        return stored

    async def _reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> builtins.list[Task]:
        ns, at = self.ns, now()
        ready = sorted(
            (t for t in ns.tasks.values() if t.queue in queues and t.is_ready(at)),
            key=lambda t: (-t.priority, ns.order[t.id]),
        )
        # No await from reading to writing: no other coroutine can reserve these meanwhile.
        return [
            self._keep(lifecycle.leased(t, worker_id, uuid.uuid4().hex, lease, at))
            for t in ready[:limit]
        ]

    async def _wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ns.new_work.wait(), timeout)

    async def _heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
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
    ) -> builtins.list[bool]:
        accepted = []
        for task_id, token, state, error in items:
            task = self._held(task_id, token)  # a task listed twice: not held the second time
            if task is not None:
                self._keep(lifecycle.finished(task, state, error, now()))
            accepted.append(task is not None)
        # results and events are given only for sibling stores: write them in this step,
        # except those of a refused completion (a fenced-out attempt leaves no trace)
        refused = {item[0] for item, ok in zip(items, accepted, strict=True) if not ok}
        self.ns.results.update((r.task_id, r) for r in results if r.task_id not in refused)
        self.ns.events.extend(e for e in events if e.task_id not in refused)
        return accepted

    async def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._keep(lifecycle.retried(task, eta, error))
        return True

    async def _release(self, task_id: str, token: str) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._keep(lifecycle.released(task))
        return True

    async def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        task = self.ns.tasks.get(task_id) if token is None else self._held(task_id, token)
        if task is None or task.state in TERMINAL_STATES:
            return False
        self._keep(lifecycle.finished(task, TaskState.DEAD, error, now()))
        return True

    async def _release_expired_leases(self) -> builtins.list[Task]:
        at, out = now(), []
        for task in builtins.list(self.ns.tasks.values()):
            if task.state is not TaskState.RUNNING or (task.lease_deadline or 0) >= at:
                continue
            out.append(self._keep(lifecycle.lapsed(task, at)))  # pending, or dead after too many
        return out

    # -- administration -----------------------------------------------------------------

    async def _cancel(self, task_id: str) -> bool:
        task = self.ns.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if task.state in TERMINAL_STATES:
            return False
        self._keep(lifecycle.finished(task, TaskState.CANCELLED, None, now()))
        return True

    async def _get(self, task_id: str) -> Task | None:
        return self.ns.tasks.get(task_id)

    def _select(self, queue: str | None, states: Iterable[TaskState] | None) -> builtins.list[Task]:
        wanted = set(states) if states is not None else set(TaskState)
        found = [
            t
            for t in self.ns.tasks.values()
            if (queue is None or t.queue == queue) and t.state in wanted
        ]
        return sorted(found, key=lambda t: self.ns.order[t.id])

    async def _list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        return self._select(queue, states)[:limit]

    async def _stats(self) -> dict[str, dict[TaskState, int]]:
        out: dict[str, dict[TaskState, int]] = {}
        for task in self.ns.tasks.values():
            by_state = out.setdefault(task.queue, {})
            by_state[task.state] = by_state.get(task.state, 0) + 1
        return out

    async def _purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        doomed = self._select(queue, states)
        for task in doomed:
            del self.ns.tasks[task.id], self.ns.order[task.id]
        return len(doomed)

    async def _cleanup(self) -> builtins.list[Task]:
        at, expired = now(), []
        for task in builtins.list(self.ns.tasks.values()):
            if task.state is TaskState.RUNNING or task.expires_at is None or task.expires_at > at:
                pass
            elif task.state not in TERMINAL_STATES:
                expired.append(self._put(task, state=TaskState.EXPIRED, finished_at=at))
                continue
            if task.state in TERMINAL_STATES and (task.finished_at or 0) + task.retention() <= at:
                del self.ns.tasks[task.id], self.ns.order[task.id]
        return expired

    # -- schedules ----------------------------------------------------------------------

    async def _add_schedule(self, schedule: Schedule) -> Schedule:
        self.ns.schedules[schedule.id] = schedule
        return schedule

    async def _get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.ns.schedules.get(schedule_id)

    async def _list_schedules(self) -> builtins.list[Schedule]:
        return sorted(self.ns.schedules.values(), key=lambda s: s.id)

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
        due = sorted(
            (s for s in self.ns.schedules.values() if not s.paused and s.next_run <= at),
            key=lambda s: (s.next_run, s.id),
        )
        won = []
        for schedule in due[:limit]:
            times, nxt = schedule.due_firings(at)
            if times:
                self.ns.schedules[schedule.id] = msgspec.structs.replace(
                    schedule, next_run=nxt, last_run=times[-1]
                )
                won.append((schedule, times))
        return won

    # -- live workers --------------------------------------------------------------------

    async def _register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        stored = msgspec.structs.replace(info, expires_at=now() + ttl)
        self.ns.workers[info.id] = stored
        return stored

    async def _list_workers(self) -> builtins.list[WorkerInfo]:
        at = now()
        return [w for _, w in sorted(self.ns.workers.items()) if w.expires_at > at]

    async def _unregister_worker(self, worker_id: str) -> bool:
        return self.ns.workers.pop(worker_id, None) is not None
