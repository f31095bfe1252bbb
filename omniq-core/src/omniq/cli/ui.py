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

__all__ = ["err", "fmt_time", "out", "print_json", "print_table", "setup_logging"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


_installed: list[logging.Handler] = []


def setup_logging(level: int) -> None:
    """Route the ``omniq`` loggers to stderr: through the rich console on a terminal
    (so they print above a live display instead of tearing it), else as plain lines."""
    logger = logging.getLogger("omniq")
    while _installed:
        logger.removeHandler(_installed.pop())
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False, markup=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _installed.append(handler)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(level)


def fmt_time(ts: float | None) -> str:
    """An epoch timestamp in local time with milliseconds; '-' for none."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


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
    lines += ["\t".join(row) for row in zip(*columns)]
    out.file.write("".join(line + "\n" for line in lines))
    out.file.flush()


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes, so it pipes into other tools)."""
    print(json.dumps(msgspec.to_builtins(data, enc_hook=repr), indent=2))
