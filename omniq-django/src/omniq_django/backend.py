"""``omniq_django.OmniQBackend``: Django's task framework enqueueing into OmniQ.

    TASKS = {
        "default": {
            "BACKEND": "omniq_django.OmniQBackend",
            "QUEUES": ["default", "emails"],      # optional; [] allows any queue name
            "ENQUEUE_ON_COMMIT": True,            # optional; False by default
            "OPTIONS": {"task_queue": "postgresql://db/app"},   # AsyncOmniQ arguments
        }
    }

A Django task becomes an OmniQ task whose id is the Django result id. Its queue is the
task's ``queue_name``, its priority the Django priority in ten bands (see
:mod:`omniq_django.priority`), its eta the task's ``run_after``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from omniq import ConfigError, OmniQError
from omniq.models import new_id, validate_name

from .compat import BaseTaskBackend, InvalidTask, Task, TaskResult, task_enqueued
from .connection import RUNNER, Client, client_for
from .priority import to_omniq_priority
from .results import load_result, new_result

__all__ = ["OmniQBackend"]


async def _submit(
    app: Any,
    path: str,
    args: list[Any],
    kwargs: dict[str, Any],
    meta: dict[str, Any],
    options: dict[str, Any],
) -> None:
    await app.enqueue(RUNNER, path, args, kwargs, meta, **options)


def _on_commit_alias(params: dict[str, Any], alias: str) -> str | None:
    """The database whose transaction an enqueue waits for, if any."""
    value = params.get("ENQUEUE_ON_COMMIT", False)
    if value is False:
        return None
    if value is True:
        return str(DEFAULT_DB_ALIAS)
    if isinstance(value, str) and value:
        return value
    raise ImproperlyConfigured(
        f"TASKS[{alias!r}]['ENQUEUE_ON_COMMIT'] is {value!r}; valid: True, False or a "
        f"database alias such as 'default'"
    )


class OmniQBackend(BaseTaskBackend):
    """Enqueues Django tasks into OmniQ; an OmniQ worker runs them
    (``python manage.py omniq_worker`` or ``omniq worker --django SETTINGS``)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        for queue in sorted(self.queues):
            try:
                validate_name("queue name", queue)
            except ConfigError as exc:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['QUEUES']: {exc}") from None
        self.on_commit_using = _on_commit_alias(params, alias)

    def client(self) -> Client:
        """The OmniQ app of this backend (built on first use, shared by the process)."""
        try:
            return client_for(self.options)
        except OmniQError as exc:
            raise ImproperlyConfigured(f"TASKS[{self.alias!r}]['OPTIONS']: {exc}") from exc

    def validate_task(self, task: Task) -> None:
        """The framework's rules, plus OmniQ's for queue names (letters, digits, ``_.:-``)."""
        super().validate_task(task)
        try:
            validate_name("queue name", task.queue_name)
        except ConfigError as exc:
            raise InvalidTask(str(exc)) from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        result = new_result(task, new_id(), args, kwargs)
        using = self.on_commit_using
        if using is not None and transaction.get_connection(using).in_atomic_block:
            # Stored when the transaction commits (never, if it rolls back), so a worker
            # never runs a task before the rows it needs are visible.
            transaction.on_commit(partial(self._store, result), using=using)
        else:
            self._store(result)
        return result

    def _store(self, result: TaskResult) -> None:
        task = result.task
        run_after = task.run_after.timestamp() if task.run_after is not None else None
        meta = {"id": result.id, "priority": task.priority, "run_after": run_after}
        options = {
            "queue": task.queue_name,
            "priority": to_omniq_priority(task.priority),
            "task_id": result.id,
        }
        if run_after is not None:
            options["eta"] = run_after
        self.client().call(_submit, task.module_path, result.args, result.kwargs, meta, options)
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)

    def get_result(self, result_id: str) -> TaskResult:
        return self.client().call(load_result, result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        try:
            self.client()
        except ImproperlyConfigured as exc:
            return [checks.Error(str(exc), obj=self, id="omniq_django.E001")]
        return []
