"""The rules of a task's life, as pure functions over :class:`~omniq.models.Task`.

One place states them: the Python engines (NATS, fsspec, the example plugin, the
conformance suite's reference) call these functions; the engines that run server-side
code (Redis Lua, PostgreSQL and SQLite SQL) spell the same rules in their own language,
and :mod:`omniq.testing` pins the outcomes (states, attempt counts, error type, module
and message) so that no copy drifts. Nothing here reads a clock or a store: callers pass
the time (their backend's clock) and store what is returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .errors import ConfigError, DependencyFailedError
from .models import TERMINAL_STATES, ErrorInfo, Task, TaskState

__all__ = [
    "COMPLETABLE_STATES",
    "PARENT_FAILED_STATES",
    "PARENT_FAILURE_POLICIES",
    "applied",
    "attempts_allowed",
    "check_completable",
    "dependency_failure",
    "dependency_message",
    "finished",
    "initial_state",
    "lapse_error",
    "lapsed",
    "leased",
    "purge_failure",
    "purge_message",
    "ready_state",
    "released",
    "retried",
    "retries_left",
    "retry_eta",
    "runs_on_failure",
    "settled",
    "settled_by_purge",
    "settled_children",
]

#: The states :meth:`~omniq.interfaces.BaseTaskQueue.complete` accepts; a task ends
#: ``dead`` through ``dead_letter`` and waits for another attempt through ``retry``.
COMPLETABLE_STATES = frozenset({TaskState.SUCCEEDED, TaskState.CANCELLED})
#: States of a parent that cancel its waiting dependents.
PARENT_FAILED_STATES = frozenset(
    {TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED, TaskState.EXPIRED}
)
#: What a dependent does when a parent does not succeed (``Task.on_parent_failure``):
#: ``"cancel"`` it (the default), or ``"run"`` it once every parent ended, however.
PARENT_FAILURE_POLICIES = ("cancel", "run")
_NO_LEASE: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_deadline": None}


def attempts_allowed(task: Task) -> int:
    """Deliveries a task gets before a lapsed lease dead-letters it: every retry it
    asked for gets its attempt, and a task without retries still survives
    ``max_deliveries - 1`` crashes of its worker. (Not ``max()``: this runs per task
    enqueued, and a call of the builtin, which parses keywords, costs ~1,900 instructions
    on Python 3.11.)"""
    deliveries, tries = task.max_deliveries, task.max_retries + 1
    return deliveries if deliveries >= tries else tries


def check_completable(state: TaskState | str, task_id: str = "") -> TaskState:
    """``state`` as a :class:`TaskState` when ``complete()`` may end a task in it;
    otherwise a :class:`~omniq.errors.ConfigError` (a ValueError) naming the state and
    the valid ones. Every backend checks a whole batch with it before changing anything."""
    try:
        checked = TaskState(state)
    except ValueError:
        checked = None
    if checked not in COMPLETABLE_STATES:
        of = f" for task {task_id!r}" if task_id else ""
        raise ConfigError(
            f"complete(){of} got state {getattr(state, 'value', state)!r}: expected "
            f"'succeeded' or 'cancelled' (use retry() for another attempt, dead_letter() "
            f"for a task that failed for good)"
        )
    assert checked is not None
    return checked


def dependency_message(parent_id: str, parent_state: TaskState | str) -> str:
    """The one text of a dependency failure; Lua and SQL spell it the same way."""
    return f"parent task '{parent_id}' ended {TaskState(parent_state).value}"


def dependency_failure(parent_id: str, parent_state: TaskState | str) -> ErrorInfo:
    """The error stored on a task cancelled because its direct parent ``parent_id``
    ended in ``parent_state`` (a grandchild names its own parent, ended cancelled)."""
    return ErrorInfo(
        type=DependencyFailedError.__name__,
        module=DependencyFailedError.__module__,
        message=dependency_message(parent_id, parent_state),
    )


def purge_message(parent_id: str) -> str:
    """The text of a dependency failure whose parent was purged before it succeeded
    (Lua and SQL spell it the same way)."""
    return f"parent task '{parent_id}' was purged"


def purge_failure(parent_id: str) -> ErrorInfo:
    """The error stored on a waiting task cancelled because ``purge()`` deleted its
    direct parent ``parent_id`` before that parent succeeded: the outcome of a cancelled
    parent, so a purge never lets a dependent run as if its parent had succeeded, nor
    leaves it waiting for a parent that no longer exists."""
    return ErrorInfo(
        type=DependencyFailedError.__name__,
        module=DependencyFailedError.__module__,
        message=purge_message(parent_id),
    )


def runs_on_failure(task: Task) -> bool:
    """Whether ``task`` runs after parents that did not succeed (``on_failure="run"``)
    instead of being cancelled: it then waits for every parent to end, not to succeed."""
    return task.on_parent_failure == "run"


def initial_state(
    task: Task, parents: Mapping[str, TaskState | str], at: float
) -> tuple[TaskState, ErrorInfo | None]:
    """The state a task is stored in, from its parents' states (``parents`` maps every
    id of ``task.depends_on`` to its state): cancelled when one failed (naming the first
    in ``depends_on`` order), waiting while one has not succeeded, scheduled for an eta
    ahead of ``at``, else pending. A task that runs on failure (:func:`runs_on_failure`)
    is never cancelled: it waits while a parent has not ended, then is ready. Deciding a
    waiting task again from its parents' current states gives what it becomes now."""
    if runs_on_failure(task):
        if any(TaskState(parents[pid]) not in TERMINAL_STATES for pid in task.depends_on):
            return TaskState.WAITING, None
        return ready_state(task, at), None
    for pid in task.depends_on:
        if parents[pid] in PARENT_FAILED_STATES:
            return TaskState.CANCELLED, dependency_failure(pid, parents[pid])
    if any(parents[pid] != TaskState.SUCCEEDED for pid in task.depends_on):
        return TaskState.WAITING, None
    return ready_state(task, at), None


