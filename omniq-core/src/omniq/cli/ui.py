"""Output for the command line: the consoles, logging and value formatting.

Data (tables, JSON) goes to stdout; logs, progress and errors go to stderr, so
``omniq events --json | jq`` sees only JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import msgspec
from rich.cells import cell_len
from rich.console import Console
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..context import TaskLogFilter
from ..logs import TextFormatter, formatter

__all__ = [
    "err",
    "flush_logging",
    "fmt_time",
    "hold_early_records",
    "log_early_records",
    "out",
    "print_json",
    "print_table",
    "release_logging",
    "setup_logging",
]


class _Console(Console):
    """A console that breaks lines only on a terminal: in a pipe or a file a message stays
    one line whatever ``COLUMNS`` says, so ``grep`` and scripts find a task id whole on
    the line that names it (tables have their own plain form, :func:`print_table`)."""

    @property
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        pass  # set by Console.__init__; the answer above depends on where output goes


out = _Console(highlight=False)
err = _Console(stderr=True, highlight=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it),
    in batches when lines come fast.

    A worker logging at INFO writes a line per task: one ``write`` system call each was
    a good part of the line's cost. A line that comes within ``HOLD`` seconds of the last
    write is held, and the held lines go out together, in one write, when the first of
    these comes: ``HOLD`` seconds have passed (a timer thread, so the last lines of a
    burst never wait for the next one), ``MAX_HELD`` lines are held, a WARNING or worse
    arrives (with the lines before it, in order), ``sys.stderr`` is replaced, or
    :meth:`flush` is called (by :func:`flush_logging` when a command ends or the worker
    re-executes itself, and by :func:`logging.shutdown` at interpreter exit, which a
    worker stopped by SIGTERM or Ctrl-C reaches). A line after a quiet spell is written
    at once. A process killed outright (SIGKILL, a crash of the interpreter) loses the
    held lines: at most ``HOLD`` seconds' worth, never a warning or an error.
    """

    HOLD = 0.1
    MAX_HELD = 1000

    def __init__(self) -> None:
        super().__init__()
        self._held: list[str] = []
        self._held_for: Any = None  # the stream the held lines belong to
        self._last_write = float("-inf")
        self._timer: threading.Timer | None = None
        _held_handlers.add(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._hold(self.format(record) + self.terminator, record.levelno)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    #: Whether :meth:`emit_line` can write lines (its formatter writes plain text): read
    #: by the caller before it prepares one; ``emit_line`` checks again.
    takes_lines = False

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        self.takes_lines = type(fmt) is TextFormatter and fmt.writes_plain

    def emit_line(
        self,
        levelno: int,
        levelname: str,
        name: str,
        msg: str,
        args: tuple[Any, ...],
        created: float,
        msecs: float,
    ) -> bool:
        """Write the line :meth:`handle` would write for a record of these attributes
        (and no exception, stack or task bracket), without making the record: the
        worker's outcome lines when no other handler or filter would see them (see
        :mod:`omniq.worker.outcomes`). False, and nothing written, when this handler
        would write something else (a formatter other than the default text one, a
        filter other than :class:`TaskLogFilter`, which does not change such a line)."""
        formatter = self.formatter
        if type(formatter) is not TextFormatter or not formatter.writes_plain:
            return False
        for f in self.filters:
            if type(f) is not TaskLogFilter:
                return False
        with self.lock:  # type: ignore[union-attr]
            try:
                message = msg % args
                line = formatter.plain(formatter.stamp(created, msecs), levelname, name, message)
                self._hold(line + self.terminator, levelno)
            except RecursionError:
                raise
            except Exception:
                fields = {"name": name, "levelno": levelno, "levelname": levelname}
                self.handleError(logging.makeLogRecord({**fields, "msg": msg, "args": args}))
        return True

    def _hold(self, line: str, levelno: int) -> None:
        """Hold ``line``, or write it with those held (the caller holds the lock)."""
        stream = sys.stderr
        if self._held and stream is not self._held_for:
            self._write_held()
        self._held.append(line)
        self._held_for = stream
        if (
            levelno >= logging.WARNING
            or len(self._held) >= self.MAX_HELD
            or time.monotonic() - self._last_write >= self.HOLD
        ):
            self._write_held()
        elif self._timer is None:
            self._arm()

    def _write_held(self) -> None:
        """Write the held lines in one call (the caller holds the handler's lock)."""
        lines, stream = self._held, self._held_for
        self._held = []
        self._last_write = time.monotonic()
        if stream is not None:
            stream.write("".join(lines))
            stream.flush()

    def _arm(self) -> None:
        """Have a timer thread write the held lines in ``HOLD`` seconds (at most one
        timer at a time, so at most ``1 / HOLD`` threads a second under load)."""
        if self._timer is None:
            self._timer = threading.Timer(self.HOLD, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._timer = None
            try:
                if self._held:
                    self._write_held()
            except Exception:  # a stream closed under us: nothing left to write to
                self._held = []

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._held:
                self._write_held()
            else:
                super().flush()

    def _forget_held(self) -> None:
        """In a forked child: the held lines are the parent's to write."""
        self._held = []
        self._timer = None


_held_handlers: weakref.WeakSet[_StderrHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in _held_handlers:
        handler._forget_held()


os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_logging() -> None:
    """Write out the lines OmniQ's handler holds (see :class:`_StderrHandler`)."""
    for handler in _installed:
        handler.flush()


_installed: list[logging.Handler] = []
_early: list[logging.LogRecord] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _early.append(record)


@contextmanager
def hold_early_records() -> Iterator[None]:
    """Keep what OmniQ logs meanwhile (the registry's warnings while plugins load, before
    the command set up logging), for :func:`log_early_records`: said then as a bare line,
    it was the one line not JSON in a ``--log-format json`` stream."""
    logger = logging.getLogger("omniq")
    keep, propagate = _Keep(), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate


def log_early_records() -> None:
    """Log the records :func:`hold_early_records` kept, now that logging is set up."""
    while _early:
        record = _early.pop(0)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def setup_logging(level: int, fmt: str = "text", *, force_level: bool = True) -> None:
    """Send log records to stderr, unless the application configured logging itself.

    The ``omniq`` loggers propagate: OmniQ's handler goes on the root logger, and only
    when the root has no handler of the application's (else those handle OmniQ's records
    and the tasks' alike, and only the ``omniq`` level changes, when ``force_level``).
    Called again (the worker does so once the application is imported), it replaces its
    own handler. Text goes through the rich console on a terminal (so it prints above a
    live display instead of tearing it); JSON is always one plain object per line.
    """
    root = logging.getLogger()
    release_logging()
    if root.handlers:  # the application's own set-up
        if force_level:
            logging.getLogger("omniq").setLevel(level)
        return
    handler: logging.Handler
    if fmt == "text" and err.is_terminal:
        handler = RichHandler(console=err, show_path=False, markup=False)
        handler.setFormatter(TextFormatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(formatter(fmt))
    handler.addFilter(TaskLogFilter())
    _installed.append(handler)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("omniq").setLevel(level)


def release_logging() -> None:
    """Take OmniQ's handler off the root logger, so that an application imported next
    sets up logging as in a bare process (``logging.basicConfig`` does nothing once the
    root has a handler)."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.flush()


def confirm(question: str, unchanged: str) -> None:
    """Ask ``question`` on stderr; end the command (exit 1) saying ``unchanged`` unless
    the answer is yes. No answer at all (stdin closed: cron, CI) says to add ``--yes``,
    where click would print only "Aborted!"."""
    try:
        answer = click.confirm(question, err=True)
    except click.Abort:
        raise click.ClickException(
            f"no answer to the question (stdin closed or interrupted); {unchanged}. Add "
            f"--yes to skip the question"
        ) from None
    if not answer:
        raise click.ClickException(f"not confirmed; {unchanged}")


def fmt_time(ts: float | None) -> str:
    """An epoch timestamp in local time with milliseconds; '-' for none."""
    if not ts:
        return "-"
    # Naive local time on purpose: a person reads it next to their own clock.
    try:
        return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")  # noqa: DTZ006
    except (ValueError, OverflowError, OSError):  # ages before or after any date
        return "(no date)"


def _plain(cell: Any) -> str:
    """A cell's text without markup, on one line (tabs and newlines would break rows)."""
    text = Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)
    return " ".join(text.replace("\t", " ").split("\n")).strip()


def fit_widths(table: Table, width: int) -> bool:
    """Give ``table``'s columns widths that fit ``width`` with no word cut, and say
    whether that was possible.

    Rich fits a wide table by cutting the widest columns, then every column evenly, into
    words (``rep…``, ``vm:1…``) even where wrapping other cells between words would have
    made room. Here a column narrows one character at a time, always the one with the
    most room left above its longest word (a ``no_wrap`` column: its longest cell), until
    the table fits; a table whose longest words alone are too wide does not fit."""
    wide = out.options.update_width(100_000)  # rich clamps a measurement to the width
    ranges = []
    for column in table.columns:
        cells = [column.header, *column._cells] if table.show_header else column._cells
        sizes = [Measurement.get(out, wide, cell) for cell in cells] or [Measurement(1, 1)]
        high = max(m.maximum for m in sizes)
        # A no_wrap column cannot wrap between words: narrowed, rich cuts its cells.
        ranges.append((high if column.no_wrap else max(m.minimum for m in sizes), high))
    padding = sum(table._get_padding_width(i) for i in range(len(table.columns)))
    room = width - table._extra_width - padding
    widths = [high for _, high in ranges]
    excess = sum(widths) - room
    if excess <= 0:
        return True
    if sum(low for low, _ in ranges) > room:
        return False
    for _ in range(excess):
        i = max(range(len(widths)), key=lambda i: widths[i] - ranges[i][0])
        widths[i] -= 1
    for column, w in zip(table.columns, widths, strict=True):
        column.width = w
    return True


def print_table(table: Table) -> None:
    """A table on a terminal; in a pipe or a file, tab-separated lines (a header line
    when the table has headers): a terminal's width must not squeeze columns to nothing
    for ``cut``, ``awk`` or ``grep``.

    On a terminal too narrow for the table even with its cells wrapped between words,
    rich would cut words (queue names as ``rep…``, worker ids as ``vm:1…``): the table is
    printed as aligned plain columns instead, every value whole, and the terminal wraps
    a line too long for it."""
    rows = [[_plain(c.header) for c in table.columns]] if table.show_header else []
    rows += [
        list(row)
        for row in zip(*([_plain(c) for c in col._cells] for col in table.columns), strict=True)
    ]
    if out.is_terminal:
        if fit_widths(table, out.width):
            out.print(table)
            return
        widths = [max(cell_len(cell) for cell in column) for column in zip(*rows, strict=True)]
        lines = [
            "  ".join(
                cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
            for row in rows
        ]
    else:
        lines = ["\t".join(row) for row in rows]
    out.file.write("".join(line + "\n" for line in lines))
    out.file.flush()


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes, so it pipes into other tools)."""
    print(json.dumps(msgspec.to_builtins(data, enc_hook=repr), indent=2))
