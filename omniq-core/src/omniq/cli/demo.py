"""``omniq demo``: the tour of :mod:`omniq.demo`."""

from __future__ import annotations

from pathlib import Path

import click

from .root import cli
from .ui import err, out


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to keep the demo's SQLite files (default: a new temporary directory).",
)
def demo(directory: Path | None) -> None:
    """Run a short tour on embedded SQLite files: async and sync tasks, a retry, a
    dependency and a schedule, with a live display, then results and events.

    It needs no server and ignores the store options (it makes its own files)."""
    from ..demo import run_demo

    run_demo(directory, out, err)