def ready_state(task: Task, at: float) -> TaskState:
    """Scheduled for an eta ahead of ``at``, else pending (also for a dependent whose
    parents all succeeded)."""
    return TaskState.SCHEDULED if task.eta is not None and task.eta > at else TaskState.PENDING


def leased(task: Task, worker_id: str, token: str, lease: float, at: float) -> Task:
    """The task as a reserve hands it out: running, one more attempt, under a lease."""
    return msgspec.structs.replace(
        task,
        state=TaskState.RUNNING,
        attempts=task.attempts + 1,
        lease_owner=worker_id,
        lease_token=token,
        lease_deadline=at + lease,
        started_at=at,
    )


def released(task: Task) -> Task:
    """Handed back untouched: pending, and the attempt not counted."""
    return msgspec.structs.replace(
        task, state=TaskState.PENDING, attempts=max(task.attempts - 1, 0), **_NO_LEASE
    )


def retries_left(task: Task) -> bool:
    """Whether a task whose current attempt failed gets another one."""
    return task.attempts <= task.max_retries


def retry_eta(task: Task, at: float, delay: float | None = None) -> float | None:
    """When a failed attempt runs again (``at`` plus ``delay``, by default the plain
    exponential backoff; the worker passes what :mod:`omniq.retries` chose), or None
    when the task has used its retries and fails for good."""
    if not retries_left(task):
        return None
    return at + (task.backoff() if delay is None else delay)


def retried(task: Task, eta: float, error: ErrorInfo | None) -> Task:
    """Waiting for another attempt at ``eta``; the attempt stays counted."""
    return msgspec.structs.replace(
        task, state=TaskState.RETRYING, eta=eta, error=error or task.error, **_NO_LEASE
    )


def finished(task: Task, state: TaskState, error: ErrorInfo | None, at: float) -> Task:
    """Ended in ``state`` at ``at``, lease cleared; a success drops an earlier attempt's
    error."""
    kept = error if error is not None else (None if state is TaskState.SUCCEEDED else task.error)
    return msgspec.structs.replace(task, state=state, error=kept, finished_at=at, **_NO_LEASE)


