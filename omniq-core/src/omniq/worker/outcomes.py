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
import os
import sys
import threading
import time
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


if sys.version_info >= (3, 13):

    def _record_time() -> tuple[float, int]:
        """``created`` and ``msecs`` (an int: "%03d" writes the same) as this Python's
        ``LogRecord`` computes them (from ``time.time_ns()`` since 3.13): a line written
        without a record must carry the time a record would."""
        ns = time.time_ns()
        created = ns / 1e9
        msecs = (ns % 1_000_000_000) // 1_000_000
        if msecs == 999 and int(created) != ns // 1_000_000_000:
            msecs = 0  # (created rounded up to the next second)
        return created, msecs

else:

    def _record_time() -> tuple[float, int]:
        """``created`` and ``msecs`` as ``LogRecord`` computes them before 3.13."""
        created = time.time()
        return created, int((created - int(created)) * 1000)


def log_outcome(
    worker_id: str,
    task: Task,
    outcome: str,
    started: float | None = None,
    error: ErrorInfo | BaseException | None = None,
    *,
    finished: float | None = None,
    **fields: Any,
) -> None:
    """Log one outcome of ``task`` (see the module doc); ``started`` gives the duration,
    up to ``finished`` (default: now; given for an outcome logged once the store
    answered, after the body ended).

    The record is made as ``makeRecord`` makes it (see :func:`_new_record`) and handed
    to ``log.handle``, which is what ``log.info(..., extra=...)`` does, less its per-call
    work this fixed call does not need: finding the caller's frame (the record names this
    function) and checking each extra key against the record's own attributes (these
    keys never clash). Filters, handlers, propagation and a custom record factory all
    apply as before. When the command line's handler is the only one the record would
    reach (see :func:`_sole_handler`), it writes the line without a record: the same
    text, for about two thirds of the instructions.
    """
    level = _LEVELS[outcome]
    if not log.isEnabledFor(level):
        return
    duration = round((finished or now()) - started, 6) if started else None
    text = ""
    if error is not None:
        if isinstance(error, BaseException):
            message = f"{type(error).__name__}: {error}"
        else:
            message = f"{error.type}: {error.message}"
        fields["error"] = message
        text = f" error={message!r}"
    more = "".join(f" {k}={v}" for k, v in fields.items() if k != "error") if fields else ""
    args = (
        task.name,
        task.id,
        outcome,
        task.queue,
        task.attempts,
        "-" if duration is None else f"{duration:.3f}s",
        more,
        text,
    )
    plain = _PLAIN_LOGGER and logging.getLogRecordFactory() is _RECORD
    if plain:
        handler = _sole_handler(level)
        if handler is not None:
            created, msecs = _record_time()
            name = logging.getLevelName(level)
            if handler(level, name, log.name, _MESSAGE, args, created, msecs):
                return
    record = _new_record(level, args, plain)
    attrs = record.__dict__
    attrs["outcome"] = outcome
    attrs["task_id"] = task.id
    attrs["task_name"] = task.name
    attrs["queue"] = task.queue
    attrs["attempt"] = task.attempts
    attrs["duration"] = duration
    attrs["worker_id"] = worker_id
    if fields:
        attrs.update(fields)
    log.handle(record)


def _sole_handler(level: int) -> Any:
    """The ``emit_line`` of the root's handler when it takes lines (the command line's
    with the text format, see :meth:`omniq.cli.ui._StderrHandler.emit_line`) and it is
    the only reader of a record of ``level``: no filter on ``omniq.task``, no other
    handler on the way (one whose level is above ``level`` does not count), as
    :meth:`logging.Logger.handle` and ``callHandlers`` go. The root is read first, so
    with any other handler (JSON, an application's) this costs little."""
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1:
        return None
    (handler,) = handlers
    if not getattr(handler, "takes_lines", False) or level < handler.level:
        return None
    if log.disabled or log.filters:
        return None
    logger: logging.Logger | None = log
    while logger is not root:
        if logger is None or not logger.propagate:
            return None
        for other in logger.handlers:
            if level >= other.level:
                return None
        logger = logger.parent
    return getattr(handler, "emit_line", None)


_LINE = log_outcome.__code__.co_firstlineno
_MESSAGE = "task %s %s %s queue=%s attempt=%d duration=%s%s%s"
#: (level, thread id) -> the attributes of a record made by ``makeRecord`` in that thread
#: (of this process: a forked child starts without, see below).
_templates: dict[tuple[int, int], dict[str, Any]] = {}
os.register_at_fork(after_in_child=_templates.clear)


def _new_record(level: int, args: tuple[Any, ...], plain: bool) -> logging.LogRecord:
    """The record ``log.makeRecord`` would make for one outcome line, made for less.

    ``LogRecord.__init__`` works out ~20 attributes per line (its level's name, the
    file's base name, the thread's and the process's names, ...); for this one call only
    the time and the arguments change, so the first record made in a thread and process
    (for each level) is kept as a template and the next ones copy it, with their own
    ``created``, ``msecs``, ``relativeCreated`` and ``threadName`` (and ``taskName``
    where Python has it). With a custom record factory or logger subclass installed,
    ``makeRecord`` makes every record, as before (``plain`` is False then).
    """
    if not plain:
        return log.makeRecord(log.name, level, __file__, _LINE, _MESSAGE, args, None, _FUNC)
    key = (level, threading.get_ident())
    template = _templates.get(key)
    if template is None:
        if len(_templates) > 64:  # threads come and go: keep the live few
            _templates.clear()
        first = log.makeRecord(log.name, level, __file__, _LINE, _MESSAGE, args, None, _FUNC)
        _templates[key] = dict(first.__dict__)
        return first
    created, msecs = _record_time()
    record = _RECORD_NEW(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(template)
    attrs["args"] = args
    attrs["created"] = created
    attrs["msecs"] = msecs + 0.0
    attrs["relativeCreated"] = template["relativeCreated"] + (created - template["created"]) * 1000
    if template["threadName"] is not None:
        attrs["threadName"] = threading.current_thread().name
    if "taskName" in template:  # Python 3.12+: the asyncio task's name, as LogRecord does
        attrs["taskName"] = _task_name()
    return record


_RECORD = logging.LogRecord
_RECORD_NEW = _RECORD.__new__
#: A subclass of Logger may make its own records (``makeRecord``): then ``makeRecord``
#: makes them all. Looked up once: a logger keeps the class it was made with
#: (``logging.setLoggerClass`` applies to loggers made after it).
_PLAIN_LOGGER = type(log) is logging.Logger
_FUNC = "log_outcome"


def _task_name() -> str | None:
    if not getattr(logging, "logAsyncioTasks", True):
        return None
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except Exception:
        return None
    return task.get_name() if task is not None else None


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
