"""Output for the command line: the consoles, logging and value formatting.

Data (tables, JSON) goes to stdout; logs, progress and errors go to stderr, so
``omniq events --json | jq`` sees only JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from ..context import TaskLogFilter
from ..logs import TextFormatter, formatter

__all__ = [
    "err",
    "fmt_time",
    "out",
    "print_json",
    "print_table",
    "release_logging",
    "setup_logging",
]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


_installed: list[logging.Handler] = []


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
        root.removeHandler(_installed.pop())


def fmt_time(ts: float | None) -> str:
    """An epoch timestamp in local time with milliseconds; '-' for none."""
    if not ts:
        return "-"
    # Naive local time on purpose: a person reads it next to their own clock.
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")  # noqa: DTZ006


def _plain(cell: Any) -> str:
    """A cell's text without markup, on one line (tabs and newlines would break rows)."""
    text = Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)
    return " ".join(text.replace("\t", " ").split("\n")).strip()


def print_table(table: Table) -> None:
    """A table on a terminal; in a pipe or a file, tab-separated lines (a header line
    when the table has headers): a terminal's width must not squeeze columns to nothing
    for ``cut``, ``awk`` or ``grep``."""
    if out.is_terminal:
        out.print(table)
        return
    columns = [[_plain(c) for c in column._cells] for column in table.columns]
    lines = ["\t".join(_plain(c.header) for c in table.columns)] if table.show_header else []
    lines += ["\t".join(row) for row in zip(*columns, strict=True)]
    out.file.write("".join(line + "\n" for line in lines))
    out.file.flush()


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes, so it pipes into other tools)."""
    print(json.dumps(msgspec.to_builtins(data, enc_hook=repr), indent=2))
