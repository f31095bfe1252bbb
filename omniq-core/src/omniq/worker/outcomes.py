"""The worker's log lines: one per task outcome, and its start and stop.

Each outcome line goes to the ``omniq.task`` logger with the outcome's fields as record
attributes (``outcome``, ``task_id``, ``task_name``, ``queue``, ``attempt``,
``duration``, ``worker_id`` and, where they apply, ``error`` and ``retry_in``), which
:class:`omniq.logs.JsonFormatter` writes as keys; the message repeats them for people.
The level says how bad it is: ``succeeded`` INFO, ``retrying``, ``timed_out`` and
``lease_lost`` WARNING, ``failed`` and ``dead`` ERROR. The record and its extras are
only built when the logger would emit it, so a worker logging at WARNING pays one
``isEnabledFor`` per success.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import TaskTimeoutError
from ..masking import describe_ref
from ..models import ErrorInfo, Task, now

if TYPE_CHECKING:
    from .runtime import Worker

__all__ = ["log_outcome", "log_started", "log_stopped", "worker_config"]

log = logging.getLogger("omniq.task")
worker_log = logging.getLogger("omniq.worker")

_LEVELS = {
    "succeeded": logging.INFO,
    "retrying": logging.WARNING,
    "timed_out": logging.WARNING,
    "lease_lost": logging.WARNING,
    "failed": logging.ERROR,
    "dead": logging.ERROR,
}


def log_outcome(
    worker_id: str,
    task: Task,
    outcome: str,
    started: float | None = None,
    error: ErrorInfo | BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one outcome of ``task`` (see the module doc); ``started`` gives the duration."""
    level = _LEVELS[outcome]
    if not log.isEnabledFor(level):
        return
    duration = round(now() - started, 6) if started else None
    extra: dict[str, Any] = {
        "outcome": outcome,
        "task_id": task.id,
        "task_name": task.name,
        "queue": task.queue,
        "attempt": task.attempts,
        "duration": duration,
        "worker_id": worker_id,
        **fields,
    }
    text = ""
    if error is not None:
        if isinstance(error, BaseException):
            extra["error"] = f"{type(error).__name__}: {error}"
        else:
            extra["error"] = f"{error.type}: {error.message}"
        text = f" error={extra['error']!r}"
    more = "".join(f" {k}={v}" for k, v in fields.items())
    log.log(
        level,
        "task %s %s %s queue=%s attempt=%d duration=%s%s%s",
        task.name,
        task.id,
        outcome,
        task.queue,
        task.attempts,
        "-" if duration is None else f"{duration:.3f}s",
        more,
        text,
        extra=extra,
    )


def failure_outcome(exc: BaseException, retrying: bool) -> str:
    """The outcome an attempt that raised ``exc`` has."""
    if isinstance(exc, TaskTimeoutError):
        return "timed_out"
    return "retrying" if retrying else "failed"


def worker_config(worker: Worker) -> dict[str, Any]:
    """What a worker runs with, for its start line: no secret (store URLs masked, no keys)."""
    from .. import __version__

    cfg = worker.config
    queue_ref = cfg.store_ref("task_queue")
    return {
        "pool": worker.pool.name,
        "concurrency": worker.concurrency,
        "prefetch": worker.prefetch,
        "queues": list(worker.queues),
        "burst": worker.burst,
        "lease": worker.lease,
        "heartbeat_interval": worker.heartbeat_interval,
        "grace_period": worker.grace_period,
        "max_tasks_per_child": worker.max_tasks,
        "max_memory_mb": worker.max_memory_mb,
        "task_queue": describe_ref(queue_ref),
        "result_storage": describe_ref(cfg.result_storage or queue_ref),
        "event_storage": describe_ref(cfg.event_storage or queue_ref),
        "events": cfg.events,
        "middleware": [type(m).__name__ for m in worker.app.middleware.middleware],
        "version": __version__,
    }


def log_started(worker: Worker) -> None:
    if worker_log.isEnabledFor(logging.INFO):
        config = worker_config(worker)
        worker_log.info(
            "worker %s started: %s",
            worker.id,
            " ".join(
                f"{k}={','.join(v) or '-' if isinstance(v, list) else v}" for k, v in config.items()
            ),
            extra={"worker_id": worker.id, "event": "worker_started", "config": config},
        )


def log_stopped(worker: Worker) -> None:
    counts = dict(worker.stats.counts)
    worker_log.info(
        "worker %s stopped (%s): %s",
        worker.id,
        worker.stop_reason,
        " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no tasks",
        extra={
            "worker_id": worker.id,
            "event": "worker_stopped",
            "reason": worker.stop_reason,
            "counts": counts,
        },
    )
