"""Log formats for the worker's lines and the tasks' own: text for people, JSON for pipelines.

:class:`JsonFormatter` writes one object per line with stable keys (documented in
docs/operations.md): ``ts``, ``level``, ``logger``, ``message`` always; ``task_id`` and
``task_name`` inside a task (with :class:`omniq.TaskLogFilter` on the handler); the
outcome fields of the worker's task lines (see :mod:`omniq.worker.outcomes`); ``exc``
when an exception is attached; and any other ``extra=`` a caller passed. Both are plain
:class:`logging.Formatter` subclasses, usable in an application's own logging set-up.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "formatter"]

#: Attributes every LogRecord has: not extras.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_OWN = frozenset({"task_id", "task_name"})


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [task NAME ID]`` (the bracket only inside a task)."""

    def __init__(self, fmt: str | None = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        task_id = getattr(record, "task_id", None)
        if task_id is not None and getattr(record, "outcome", None) is None:
            first, nl, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{first} [task {getattr(record, 'task_name', '')} {task_id}]{nl}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module doc for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = getattr(record, "task_id", None)
        if task_id is not None:
            data["task_id"] = task_id
            data["task_name"] = getattr(record, "task_name", None)
        data.update(
            (k, v)
            for k, v in record.__dict__.items()
            if k not in _STANDARD and k not in _OWN and not k.startswith("_")
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=repr, ensure_ascii=False)


def formatter(name: str) -> logging.Formatter:
    """The formatter of ``--log-format NAME``: ``text`` or ``json``."""
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {name!r}; valid: text, json")
