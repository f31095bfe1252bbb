"""Log formats for the worker's lines and the tasks' own: text for people, JSON for pipelines.

:class:`JsonFormatter` writes one object per line with stable keys (documented in
docs/operations.md): ``ts``, ``level``, ``logger``, ``message`` always; ``task_id`` and
``task_name`` inside a task (with :class:`omniq.TaskLogFilter` on the handler); the
outcome fields of the worker's task lines (see :mod:`omniq.worker.outcomes`); ``exc``
when an exception is attached; and any other ``extra=`` a caller passed. Both are plain
:class:`logging.Formatter` subclasses, usable in an application's own logging set-up.

A worker logging at INFO formats thousands of lines a second, so both keep the
formatted timestamp of the current second and add only the milliseconds (formatting a
time took ~3 us a line), and the JSON encoder is built once, not per line.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "formatter"]

#: Attributes every LogRecord has: not extras.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_OWN = frozenset({"task_id", "task_name"})
_NOT_EXTRA = _STANDARD | _OWN


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [task NAME ID]`` (the bracket only inside a task)."""

    def __init__(self, fmt: str | None = _TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")  # (epoch second, its formatted time)
        # The default format, as an f-string (the same text): no ``%`` over the record.
        self._plain = (
            fmt == _TEXT_FORMAT and type(self).formatMessage is logging.Formatter.formatMessage
        )

        #: Whether ``plain(stamp(...), ...)`` is this formatter's text for a record
        #: without an exception, a stack or a task bracket (the default format, nothing
        #: overridden): a line can then be written without a record (see ``emit_line``
        #: of the command line's handler).
        self.writes_plain = self._plain and type(self) is TextFormatter

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As :class:`logging.Formatter` does, with the second's text formatted once."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float) -> str:
        """The ``asctime`` of a record made at ``created`` (with its ``msecs``)."""
        second = int(created)
        cached, text = self._second  # one tuple: a thread reads a consistent pair
        if second != cached:
            text = time.strftime(self.default_time_format, self.converter(created))
            self._second = (second, text)
        msec_format = self.default_msec_format
        return msec_format % (text, msecs) if msec_format else text

    @staticmethod
    def plain(asctime: str, levelname: str, name: str, message: str) -> str:
        """The default format's text, as an f-string."""
        return f"{asctime} {levelname} {name}: {message}"

    def _format_plain(self, record: logging.LogRecord) -> str:
        """What :meth:`logging.Formatter.format` makes of a record without an exception
        or a stack in the default format, with the same attributes set on the record."""
        record.message = message = record.getMessage()
        record.asctime = asctime = self.formatTime(record)
        return self.plain(asctime, record.levelname, record.name, message)

    def format(self, record: logging.LogRecord) -> str:
        if self._plain and not (record.exc_info or record.exc_text or record.stack_info):
            text = self._format_plain(record)
        else:
            text = super().format(record)
        task_id = getattr(record, "task_id", None)
        if task_id is not None and getattr(record, "outcome", None) is None:
            first, nl, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{first} [task {getattr(record, 'task_name', '')} {task_id}]{nl}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module doc for the keys)."""

    _encode = json.JSONEncoder(default=repr, ensure_ascii=False).encode
    _second: tuple[int, str] = (-1, "")  # (epoch second, its ISO text up to the second)

    def _ts(self, record: logging.LogRecord) -> str:
        """``record.created`` in UTC, ISO 8601 with milliseconds."""
        second = int(record.created)
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self._ts(record),
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
            if k not in _NOT_EXTRA and not k.startswith("_")
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return self._encode(data)


def formatter(name: str) -> logging.Formatter:
    """The formatter of ``--log-format NAME``: ``text`` or ``json``."""
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {name!r}; valid: text, json")
