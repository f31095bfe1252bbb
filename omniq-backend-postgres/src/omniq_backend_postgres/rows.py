"""Rows to models and back: the columns each store reads, and their decoding.

A task row keeps the task as enqueued in ``data`` (msgpack) and everything that changes
afterwards (state, lease, attempts, times, error) in columns; the columns win.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from omniq.models import ErrorInfo, Schedule, Task, TaskState, task_decoder
from omniq.records import schedule_or_none, stand_in

__all__ = [
    "TASK_COLUMNS",
    "decode_error",
    "encode_error",
    "rescue_row",
    "schedule_from_row",
    "task_from_row",
]

STATES = {state.value: state for state in TaskState}

#: Columns of ``tasks t`` that :func:`task_from_row` reads, in order.
TASK_COLUMNS = (
    "t.data, t.state, t.created_at, t.eta, t.attempts, t.lease_owner, t.lease_token, "
    "t.lease_deadline, t.started_at, t.finished_at, t.error"
)
SCHEDULE_COLUMNS = "data, next_run, last_run, paused, id"

_error_decoder = msgspec.json.Decoder(ErrorInfo)
_json_encoder = msgspec.json.Encoder()


def encode_error(error: ErrorInfo | None) -> str | None:
    """ErrorInfo as JSON text for a jsonb column (readable in SQL)."""
    return None if error is None else _json_encoder.encode(error).decode()


def decode_error(text: str | None) -> ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


def task_from_row(row: Sequence[Any]) -> Task:
    task = task_decoder.decode(row[0])
    task.state = STATES[row[1]]
    task.created_at = row[2]
    task.eta = row[3]
    task.attempts = row[4]
    task.lease_owner = row[5]
    task.lease_token = row[6]
    task.lease_deadline = row[7]
    task.started_at = row[8]
    task.finished_at = row[9]
    task.error = decode_error(row[10])
    return task


def rescue_row(task_id: str, row: Sequence[Any], exc: Exception, queue: Any, name: Any) -> Task:
    """The stand-in (:func:`omniq.records.stand_in`) of a row of :data:`TASK_COLUMNS`
    that does not decode."""
    return stand_in(
        task_id,
        exc,
        "the tasks table",
        name=name,
        queue=queue,
        state=row[1],
        attempts=row[4],
        lease_owner=row[5],
        lease_token=row[6],
        lease_deadline=row[7],
    )


def schedule_from_row(row: Sequence[Any]) -> Schedule | None:
    """None for a row whose data does not decode (see omniq.records)."""
    schedule = schedule_or_none(row[4], row[0], "the schedules table")
    if schedule is None:
        return None
    schedule.next_run = row[1]
    schedule.last_run = row[2]
    schedule.paused = row[3]
    return schedule