def applied(
    record: Task | None, attempt: Task, state: TaskState, error: ErrorInfo | None = None
) -> bool:
    """Whether ``record`` reads as ``attempt``'s own change to ``state``: a change the
    server applied but whose answer was lost (a dropped connection, a server killed
    before it replied), which the repeat then finds made, its token spent, and refuses.

    Nobody else makes that change: a later reservation counts another attempt or starts
    at another time, cancelling ends in another state, and a lapse's dead letter carries
    the lapse's error (``error``, compared for ``retrying`` and ``dead``). Stores keep an
    attempt's count and start on its record when it ends (pinned by the conformance
    suite), so this needs no token kept after the lease."""
    if record is None or record.state is not state or record.attempts != attempt.attempts:
        return False
    started, mine = record.started_at, attempt.started_at
    if started is None or mine is None or abs(started - mine) > 1e-3:
        return False
    return state is TaskState.SUCCEEDED or record.error == error


def lapse_error(task: Task) -> ErrorInfo:
    """Why a task whose leases kept lapsing was dead-lettered."""
    return ErrorInfo(
        type="LeaseExpired",
        message=(
            f"lease lapsed on attempt {task.attempts} of {attempts_allowed(task)}: "
            f"its worker keeps dying or hanging"
        ),
    )


def lapsed(task: Task, at: float) -> Task:
    """A running task whose lease passed: pending again with the attempt counted, or
    dead once its attempts reached :func:`attempts_allowed`."""
    if task.attempts >= attempts_allowed(task):
        return finished(task, TaskState.DEAD, lapse_error(task), at)
    return msgspec.structs.replace(task, state=TaskState.PENDING, **_NO_LEASE)


def settled(
    child: Task, parent: Task, parent_states: Mapping[str, TaskState], at: float
) -> Task | None:
    """A waiting ``child`` as the end of its ``parent`` changes it, or None when it keeps
    waiting (or is not waiting). ``parent_states`` holds the states of the child's other
    parents; one missing was deleted after it ended (cleanup), which counts as succeeded
    (had it failed, the child would have been settled then). A child cancelled here
    names this parent; the caller settles its own children in turn."""
    if child.state is not TaskState.WAITING:
        return None
    if not runs_on_failure(child) and parent.state is not TaskState.SUCCEEDED:
        return finished(child, TaskState.CANCELLED, dependency_failure(parent.id, parent.state), at)
    states = {p: parent_states.get(p, TaskState.SUCCEEDED) for p in child.depends_on}
    states[parent.id] = parent.state
    state, error = initial_state(child, states, at)
    if state is TaskState.WAITING:
        return None
    if error is not None:
        return finished(child, state, error, at)
    return msgspec.structs.replace(child, state=state)


def settled_by_purge(
    child: Task, parent: Task, parent_states: Mapping[str, TaskState], at: float
) -> Task | None:
    """A waiting ``child`` as the purge of its ``parent``, which had not succeeded,
    changes it: as if ``parent`` had ended cancelled (the one rule of a parent that did
    not succeed), a cancelled child naming the purge (:func:`purge_failure`). A backend
    settles the children so before it deletes the parent: a parent found missing later
    counts as succeeded (see :func:`settled`)."""
    gone = msgspec.structs.replace(parent, state=TaskState.CANCELLED)
    changed = settled(child, gone, parent_states, at)
    if (
        changed is not None
        and changed.state is TaskState.CANCELLED
        and changed.error == (dependency_failure(parent.id, TaskState.CANCELLED))
    ):
        changed = msgspec.structs.replace(changed, error=purge_failure(parent.id))
    return changed


def settled_children(
    parent: Task, children: Iterable[Task], parent_states: Mapping[str, TaskState], at: float
) -> list[Task]:
    """:func:`settled` for each of ``children``; unchanged children are left out."""
    out = []
    for child in children:
        changed = settled(child, parent, parent_states, at)
        if changed is not None:
            out.append(changed)
    return out
