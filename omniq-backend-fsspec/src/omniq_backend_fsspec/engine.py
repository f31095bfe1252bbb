"""The task queue's state machine, run synchronously in a worker thread.

Each public method reads the records it needs and writes the changes through a
:class:`~.records.RecordStore`: under the base directory's lock (local files, memory), or
record by record with compare-and-set (S3). Either way a claim is atomic: two reservers
can never both take a task.

Crash safety: a record is replaced atomically, and index entries are written so that
after a crash an entry may sit in the wrong directory but a task is never left without
one. Whoever next lists that directory compares the entry with
:func:`~.layout.entry_path` of the record and puts it back where the record says.
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from omniq import lifecycle
from omniq.errors import CapabilityError, TaskNotFoundError
from omniq.interfaces import LeaseRef
from omniq.models import (
    READY_STATES,
    TERMINAL_STATES,
    ErrorInfo,
    Schedule,
    Task,
    TaskState,
    encoder,
)
from omniq.records import schedule_or_none

from .files import Files
from .layout import (
    Record,
    due_entries,
    entry_path,
    entry_paths,
    entry_time,
    expiry_path,
    pending_entries,
    queue_dir,
    split_entry,
    to_ns,
)
from .names import encode
from .records import Conflict, Unreadable, record_store, rev_time

__all__ = ["QueueEngine"]

T = TypeVar("T")


def _replace(task: Task, **changes: Any) -> Task:
    return msgspec.structs.replace(task, **changes)


class QueueEngine:
    """Synchronous task-queue operations on local files, memory or S3."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.records = record_store(files)
        self._known_queues: set[str] = set()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return self.records.run(fn, *args)

    # -- records and entries ------------------------------------------------------------

    def _load(self, task_id: str) -> Record | None:
        return self.records.load(encode("task id", task_id))

    def _checked(self, path: str) -> Record | None:
        """The record an entry points to, when the entry is where the record says;
        stale entries (crash leftovers, deleted tasks) are repaired and None returned."""
        _key, eid, rev = split_entry(path)
        rec = self.records.load(eid)
        if rec is None:
            if self.records.may_drop_orphan(rev_time(rev)):
                self.files.discard(path)
            return None
        if type(rec) is Unreadable:
            return self._placed(rec, path)
        if entry_path(rec) == path:
            return rec
        if self.records.may_repair(rec):
            self.files.touch(entry_path(rec))
            self.files.discard(path)
        return None

    def _placed(self, rec: Record, path: str) -> Record:
        """An unreadable record's stand-in with what its entry says: queue, state,
        priority and enqueue order (so reserve leases it and moves that entry)."""
        key, _eid, rev = split_entry(path)
        parts = path.split("/")
        name = self.files.read(f"queues/{parts[1]}/name") if parts[0] == "queues" else None
        try:
            state = TaskState(parts[2])
            queue = name.decode() if name else "default"
            task = _replace(rec.task, state=state, priority=9 - int(key[0]), queue=queue)
            return Record(int(key[1:], 16), task, rev)
        except (ValueError, IndexError):
            return rec

    def _change(self, rec: Record, **changes: Any) -> Task:
        """Store a changed copy; :class:`~.records.Conflict` if another writer came first."""
        return self._store(rec, _replace(rec.task, **changes))

    def _store(self, rec: Record, task: Task) -> Task:
        """Store ``task`` in place of ``rec``'s (as :meth:`_change`)."""
        return self.records.save(rec, Record(rec.seq, task, rec.rev)).task

    # -- enqueue ------------------------------------------------------------------------

    def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[Task]:
        now = time.time()
        seq = self.records.next_seq(len(tasks))
        out = []
        for offset, task in enumerate(tasks):
            rec = self._load(task.id)
            if rec is None:
                try:
                    out.append(self._insert(task, seq + offset, now))
                    continue
                except Conflict:  # enqueued meanwhile by another process
                    rec = self._load(task.id)
                    assert rec is not None
            out.append(rec.task)
        return out

    def _insert(self, task: Task, seq: int, now: float) -> Task:
        if task.depends_on and not self.records.dependencies:
            raise CapabilityError(
                f"depends_on is not supported by the fsspec task queue on "
                f"{type(self.files).__name__.removesuffix('Files')} (it would change several "
                f"objects at once); use file://, redis://, postgresql:// or sqlite:///"
            )
        parents = {}
        for pid in task.depends_on:
            parent = self._load(pid)
            if parent is None:
                raise TaskNotFoundError(pid, f" (task {task.id} depends on it)")
            parents[pid] = parent.task
        state, error = lifecycle.initial_state(task, {p: t.state for p, t in parents.items()}, now)
        failed = error is not None
        changes: dict[str, Any] = {"created_at": task.created_at or now, "state": state}
        if failed:
            changes.update(finished_at=now, error=error)
        rec = Record(seq, _replace(task, **changes))
        eq = encode("queue", task.queue)
        if eq not in self._known_queues:
            self.files.write(f"{queue_dir(task.queue)}/name", task.queue.encode())
            self._known_queues.add(eq)
        for pid in parents:  # every child, waiting or not: dependents() lists it
            self.files.touch(f"deps/{encode('task id', pid)}/{encode('task id', task.id)}")
        if not failed and task.expires_at is not None:
            self.files.touch(expiry_path(rec))
        return self.records.save(None, rec).task

    # -- delivery -----------------------------------------------------------------------

    def reserve(
        self, queues: Sequence[str], worker_id: str, lease: float, limit: int
    ) -> builtins.list[Task]:
        now = time.time()
        sources = []
        for queue in dict.fromkeys(queues):
            sources.append(pending_entries(self.files, queue))
            due = [
                e
                for state in ("scheduled", "retrying")
                for e in due_entries(self.files, f"{queue_dir(queue)}/{state}", to_ns(now))
            ]
            sources.append(iter(sorted(due)))
        out: list[Task] = []
        for _key, path in heapq.merge(*sources):
            if len(out) >= limit:
                break
            rec = self._checked(path)
            if rec is None or not rec.task.is_ready(now):
                continue
            try:
                out.append(
                    self._change(
                        rec,
                        state=TaskState.RUNNING,
                        attempts=rec.task.attempts + 1,
                        lease_token=uuid.uuid4().hex,
                        lease_owner=worker_id,
                        lease_deadline=now + lease,
                        started_at=now,
                    )
                )
            except Conflict:
                continue  # another reserver took it
        return out

    def _held(self, task_id: str, token: str | None) -> Record | None:
        rec = self._load(task_id)
        if rec is None or rec.task.state is not TaskState.RUNNING or rec.task.lease_token != token:
            return None
        return rec

    def heartbeat(self, leases: Sequence[LeaseRef], lease: float) -> builtins.list[str]:
        return [
            task_id
            for task_id, token in leases
            if self.records.retrying(self._extend, task_id, token, lease)
        ]

    def _extend(self, task_id: str, token: str, lease: float) -> bool:
        rec = self._held(task_id, token)
        if rec is not None:
            self._change(rec, lease_deadline=time.time() + lease)
        return rec is not None

    def complete_many(
        self, items: Sequence[tuple[str, str, TaskState, ErrorInfo | None]]
    ) -> builtins.list[bool]:
        # (states checked by BaseTaskQueue.complete_many/finish_many before any change)
        return [self.records.retrying(self._complete, *item) for item in items]

    def _complete(
        self, task_id: str, token: str, state: TaskState, error: ErrorInfo | None
    ) -> bool:
        rec = self._held(task_id, token)
        if rec is None:
            return False
        task = self._store(rec, lifecycle.finished(rec.task, state, error, time.time()))
        self._settle_dependents(task)
        return True

    def retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        return self.records.retrying(self._retry, task_id, token, eta, error)

    def _retry(self, task_id: str, token: str, eta: float, error: ErrorInfo | None) -> bool:
        rec = self._held(task_id, token)
        if rec is None:
            return False
        self._store(rec, lifecycle.retried(rec.task, eta, error))
        return True

    def release(self, task_id: str, token: str) -> bool:
        return self.records.retrying(self._release, task_id, token)

    def _release(self, task_id: str, token: str) -> bool:
        rec = self._held(task_id, token)
        if rec is None:
            return False
        self._store(rec, lifecycle.released(rec.task))
        return True

    def dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        return self.records.retrying(self._dead_letter, task_id, token, error)

    def _dead_letter(self, task_id: str, token: str | None, error: ErrorInfo | None) -> bool:
        rec = self._load(task_id) if token is None else self._held(task_id, token)
        if rec is None or rec.task.state in TERMINAL_STATES:
            return False
        self._end(rec, TaskState.DEAD, error, time.time())
        return True

    def _end(self, rec: Record, state: TaskState, error: ErrorInfo | None, now: float) -> Task:
        task = self._store(rec, lifecycle.finished(rec.task, state, error, now))
        self._settle_dependents(task)
        return task

    def release_expired_leases(self) -> builtins.list[Task]:
        now = time.time()
        out = []
        for eq in self.files.list("queues"):
            for path in entry_paths(self.files, f"queues/{eq}", [TaskState.RUNNING])[
                TaskState.RUNNING
            ]:
                rec = self._checked(path)
                if rec is None or rec.task.lease_deadline is None or rec.task.lease_deadline >= now:
                    continue
                with contextlib.suppress(Conflict):  # its holder or another sweeper acted first
                    out.append(self._return_lapsed(rec, now))
        return out

    def _return_lapsed(self, rec: Record, now: float) -> Task:
        task = self._store(rec, lifecycle.lapsed(rec.task, now))
        if task.state is TaskState.DEAD:
            self._settle_dependents(task)
        return task

    # -- dependencies -------------------------------------------------------------------

    def _settle_dependents(self, parent: Task) -> None:
        """Settle, recursively, the waiting children (:func:`omniq.lifecycle.settled`):
        ready once their parents succeeded (ended, for one that runs on failure), or
        cancelled when this one did not succeed."""
        if not self.records.dependencies:
            return
        now = time.time()
        stack = [parent]
        while stack:
            current = stack.pop()
            deps_dir = f"deps/{encode('task id', current.id)}"
            for echild in self.files.list(deps_dir):  # kept: a task ends once
                child = self.records.load(echild)
                if child is None or child.task.state is not TaskState.WAITING:
                    continue
                settled = lifecycle.settled(child.task, current, self._states(child.task), now)
                if settled is None:
                    continue
                stored = self._store(child, settled)
                if stored.state is TaskState.CANCELLED:
                    stack.append(stored)

    def dependents(self, task_id: str) -> builtins.list[Task]:
        if not self.records.dependencies:
            return []
        found = (
            self.records.load(e) for e in self.files.list(f"deps/{encode('task id', task_id)}")
        )
        return sorted((rec.task for rec in found if rec is not None), key=lambda t: t.id)

    def _repair_waiting(self, now: float) -> None:
        """Settle every waiting task whose parents' states already decide it: a process
        killed between a parent's change and the settling of its dependents left it
        waiting (a fan-in callback among them), and this sweep is what revisits it."""
        for qdir in self._queue_dirs(None):
            for path in entry_paths(self.files, qdir, [TaskState.WAITING])[TaskState.WAITING]:
                rec = self._checked(path)
                if rec is None or rec.task.state is not TaskState.WAITING:
                    continue
                states = self._states(rec.task)
                parents = {p: states.get(p, TaskState.SUCCEEDED) for p in rec.task.depends_on}
                state, error = lifecycle.initial_state(rec.task, parents, now)
                with contextlib.suppress(Conflict):  # changed meanwhile: next sweep
                    if error is not None:
                        self._end(rec, state, error, now)
                    elif state is not TaskState.WAITING:
                        self._change(rec, state=state)

    def _states(self, task: Task) -> dict[str, TaskState]:
        """The states of ``task``'s parents that still exist. One already deleted by
        cleanup had ended; had it failed, the child would have been settled then."""
        recs = {pid: self._load(pid) for pid in task.depends_on}
        return {pid: rec.task.state for pid, rec in recs.items() if rec is not None}

    # -- administration -----------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        return self.records.retrying(self._cancel, task_id)

    def _cancel(self, task_id: str) -> bool:
        rec = self._load(task_id)
        if rec is None:
            raise TaskNotFoundError(task_id)
        if rec.task.state in TERMINAL_STATES:
            return False
        self._end(rec, TaskState.CANCELLED, rec.task.error, time.time())
        return True

    def get(self, task_id: str) -> Task | None:
        rec = self._load(task_id)
        return rec.task if rec is not None else None

    def _queue_dirs(self, queue: str | None) -> builtins.list[str]:
        if queue is not None:
            return [queue_dir(queue)]
        return [f"queues/{eq}" for eq in self.files.list("queues")]

    def list(
        self, queue: str | None, states: Iterable[TaskState] | None, limit: int
    ) -> builtins.list[Task]:
        wanted = set(states) if states is not None else set(TaskState)
        entries = sorted(
            (key[1:], eid)
            for qdir in self._queue_dirs(queue)
            for paths in entry_paths(self.files, qdir, wanted).values()
            for key, eid, _rev in map(split_entry, paths)
        )
        out: list[Task] = []
        seen: set[str] = set()
        for _seq, eid in entries:
            if len(out) >= limit:
                break
            rec = self.records.load(eid)
            if rec is None or eid in seen or rec.task.state not in wanted:
                continue
            seen.add(eid)
            if queue is None or rec.task.queue == queue:
                out.append(rec.task)
        return out

    def stats(self) -> dict[str, dict[TaskState, int]]:
        out: dict[str, dict[TaskState, int]] = {}
        for qdir in self._queue_dirs(None):
            name = self.files.read(f"{qdir}/name")
            if name is None:
                continue
            counts = {s: len(p) for s, p in entry_paths(self.files, qdir, TaskState).items() if p}
            if counts:
                out[name.decode()] = counts
        return out

    def purge(self, queue: str | None, states: Iterable[TaskState] | None) -> int:
        wanted = list(states) if states is not None else list(TaskState)
        # Every matched record is read before any is deleted: the filter holds as purge()
        # begins, so a dependent a purged parent cancels below still goes when its
        # former state was matched (its entry moved meanwhile).
        found = [
            (path, rec)
            for qdir in self._queue_dirs(queue)
            for paths in entry_paths(self.files, qdir, wanted).values()
            for path in paths
            if (rec := self._checked(path)) is not None
        ]
        for path, rec in found:
            if type(rec) is not Unreadable:
                self._settle_purged(rec)
            self._drop_current(path)
        return len(found)

    def _drop_current(self, path: str) -> None:
        """Drop the task listed at ``path``, at the entry its record names now."""
        rec = self.records.load(split_entry(path)[1])
        if rec is not None and type(rec) is not Unreadable and entry_path(rec) != path:
            self.files.discard(path)
            path = entry_path(rec)
        self.records.drop(path)

    def _settle_purged(self, rec: Record) -> None:
        """Before a parent that had not succeeded is deleted: it is stored cancelled
        (compare-and-set, so a worker's completion that came first wins, and one that
        comes later is refused), then its waiting children settle as a cancelled
        parent's do (:func:`omniq.lifecycle.settled_by_purge`), theirs in turn. After the
        deletion nothing could: the waiting sweep counts a missing parent as succeeded.
        A crash in between leaves the parent stored cancelled, never to run: the
        waiting sweep settles the children it had not reached."""
        if not self.records.dependencies:
            return
        deps_dir = f"deps/{encode('task id', rec.task.id)}"
        if rec.task.state is TaskState.SUCCEEDED or not self.files.list(deps_dir):
            return
        now = time.time()
        current: Record | None = rec
        while current is not None and current.task.state not in TERMINAL_STATES:
            try:
                self._store(
                    current, lifecycle.finished(current.task, TaskState.CANCELLED, None, now)
                )
                break
            except Conflict:  # changed meanwhile (a worker reserved or finished it)
                current = self._load(rec.task.id)
        if current is None or current.task.state is TaskState.SUCCEEDED:
            return
        parent = current.task
        for echild in self.files.list(deps_dir):
            child = self.records.load(echild)
            if child is None or type(child) is Unreadable:
                continue
            settled = lifecycle.settled_by_purge(child.task, parent, self._states(child.task), now)
            if settled is None:
                continue
            with contextlib.suppress(Conflict):  # changed meanwhile: it was not waiting
                stored = self._store(child, settled)
                if stored.state is TaskState.CANCELLED:
                    self._settle_dependents(stored)

    def cleanup(self) -> builtins.list[Task]:
        now = time.time()
        expired = []
        for _key, path in list(due_entries(self.files, "expiry", to_ns(now))):
            rec = self.records.load(split_entry(path)[1])
            if rec is not None and rec.task.state is TaskState.RUNNING:
                continue  # started in time; it may still come back to the queue later
            if rec is None and not self.records.may_drop_orphan(entry_time(path)):
                continue  # an enqueue of an already expired task may be in flight
            if rec is not None and (
                rec.task.state in READY_STATES or rec.task.state is TaskState.WAITING
            ):
                try:
                    expired.append(self._end(rec, TaskState.EXPIRED, rec.task.error, now))
                except Conflict:
                    continue  # changed meanwhile (reserved, cancelled): look again next sweep
            self.files.discard(path)
        if self.records.dependencies:
            self._repair_waiting(now)
        for qdir in self._queue_dirs(None):
            for state in TERMINAL_STATES:
                for _key, path in list(
                    due_entries(self.files, f"{qdir}/{state.value}", to_ns(now))
                ):
                    rec = self._checked(path)
                    if rec is not None:
                        self.records.drop(path)
        return expired

    # -- schedules ----------------------------------------------------------------------

    def _schedule_path(self, schedule_id: str) -> str:
        return f"schedules/{encode('schedule id', schedule_id)}"

    def add_schedule(self, schedule: Schedule) -> Schedule:
        self.files.write(self._schedule_path(schedule.id), encoder.encode(schedule))
        return schedule

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        data = self.records.read(self._schedule_path(schedule_id))
        if data is None:
            return None
        return schedule_or_none(schedule_id, data, "the schedules directory")

    def list_schedules(self) -> builtins.list[Schedule]:
        names = self.files.list("schedules")
        found = ((name, self.files.read(f"schedules/{name}")) for name in names)
        decoded = (
            schedule_or_none(unquote(name), data, "the schedules directory")
            for name, data in found
            if data is not None
        )
        schedules: builtins.list[Schedule] = [s for s in decoded if s is not None]
        return sorted(schedules, key=lambda s: s.id)

    def delete_schedule(self, schedule_id: str) -> bool:
        return self.files.delete(self._schedule_path(schedule_id))

    def set_schedule_paused(self, schedule_id: str, paused: bool, next_run: float | None) -> bool:
        return self.records.retrying(self._set_paused, schedule_id, paused, next_run)

    def _set_paused(self, schedule_id: str, paused: bool, next_run: float | None) -> bool:
        schedule = self.get_schedule(schedule_id)
        if schedule is None:
            return False
        changes: dict[str, Any] = {"paused": paused}
        if next_run is not None:
            changes["next_run"] = next_run
        self.records.replace(
            self._schedule_path(schedule_id),
            encoder.encode(msgspec.structs.replace(schedule, **changes)),
        )
        return True

    def claim_due_schedules(
        self, at: float, limit: int
    ) -> builtins.list[tuple[Schedule, builtins.list[float]]]:
        due = sorted(
            (s for s in self.list_schedules() if not s.paused and s.next_run <= at),
            key=lambda s: (s.next_run, s.id),
        )
        won: builtins.list[tuple[Schedule, builtins.list[float]]] = []
        for listed in due[:limit]:
            schedule = self.get_schedule(listed.id)  # read again: the compare-and-set's base
            if schedule is None or schedule.paused or schedule.next_run != listed.next_run:
                continue
            times, nxt = schedule.due_firings(at)
            if not times:
                continue
            try:
                self.records.replace(
                    self._schedule_path(schedule.id),
                    encoder.encode(
                        msgspec.structs.replace(schedule, next_run=nxt, last_run=times[-1])
                    ),
                )
            except Conflict:
                continue  # another scheduler claimed these firings
            won.append((schedule, times))
        return won
