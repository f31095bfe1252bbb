"""The task queue: tasks in a dict, scanned on each call (simple, not fast).

Each method follows the docstring of the same method in ``omniq.interfaces.BaseTaskQueue``;
the conformance suite checks them. Only the capabilities declared in ``capabilities`` are
promised: this store has no ``DEPENDENCIES`` (it refuses ``depends_on``) and no
``CROSS_PROCESS`` (its data lives in one process).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import msgspec

from omniq.errors import CapabilityError, TaskNotFoundError
from omniq import lifecycle
from omniq.interfaces import BaseTaskQueue, Capability, LeaseRef
from omniq.models import (PURGE_DEFAULT_STATES, TERMINAL_STATES, ErrorInfo, Schedule, Task,
                          TaskState, WorkerInfo, now)

from .namespace import NamespaceStore

__all__ = ["ExampleTaskQueue"]


class ExampleTaskQueue(NamespaceStore, BaseTaskQueue):
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.DELAYED, Capability.PRIORITY, Capability.SCHEDULES, Capability.BLOCKING_RESERVE,
    })
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

    # -- enqueue and delivery -----------------------------------------------------------

    async def enqueue(self, task: Task) -> Task:
        ns = self.ns
        if task.id in ns.tasks:
            return ns.tasks[task.id]  # idempotent by id
        if task.depends_on:
            raise CapabilityError("the example backend does not support depends_on (no DEPENDENCIES)")
        at = now()
        state = lifecycle.ready_state(task, at)
        stored = self._put(task, state=state, created_at=task.created_at or at)
        ns.order[task.id] = next(ns.counter)
        ns.wake_workers()
        return stored

    async def reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int = 1
    ) -> builtins.list[Task]:
        ns, at = self.ns, now()
        ready = sorted(
            (t for t in ns.tasks.values() if t.queue in queues and t.is_ready(at)),
            key=lambda t: (-t.priority, ns.order[t.id]),
        )
        # No await from reading to writing: no other coroutine can reserve these meanwhile.
        return [self._keep(lifecycle.leased(t, worker_id, uuid.uuid4().hex, lease, at))
                for t in ready[:limit]]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ns.new_work.wait(), timeout)

    async def heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
        held = []
        for task_id, token in leases:
            task = self._held(task_id, token)
            if task is not None:
                self._put(task, lease_deadline=now() + lease)
                held.append(task_id)
        return held

    async def complete(
        self, task_id: str, token: str, state: TaskState, error: ErrorInfo | None = None
    ) -> bool:
        state = lifecycle.check_completable(state, task_id)  # before anything changes
        task = self._held(task_id, token)
        if task is None:
            return False
        self._keep(lifecycle.finished(task, state, error, now()))
        return True

    async def retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None = None) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._keep(lifecycle.retried(task, eta, error))
        return True

    async def release(self, task_id: str, token: str) -> bool:
        task = self._held(task_id, token)
        if task is None:
            return False
        self._keep(lifecycle.released(task))
        return True

    async def dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None = None) -> bool:
        task = self.ns.tasks.get(task_id) if token is None else self._held(task_id, token)
        if task is None or task.state in TERMINAL_STATES:
            return False
        self._keep(lifecycle.finished(task, TaskState.DEAD, error, now()))
        return True

    async def release_expired_leases(self) -> builtins.list[Task]:
        at, out = now(), []
        for task in builtins.list(self.ns.tasks.values()):
            if task.state is not TaskState.RUNNING or (task.lease_deadline or 0) >= at:
                continue
            out.append(self._keep(lifecycle.lapsed(task, at)))  # pending, or dead after too many
        return out

    # -- administration -----------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        task = self.ns.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if task.state in TERMINAL_STATES:
            return False
        self._keep(lifecycle.finished(task, TaskState.CANCELLED, None, now()))
        return True

    async def get(self, task_id: str) -> Task | None:
        return self.ns.tasks.get(task_id)

    def _select(self, queue: str | None, states: Iterable[TaskState] | None) -> builtins.list[Task]:
        wanted = set(states) if states is not None else set(TaskState)
        found = [t for t in self.ns.tasks.values()
                 if (queue is None or t.queue == queue) and t.state in wanted]
        return sorted(found, key=lambda t: self.ns.order[t.id])

    async def list(
        self, queue: str | None = None, states: Iterable[TaskState] | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        return self._select(queue, states)[:limit]

    async def stats(self) -> dict[str, dict[TaskState, int]]:
        out: dict[str, dict[TaskState, int]] = {}
        for task in self.ns.tasks.values():
            by_state = out.setdefault(task.queue, {})
            by_state[task.state] = by_state.get(task.state, 0) + 1
        return out

    async def purge(self, queue: str | None = None, states: Iterable[TaskState] | None = None) -> int:
        doomed = self._select(queue, PURGE_DEFAULT_STATES if states is None else states)
        for task in doomed:
            del self.ns.tasks[task.id], self.ns.order[task.id]
        return len(doomed)

    async def cleanup(self) -> builtins.list[Task]:
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

    async def add_schedule(self, schedule: Schedule) -> Schedule:
        self.ns.schedules[schedule.id] = schedule
        return schedule

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.ns.schedules.get(schedule_id)

    async def list_schedules(self) -> builtins.list[Schedule]:
        return sorted(self.ns.schedules.values(), key=lambda s: s.id)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return self.ns.schedules.pop(schedule_id, None) is not None

    async def set_schedule_paused(
        self, schedule_id: str, paused: bool, next_run: float | None = None
    ) -> bool:
        schedule = self.ns.schedules.get(schedule_id)
        if schedule is None:
            return False
        changes: dict[str, Any] = {"paused": paused}
        if next_run is not None:
            changes["next_run"] = next_run
        self.ns.schedules[schedule_id] = msgspec.structs.replace(schedule, **changes)
        return True

    async def claim_due_schedules(
        self, at: float, limit: int = 100
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        due = sorted((s for s in self.ns.schedules.values() if not s.paused and s.next_run <= at),
                     key=lambda s: (s.next_run, s.id))
        won = []
        for schedule in due[:limit]:
            times, nxt = schedule.due_firings(at)
            if times:
                self.ns.schedules[schedule.id] = msgspec.structs.replace(schedule, next_run=nxt,
                                                                         last_run=times[-1])
                won.append((schedule, times))
        return won

    # -- live workers --------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo, ttl: float) -> WorkerInfo:
        stored = msgspec.structs.replace(info, expires_at=now() + ttl)
        self.ns.workers[info.id] = stored
        return stored

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        at = now()
        return [w for _, w in sorted(self.ns.workers.items()) if w.expires_at > at]

    async def unregister_worker(self, worker_id: str) -> bool:
        return self.ns.workers.pop(worker_id, None) is not None
