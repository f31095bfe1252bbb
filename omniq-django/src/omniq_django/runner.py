"""What the OmniQ worker runs for a Django task: import it by its path, call it (with a
``TaskContext`` when it takes one), return its value as JSON data.

Coroutine tasks run on the worker's event loop; plain ones in a thread, where Django's
ORM may be used, with the thread's stale database connections closed before and after
as Django does around a request. Django's ``task_started`` and ``task_finished`` signals
are sent from the worker process.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections
from django.utils import timezone

from .compat import (
    Task,
    TaskContext,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from .results import import_task, load_result, new_result

if TYPE_CHECKING:
    from omniq import AsyncOmniQ

__all__ = ["execute"]


def _call_in_thread(task: Task, args: list[Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()
    try:
        return task.call(*args, **kwargs)
    finally:
        close_old_connections()


def _set(result: TaskResult, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(result, name, value)


def _sender() -> type:
    from .backend import OmniQBackend

    return OmniQBackend


async def execute(
    app: AsyncOmniQ, path: str, args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]
) -> Any:
    """Run one Django task; its exception, if any, is the OmniQ task's failure."""
    task = import_task(path)
    started = timezone.now()
    if task.takes_context:
        # Read from the store so the context's attempt count is the real one.
        result = await load_result(app, meta["id"])
        _set(result, status=TaskResultStatus.RUNNING)
        args = [TaskContext(task_result=result), *args]
    else:
        result = new_result(
            task,
            meta["id"],
            args,
            kwargs,
            TaskResultStatus.RUNNING,
            started_at=started,
            last_attempted_at=started,
        )
    sender = _sender()
    task_started.send(sender=sender, task_result=result)
    try:
        if inspect.iscoroutinefunction(task.func):
            value = await task.acall(*args, **kwargs)
        else:
            value = await asyncio.to_thread(_call_in_thread, task, args, kwargs)
        value = normalize_json(value)
    except Exception:  # (a cancelled task is released, not finished)
        _set(result, status=TaskResultStatus.FAILED, finished_at=timezone.now())
        task_finished.send(sender=sender, task_result=result)
        raise
    _set(
        result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now(), _return_value=value
    )
    task_finished.send(sender=sender, task_result=result)
    return value
