"""Small builders for the values the suite stores, with safe defaults.

Every builder takes keyword overrides, so a test states only what it is about:
``make_task(priority=5)``. Ids come from :func:`omniq.models.new_id`, so tasks built in
sequence are unique and time-ordered.
"""

from __future__ import annotations

from typing import Any

from ..models import ErrorInfo, EventType, Schedule, Task, TaskEvent, TaskResult, TaskState, new_id

__all__ = ["make_error", "make_event", "make_result", "make_schedule", "make_task"]

#: A binary payload using every byte value, to catch backends that store text.
BINARY_PAYLOAD = bytes(range(256)) * 4


def make_task(**overrides: Any) -> Task:
    """A task for queue ``default`` with a small binary payload; ``overrides`` win."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "name": "omniq_conformance.tasks:noop",
        "payload": b"\x93\x00\xc0\xff",
    }
    fields.update(overrides)
    return Task(**fields)


def make_error(message: str = "boom") -> ErrorInfo:
    """An attempt's error, with every field filled so round trips are checked (its
    ``args`` with each kind of value a worker records: a store keeps them as they are)."""
    return ErrorInfo(
        type="RuntimeError",
        message=message,
        traceback="Traceback: ...",
        module="builtins",
        args=(message, -(2**63), 2**64 - 1, 0.1, None, True, ["ü", {"k": [1.5]}]),
    )


def make_result(**overrides: Any) -> TaskResult:
    """A succeeded result with a binary value and every optional field set."""
    fields: dict[str, Any] = {
        "task_id": new_id(),
        "state": TaskState.SUCCEEDED,
        "value": b"\x00\x01value\xff",
        "attempts": 1,
        "started_at": 1_700_000_000.25,
        "finished_at": 1_700_000_001.5,
        "worker_id": "worker-1",
    }
    fields.update(overrides)
    return TaskResult(**fields)


def make_event(**overrides: Any) -> TaskEvent:
    """An ``enqueued`` event for a fresh task id in queue ``default``."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "task_id": new_id(),
        "queue": "default",
        "type": EventType.ENQUEUED,
        "timestamp": 1_700_000_000.0,
    }
    fields.update(overrides)
    return TaskEvent(**fields)


def make_schedule(**overrides: Any) -> Schedule:
    """An interval schedule (every 60 s) whose template is :func:`make_task`."""
    fields: dict[str, Any] = {
        "id": f"sched-{new_id()}",
        "template": make_task(),
        "interval": 60.0,
        "next_run": 1_700_000_000.0,
        "created_at": 1_700_000_000.0,
    }
    fields.update(overrides)
    return Schedule(**fields)
