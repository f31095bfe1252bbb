"""A Django ``TaskResult`` read from OmniQ: the result id is the OmniQ task id.

Status: OmniQ's waiting states (pending, scheduled, waiting, retrying) are Django's
READY ("enqueued, or ready to be executed again"), running is RUNNING, succeeded is
SUCCESSFUL, and every other end (failed, cancelled, expired, dead-lettered) is FAILED.
OmniQ keeps a task's last error and the last worker that ran it, so ``errors`` holds at
most one entry and ``worker_ids`` repeats the last worker once per attempt (``attempts``
is exact).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from omniq import AsyncOmniQ, ConfigError, OmniQError, TaskNotFoundError, TaskState
from omniq.models import ErrorInfo
from omniq.models import Task as OmniQTask

from .compat import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from .connection import RUNNER

__all__ = ["STATUS", "aware", "import_task", "load_result", "new_result"]

STATUS = {
    TaskState.PENDING: TaskResultStatus.READY,
    TaskState.SCHEDULED: TaskResultStatus.READY,
    TaskState.WAITING: TaskResultStatus.READY,
    TaskState.RETRYING: TaskResultStatus.READY,
    TaskState.RUNNING: TaskResultStatus.RUNNING,
    TaskState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    TaskState.FAILED: TaskResultStatus.FAILED,
    TaskState.CANCELLED: TaskResultStatus.FAILED,
    TaskState.EXPIRED: TaskResultStatus.FAILED,
    TaskState.DEAD: TaskResultStatus.FAILED,
}


def aware(ts: float | None) -> datetime | None:
    """Epoch seconds as Django wants them: aware UTC with ``USE_TZ``, else naive local."""
    if ts is None:
        return None
    value = datetime.fromtimestamp(ts, tz=UTC)
    return value if settings.USE_TZ else timezone.make_naive(value)


def import_task(path: str) -> Task:
    """The Django task a payload names (a module-level ``@task``)."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise TaskResultDoesNotExist(f"the task {path!r} cannot be imported here: {exc}") from exc
    if not isinstance(found, Task):
        raise TaskResultDoesNotExist(f"{path!r} is a {type(found).__name__}, not a Django task")
    return found


def new_result(
    task: Task,
    result_id: str,
    args: Any,
    kwargs: Any,
    status: Any = TaskResultStatus.READY,
    **times: datetime | None,
) -> TaskResult:
    """A ``TaskResult`` with no attempts yet (its constructor checks the arguments are
    JSON data, as the framework requires). Its backend is the task's."""
    return TaskResult(
        task=task,
        id=result_id,
        status=status,
        enqueued_at=times.get("enqueued_at"),
        started_at=times.get("started_at"),
        finished_at=times.get("finished_at"),
        last_attempted_at=times.get("last_attempted_at"),
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=[],
        worker_ids=[],
    )


def _task_error(info: ErrorInfo) -> TaskError:
    module = info.module or "builtins"
    return TaskError(exception_class_path=f"{module}.{info.type}", traceback=info.traceback)


async def load_result(app: AsyncOmniQ, result_id: str) -> TaskResult:
    """The Django view of OmniQ task ``result_id``; ``TaskResultDoesNotExist`` when OmniQ
    has no such task or it is not a Django task."""
    try:
        stored: OmniQTask = await app.get_task(result_id)
    except (TaskNotFoundError, ConfigError) as exc:  # ConfigError: not a valid task id
        raise TaskResultDoesNotExist(result_id) from exc
    if stored.name != RUNNER:
        raise TaskResultDoesNotExist(
            f"{result_id} is OmniQ task {stored.name!r}, not one of Django's ({RUNNER!r})"
        )
    (path, args, kwargs, meta), _, _ = app.serializer.loads_call(
        stored.payload, local_only=app.task_queue.local_only, origin=f"task {result_id}"
    )
    task = import_task(path).using(
        priority=meta["priority"], queue_name=stored.queue, run_after=aware(meta.get("run_after"))
    )
    outcome = await app.get_task_result(result_id) if stored.finished_at else None
    started = outcome.started_at if outcome and outcome.started_at else stored.started_at
    result = new_result(
        task,
        result_id,
        args,
        kwargs,
        STATUS[stored.state],
        enqueued_at=aware(stored.created_at),
        started_at=aware(started),
        last_attempted_at=aware(started),
        finished_at=aware(outcome.finished_at if outcome else stored.finished_at),
    )
    worker = (outcome.worker_id if outcome else None) or stored.lease_owner
    if worker:
        result.worker_ids.extend([worker] * stored.attempts)
    error = (outcome.error if outcome else None) or stored.error
    if error is not None and result.status == TaskResultStatus.FAILED:
        result.errors.append(_task_error(error))
    if result.status == TaskResultStatus.SUCCESSFUL:
        try:
            value = await app.get_result(result_id, timeout=0)
        except OmniQError as exc:  # the result expired before the task was deleted
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from exc
        object.__setattr__(result, "_return_value", value)
    return result
